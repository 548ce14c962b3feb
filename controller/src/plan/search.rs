//! The highest load that meets an SLO (`--search slo`, `[search]`): instead of a fixed list of
//! levels, bracket the boundary (double from the start while the SLO holds, halve while it does
//! not), then bisect between the highest level that met it and the lowest that did not, until
//! they are a resolution apart; the answer is run again before it is given, so one lucky level
//! does not decide. A level meets the SLO only if every run of it did. [`next_probe`] is the
//! whole decision, pure; the sweep runs what it says.

use serde::{Deserialize, Serialize};

/// What is searched and when to stop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SearchSpec {
    /// The first level probed.
    pub start: f64,
    /// Lowest and highest levels that may be probed.
    pub min: f64,
    pub max: f64,
    /// Levels are whole numbers (concurrency) rather than rates.
    pub integer: bool,
    /// Bisection stops when the bracket is this narrow: absolute for whole levels (1 = adjacent),
    /// relative (e.g. 0.1 = 10 %) for rates.
    pub resolution: f64,
    /// Runs the answer needs, all meeting the SLO (2 = one repetition).
    pub repeats: u32,
    /// The SLO a level must meet: this share of its requests good (the run's per-request SLO),
    /// TTFT p99 at most this (seconds), errors at most this share.
    pub min_good_share: f64,
    pub ttft_p99_max_s: Option<f64>,
    pub max_error_rate: f64,
}

/// One probed level and whether it met the SLO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub x: f64,
    pub met: bool,
    /// Why it did not, in words (empty when it met).
    pub why: String,
}

/// The search's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The highest level that met the SLO in every run (None: not even `min`).
    pub level: Option<f64>,
    /// The lowest level above it that failed (None: `max` itself met it).
    pub failed_above: Option<f64>,
    /// Why the search ended.
    pub reason: String,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Probe(f64),
    Done(Answer),
}

/// Most probes a search runs (a bound on its time, whatever the data).
pub const MAX_PROBES: usize = 40;

/// A level's verdict over every run of it: met only if all did.
fn verdict(probes: &[Probe], x: f64) -> Option<bool> {
    let runs: Vec<&Probe> = probes.iter().filter(|p| p.x == x).collect();
    (!runs.is_empty()).then(|| runs.iter().all(|p| p.met))
}

fn runs(probes: &[Probe], x: f64) -> u32 {
    probes.iter().filter(|p| p.x == x).count() as u32
}

impl SearchSpec {
    fn snap(&self, x: f64) -> f64 {
        let x = x.clamp(self.min, self.max);
        if self.integer { x.round() } else { x }
    }

    fn narrow(&self, lo: f64, hi: f64) -> bool {
        if self.integer {
            hi - lo <= self.resolution.max(1.0)
        } else {
            (hi - lo) <= self.resolution * lo
        }
    }

    fn mid(&self, lo: f64, hi: f64) -> f64 {
        if self.integer {
            ((lo + hi) / 2.0).floor().max(lo + 1.0).min(hi - 1.0)
        } else {
            (lo + hi) / 2.0
        }
    }
}

/// The next level to probe, or the answer, from the probes so far (in the order run).
pub fn next_probe(spec: &SearchSpec, probes: &[Probe]) -> Next {
    let done = |level, failed_above, reason: &str| {
        Next::Done(Answer {
            level,
            failed_above,
            reason: reason.into(),
        })
    };
    if probes.is_empty() {
        return Next::Probe(spec.snap(spec.start));
    }
    let mut xs: Vec<f64> = probes.iter().map(|p| p.x).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    // The highest level that met the SLO below the lowest one that failed.
    let hi = xs
        .iter()
        .copied()
        .find(|&x| verdict(probes, x) == Some(false));
    let lo = xs
        .iter()
        .copied()
        .filter(|&x| verdict(probes, x) == Some(true) && hi.is_none_or(|h| x < h))
        .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
    if probes.len() >= MAX_PROBES {
        return done(lo, hi, "the probe limit was reached");
    }
    let next = match (lo, hi) {
        // Still rising: double, until the SLO fails or the ceiling is reached.
        (Some(l), None) if l >= spec.max => None,
        (Some(l), None) => Some(spec.snap((l * 2.0).max(l + 1.0))),
        // Still falling: halve, until it holds or the floor fails.
        (None, Some(h)) if h <= spec.min => {
            return done(None, Some(h), "even the lowest level failed the SLO");
        }
        (None, Some(h)) => Some(spec.snap(h / 2.0)),
        (Some(l), Some(h)) if !spec.narrow(l, h) => Some(spec.mid(l, h)),
        (Some(_), Some(_)) => None,
        (None, None) => Some(spec.snap(spec.start)),
    };
    match next {
        Some(x) if verdict(probes, x).is_none() => Next::Probe(x),
        // The bracket is as narrow as asked (or the ceiling met): repeat the answer until it has
        // its runs; a repetition that fails moves the bracket down and the search goes on.
        _ => match lo {
            Some(l) if runs(probes, l) < spec.repeats => Next::Probe(l),
            Some(l) if l >= spec.max && hi.is_none() => {
                done(Some(l), None, "the highest level allowed met the SLO")
            }
            _ => done(lo, hi, "the bracket is as narrow as the resolution"),
        },
    }
}

