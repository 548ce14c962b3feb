//! The live console's throughput sparkline for the running cycle (tokens/s between progress
//! snapshots, the latest on the right) and the per-level history strip (each finished level's
//! aggregate tokens/s as a bar), as oha and bottom show them. Sampling is one subtraction per
//! progress snapshot (4 a second) and drawing one short line per frame: well inside the 10 Hz
//! redraw budget.

use super::state::LevelRow;
use std::collections::VecDeque;

/// Samples kept: 30 s at one snapshot every 250 ms (a wider terminal shows no more).
pub const SAMPLES_MAX: usize = 120;
/// Eight heights of a bar, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The running cycle's tokens/s over time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spark {
    /// Tokens/s between consecutive snapshots, oldest first.
    pub samples: VecDeque<f64>,
    /// The previous snapshot: (elapsed ns, tokens).
    last: Option<(u64, u64)>,
}

impl Spark {
    /// A new cycle: the line starts empty.
    pub fn reset(&mut self) {
        self.samples.clear();
        self.last = None;
    }

    /// A progress snapshot at `elapsed_ns` with `tokens` so far in the cycle.
    pub fn sample(&mut self, elapsed_ns: u64, tokens: u64) {
        if let Some((t0, n0)) = self.last {
            if elapsed_ns <= t0 {
                return; // a repeated or older snapshot
            }
            let rate = tokens.saturating_sub(n0) as f64 / ((elapsed_ns - t0) as f64 / 1e9);
            self.samples.push_back(rate);
            if self.samples.len() > SAMPLES_MAX {
                self.samples.pop_front();
            }
        }
        self.last = Some((elapsed_ns, tokens));
    }
}

/// A bar for `v` on a scale whose top is `max` (empty scale: the lowest bar).
fn bar(v: f64, max: f64) -> char {
    if max <= 0.0 || !max.is_finite() || !v.is_finite() {
        return BARS[0];
    }
    let i = ((v / max).clamp(0.0, 1.0) * (BARS.len() - 1) as f64).round() as usize;
    BARS[i.min(BARS.len() - 1)]
}

/// `tok/s ▁▃▅▇ 1234 tok/s now` in at most `width` columns: the latest samples, scaled to their
/// peak, and the latest figure; empty before two snapshots came.
pub fn sparkline(s: &Spark, width: usize) -> String {
    let Some(latest) = s.samples.back() else {
        return String::new();
    };
    let tail = format!(" {latest:.0} tok/s now");
    let room = width.saturating_sub(tail.chars().count() + "tok/s ".len());
    let skip = s.samples.len().saturating_sub(room);
    let shown: Vec<f64> = s.samples.iter().skip(skip).copied().collect();
    let peak = shown.iter().copied().fold(0.0, f64::max);
    let line: String = shown.iter().map(|v| bar(*v, peak)).collect();
    format!("tok/s {line}{tail}")
}

/// `levels 1▂ 2▄ 4█ 8█` in at most `width` columns: every finished level's aggregate tokens/s,
/// scaled to the best, the latest kept when they do not all fit.
pub fn level_strip(levels: &[LevelRow], width: usize) -> String {
    if levels.is_empty() {
        return String::new();
    }
    let peak = levels
        .iter()
        .map(|l| l.aggregate_tokens_per_s)
        .fold(0.0, f64::max);
    let mut kept: Vec<String> = Vec::new();
    let mut used = "levels".len();
    for l in levels.iter().rev() {
        let cell = format!("{}{}", l.level, bar(l.aggregate_tokens_per_s, peak));
        let w = cell.chars().count() + 1;
        if used + w > width {
            break;
        }
        used += w;
        kept.push(cell);
    }
    kept.reverse();
    let mut out = String::from("levels");
    for c in kept {
        out.push(' ');
        out.push_str(&c);
    }
    out
}

/// The header's fourth line: the sparkline, then the level strip when both fit.
pub fn history_line(s: &Spark, levels: &[LevelRow], width: usize) -> String {
    let spark = sparkline(s, width.min(SAMPLES_MAX + 24));
    let used = spark.chars().count();
    let gap = if used > 0 { 3 } else { 0 };
    let strip = level_strip(levels, width.saturating_sub(used + gap));
    match (spark.is_empty(), strip.is_empty()) {
        (true, _) => strip,
        (false, true) => spark,
        (false, false) => format!("{spark} · {strip}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(label: &str, tps: f64) -> LevelRow {
        LevelRow {
            level: label.into(),
            requests: 1,
            failed: 0,
            aggregate_tokens_per_s: tps,
            ttft_p50_s: None,
            ttft_p99_s: None,
            errors: String::new(),
            flag: "",
        }
    }

    #[test]
    fn the_sparkline_follows_the_rate_between_snapshots() {
        let mut s = Spark::default();
        assert_eq!(sparkline(&s, 80), "");
        // 250 ms apart: 25, 50, then 100 tokens -> 100, 200, 400 tok/s.
        for (i, n) in [0u64, 25, 75, 175].iter().enumerate() {
            s.sample(i as u64 * 250_000_000, *n);
        }
        s.sample(750_000_000, 175); // a repeated snapshot adds nothing
        assert_eq!(sparkline(&s, 80), "tok/s ▃▅█ 400 tok/s now");
        // A narrow terminal keeps the latest samples.
        let narrow = "tok/s ".len() + 1 + " 400 tok/s now".len();
        assert_eq!(sparkline(&s, narrow), "tok/s █ 400 tok/s now");
        for i in 0..500u64 {
            s.sample(1_000_000_000 + i * 250_000_000, 175 + i);
        }
        assert_eq!(s.samples.len(), SAMPLES_MAX);
        s.reset();
        assert_eq!(sparkline(&s, 80), "");
    }

    #[test]
    fn the_level_strip_scales_to_the_best_level_and_keeps_the_latest() {
        let levels = [
            level("1", 50.0),
            level("2", 100.0),
            level("4", 200.0),
            level("8", 0.0),
        ];
        assert_eq!(level_strip(&levels, 80), "levels 1▃ 2▅ 4█ 8▁");
        assert_eq!(level_strip(&levels, 12), "levels 4█ 8▁");
        assert_eq!(level_strip(&[], 80), "");
        let mut s = Spark::default();
        assert_eq!(history_line(&s, &levels, 80), "levels 1▃ 2▅ 4█ 8▁");
        s.sample(0, 0);
        s.sample(250_000_000, 25);
        assert_eq!(
            history_line(&s, &levels, 80),
            "tok/s █ 100 tok/s now · levels 1▃ 2▅ 4█ 8▁"
        );
    }
}