/// Whether a level's figures meet the SLO, and why not.
pub fn meets(spec: &SearchSpec, c: &tokengun_common::CycleSummary) -> (bool, String) {
    let mut why = Vec::new();
    if c.partial || !c.schedule_valid {
        why.push("the level is partial or fell behind its schedule".to_string());
    }
    if c.error_rate > spec.max_error_rate {
        why.push(format!(
            "{:.1}% of requests failed (at most {:.1}%)",
            c.error_rate * 100.0,
            spec.max_error_rate * 100.0
        ));
    }
    let share = if c.requests == 0 {
        0.0
    } else {
        f64::from(c.goodput_requests) / f64::from(c.requests)
    };
    if share < spec.min_good_share {
        why.push(format!(
            "{:.1}% of requests met the per-request SLO (at least {:.1}%)",
            share * 100.0,
            spec.min_good_share * 100.0
        ));
    }
    if let Some(max) = spec.ttft_p99_max_s {
        match c.ttft.p99_s {
            Some(p) if p <= max => {}
            Some(p) => why.push(format!("TTFT p99 {p:.3} s (at most {max:.3} s)")),
            None => why.push("no TTFT measured".into()),
        }
    }
    (why.is_empty(), why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SearchSpec {
        SearchSpec {
            start: 1.0,
            min: 1.0,
            max: 256.0,
            integer: true,
            resolution: 1.0,
            repeats: 2,
            min_good_share: 0.95,
            ttft_p99_max_s: None,
            max_error_rate: 0.01,
        }
    }

    /// Runs a search against a server whose SLO holds up to `limit`, except the levels in
    /// `flaky` fail their first run.
    fn search(spec: &SearchSpec, limit: f64, flaky: &[f64]) -> (Vec<Probe>, Answer) {
        let mut probes: Vec<Probe> = Vec::new();
        loop {
            match next_probe(spec, &probes) {
                Next::Probe(x) => {
                    let first = !probes.iter().any(|p| p.x == x);
                    let met = x <= limit && !(first && flaky.contains(&x));
                    probes.push(Probe {
                        x,
                        met,
                        why: String::new(),
                    });
                }
                Next::Done(a) => return (probes, a),
            }
        }
    }

    #[test]
    fn brackets_by_doubling_then_bisects_to_adjacent_levels_and_repeats_the_answer() {
        let (probes, a) = search(&spec(), 11.0, &[]);
        let xs: Vec<f64> = probes.iter().map(|p| p.x).collect();
        assert_eq!(xs, vec![1.0, 2.0, 4.0, 8.0, 16.0, 12.0, 10.0, 11.0, 11.0]);
        assert_eq!(a.level, Some(11.0));
        assert_eq!(a.failed_above, Some(12.0));
    }

    #[test]
    fn a_start_above_the_boundary_halves_down() {
        let s = SearchSpec {
            start: 64.0,
            ..spec()
        };
        let (probes, a) = search(&s, 5.0, &[]);
        assert_eq!(
            probes[..4].iter().map(|p| p.x).collect::<Vec<_>>(),
            vec![64.0, 32.0, 16.0, 8.0]
        );
        assert_eq!((a.level, a.failed_above), (Some(5.0), Some(6.0)));
    }

    #[test]
    fn a_failed_repetition_moves_the_answer_down() {
        // 11 passes once, fails its repeat: 10 becomes the answer, repeated itself.
        let mut probes = Vec::new();
        let s = spec();
        let mut seen_11 = 0;
        let a = loop {
            match next_probe(&s, &probes) {
                Next::Probe(x) => {
                    if x == 11.0 {
                        seen_11 += 1;
                    }
                    let met = x <= 10.0 || (x == 11.0 && seen_11 == 1);
                    probes.push(Probe {
                        x,
                        met,
                        why: String::new(),
                    });
                }
                Next::Done(a) => break a,
            }
        };
        assert_eq!((a.level, a.failed_above), (Some(10.0), Some(11.0)));
        assert_eq!(probes.iter().filter(|p| p.x == 10.0).count(), 2);
    }

    #[test]
    fn the_floor_failing_and_the_ceiling_holding_end_the_search() {
        let (_, a) = search(&spec(), 0.0, &[]);
        assert_eq!(a.level, None);
        assert!(a.reason.contains("lowest"));
        let s = SearchSpec { max: 8.0, ..spec() };
        let (_, a) = search(&s, 100.0, &[]);
        assert_eq!((a.level, a.failed_above), (Some(8.0), None));
    }

    #[test]
    fn rates_bisect_to_a_relative_resolution() {
        let s = SearchSpec {
            start: 1.0,
            min: 0.1,
            max: 100.0,
            integer: false,
            resolution: 0.1,
            ..spec()
        };
        let (probes, a) = search(&s, 6.3, &[]);
        let (lo, hi) = (a.level.unwrap(), a.failed_above.unwrap());
        assert!(lo <= 6.3 && hi > 6.3 && (hi - lo) <= 0.1 * lo, "{lo} {hi}");
        assert!(probes.len() < MAX_PROBES);
    }
}
