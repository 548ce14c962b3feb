//! The report's findings, computed from the level table alone: best level, saturation knee,
//! where errors begin, the most efficient level per joule, bottleneck hints with evidence, and
//! cautions about levels whose figures deserve less trust.
//!
//! To add a finding:
//! 1. write a `fn(&Ctx) -> Option<String>` in this file (or in `findings/<name>.rs` once it is
//!    long) that says it with its numbers, or `None` when its data are absent;
//! 2. add it to [`FINDINGS`] with its section, where the report should list it;
//! 3. add a test below with levels that show it (and levels that must not).
//!
//! A caution about one level is a `fn(&Ctx, &LevelRow) -> Option<String>` in
//! [`LEVEL_CAUTIONS`] instead.
//!
//! Definitions (also in the README):
//! - A level *qualifies* when it is whole (not partial, schedule valid), its error rate is at most
//!   `max_error_rate`, and at least `min_good_share` of its requests met the run's SLO.
//! - The *best level* is the lowest qualifying level whose aggregate tokens/s is within
//!   `best_tolerance` of the highest qualifying one (a tie goes to less concurrency: the same
//!   throughput with less queueing).
//! - The *initial slope* s0 is the first level's aggregate tokens/s over its x (concurrency or
//!   rate): the gain per unit of x from nothing. The *marginal slope* between two consecutive
//!   levels is (T[i] - T[i-1]) / (x[i] - x[i-1]). The *knee* is the last level before the first
//!   marginal slope below `knee_fraction` × s0: from there on, adding concurrency stops paying.

use super::load::LevelRow;
use super::util::{fmt_bytes, fmt_num, fmt_s};

/// Thresholds of the findings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FindingOptions {
    /// Highest error rate (0..1) a qualifying level may have.
    pub max_error_rate: f64,
    /// Lowest share (0..1) of a level's requests that must meet the SLO.
    pub min_good_share: f64,
    /// Marginal slope below this fraction of the initial slope marks the knee.
    pub knee_fraction: f64,
    /// Throughputs within this fraction of the best count as a tie (lower level wins).
    pub best_tolerance: f64,
}

impl Default for FindingOptions {
    fn default() -> Self {
        Self {
            max_error_rate: 0.01,
            min_good_share: 0.95,
            knee_fraction: 0.25,
            best_tolerance: 0.05,
        }
    }
}

/// Where the throughput curve bends.
#[derive(Debug, Clone, PartialEq)]
pub enum Knee {
    /// Fewer than two whole levels: no slope to judge.
    TooFewLevels,
    /// The marginal slope never fell below the threshold: still scaling at the last level.
    StillScaling { initial_slope: f64, last_slope: f64 },
    /// Level `index`: the step after it gained `next_slope` per unit, under the threshold.
    At {
        index: usize,
        initial_slope: f64,
        next_slope: f64,
    },
}

/// The findings of one run, structured (for the compare table) and as sentences.
#[derive(Debug, Clone, PartialEq)]
pub struct Findings {
    /// Index into the level table of the best level, if any level qualifies.
    pub best: Option<usize>,
    /// Highest aggregate tokens/s of any level (index).
    pub peak: Option<usize>,
    pub knee: Knee,
    /// First level with a failed request.
    pub errors_begin: Option<usize>,
    /// First level above the error-rate limit.
    pub errors_over_limit: Option<usize>,
    /// Highest tokens per joule (index), when power was measured.
    pub most_efficient: Option<usize>,
    /// Sentences, each with its numbers.
    pub statements: Vec<String>,
    /// Bottleneck hints, each with its evidence.
    pub hints: Vec<String>,
    /// Reasons to trust some figures less.
    pub cautions: Vec<String>,
}

/// Where a finding is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The findings proper: best level, knee, errors, efficiency.
    Statement,
    /// Bottleneck hints, each with its evidence.
    Hint,
}

/// A finding about the run: a sentence with its numbers, or `None` when its data are absent.
pub type Finding = fn(&Ctx<'_>) -> Option<String>;

/// A caution about one level.
pub type LevelCaution = fn(&Ctx<'_>, &LevelRow) -> Option<String>;

/// Every finding, in the order the report lists each section.
pub const FINDINGS: &[(Section, Finding)] = &[
    (Section::Statement, best_level_statement),
    (Section::Statement, knee_statement),
    (Section::Statement, errors_statement),
    (Section::Statement, efficiency_statement),
    (Section::Hint, queueing),
    (Section::Hint, waiting_past_the_knee),
    (Section::Hint, shared_decode),
    (Section::Hint, machine_cpu),
    (Section::Hint, server_cpu_at_the_knee),
    (Section::Hint, gpu_saturated),
    (Section::Hint, power_flat),
    (Section::Hint, memory_climbing),
    (Section::Hint, memory_pressure),
];

/// Every caution about a level, in the order each level's are listed.
pub const LEVEL_CAUTIONS: &[LevelCaution] = &[partial_level, behind_schedule];

/// What every finding reads: the levels, the thresholds, and the structured findings.
pub struct Ctx<'a> {
    pub levels: &'a [LevelRow],
    pub o: &'a FindingOptions,
    pub rate_sweep: bool,
    /// The structured findings (their sentences are what is being written).
    pub f: &'a Findings,
    /// The whole levels, in order.
    pub whole: Vec<&'a LevelRow>,
    /// The knee's level, when there is a knee.
    pub knee_level: Option<&'a LevelRow>,
    /// The whole levels from the knee on (the plateau); empty without a knee.
    pub plateau: Vec<&'a LevelRow>,
}

impl<'a> Ctx<'a> {
    fn new(
        levels: &'a [LevelRow],
        o: &'a FindingOptions,
        rate_sweep: bool,
        f: &'a Findings,
    ) -> Self {
        let whole: Vec<&LevelRow> = levels.iter().filter(|l| whole(l)).collect();
        let knee_level = match f.knee {
            Knee::At { index, .. } => Some(&levels[index]),
            _ => None,
        };
        let plateau = match knee_level {
            Some(k) => whole.iter().copied().filter(|l| l.x >= k.x).collect(),
            None => Vec::new(),
        };
        Self {
            levels,
            o,
            rate_sweep,
            f,
            whole,
            knee_level,
            plateau,
        }
    }

    /// A level as the sentences name it: `concurrency 4`, or `2.5 requests/s`.
    pub fn name(&self, l: &LevelRow) -> String {
        if self.rate_sweep {
            format!("{} requests/s", fmt_num(l.x))
        } else {
            format!("concurrency {}", fmt_num(l.x))
        }
    }

    /// A level's aggregate throughput in words.
    pub fn tps(&self, l: &LevelRow) -> String {
        format!("{} tokens/s", fmt_num(l.aggregate_tokens_per_s))
    }

    /// What qualifying means, in words.
    fn qualifying(&self) -> String {
        format!(
            "error rate at most {} and at least {} of requests meeting the SLO",
            pct(self.o.max_error_rate),
            pct(self.o.min_good_share)
        )
    }

    /// The first and the last whole level.
    fn first_last(&self) -> Option<(&'a LevelRow, &'a LevelRow)> {
        Some((*self.whole.first()?, *self.whole.last()?))
    }
}

fn whole(l: &LevelRow) -> bool {
    !l.partial && l.schedule_valid
}

/// Whether a level qualifies for "best" (see the module's definitions).
pub fn qualifies(l: &LevelRow, o: &FindingOptions) -> bool {
    whole(l)
        && l.requests > 0
        && l.error_rate <= o.max_error_rate + 1e-12
        && l.good_share() + 1e-12 >= o.min_good_share
}

/// The knee of the aggregate-throughput curve over the whole levels (see the module doc).
pub fn knee(levels: &[LevelRow], o: &FindingOptions) -> Knee {
    let idx: Vec<usize> = (0..levels.len()).filter(|&i| whole(&levels[i])).collect();
    if idx.len() < 2 {
        return Knee::TooFewLevels;
    }
    let first = &levels[idx[0]];
    let initial_slope = first.aggregate_tokens_per_s / first.x;
    let mut last_slope = initial_slope;
    for w in idx.windows(2) {
        let (a, b) = (&levels[w[0]], &levels[w[1]]);
        let dx = b.x - a.x;
        if dx <= 0.0 {
            continue;
        }
        let slope = (b.aggregate_tokens_per_s - a.aggregate_tokens_per_s) / dx;
        if slope < o.knee_fraction * initial_slope {
            return Knee::At {
                index: w[0],
                initial_slope,
                next_slope: slope,
            };
        }
        last_slope = slope;
    }
    Knee::StillScaling {
        initial_slope,
        last_slope,
    }
}

/// The highest aggregate tokens/s of a qualifying level.
fn top_qualifying(levels: &[LevelRow], o: &FindingOptions) -> Option<f64> {
    levels
        .iter()
        .filter(|l| qualifies(l, o))
        .map(|l| l.aggregate_tokens_per_s)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
}

/// The best level (see the module doc).
pub fn best_level(levels: &[LevelRow], o: &FindingOptions) -> Option<usize> {
    let top = top_qualifying(levels, o)?;
    (0..levels.len()).find(|&i| {
        qualifies(&levels[i], o)
            && levels[i].aggregate_tokens_per_s >= (1.0 - o.best_tolerance) * top
    })
}

/// The most tokens per joule of a whole level; within the best-level tolerance the lower level
/// wins.
fn most_efficient(levels: &[LevelRow], o: &FindingOptions) -> Option<usize> {
    let top = levels
        .iter()
        .filter(|l| whole(l))
        .filter_map(LevelRow::tokens_per_joule)
        .fold(f64::NAN, f64::max);
    levels.iter().position(|l| {
        whole(l)
            && l.tokens_per_joule()
                .is_some_and(|t| top.is_finite() && t >= top * (1.0 - o.best_tolerance))
    })
}

fn argmax(levels: &[LevelRow], f: impl Fn(&LevelRow) -> Option<f64>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, l) in levels.iter().enumerate() {
        if let Some(v) = f(l) {
            if best.is_none_or(|(_, b)| v > b) {
                best = Some((i, v));
            }
        }
    }
    best.map(|(i, _)| i)
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn pct(v: f64) -> String {
    format!("{}%", fmt_num(v * 100.0))
}

fn lowest(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn highest(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// Computes every finding: the structured ones, then each registered sentence.
pub fn compute(levels: &[LevelRow], o: &FindingOptions, rate_sweep: bool) -> Findings {
    let mut f = Findings {
        best: best_level(levels, o),
        peak: argmax(levels, |l| whole(l).then_some(l.aggregate_tokens_per_s)),
        knee: knee(levels, o),
        errors_begin: levels.iter().position(|l| l.failed > 0),
        errors_over_limit: levels
            .iter()
            .position(|l| l.error_rate > o.max_error_rate + 1e-12),
        most_efficient: most_efficient(levels, o),
        statements: Vec::new(),
        hints: Vec::new(),
        cautions: Vec::new(),
    };
    let ctx = Ctx::new(levels, o, rate_sweep, &f);
    let said: Vec<(Section, String)> = FINDINGS
        .iter()
        .filter_map(|(section, say)| say(&ctx).map(|s| (*section, s)))
        .collect();
    let cautions: Vec<String> = levels
        .iter()
        .flat_map(|l| LEVEL_CAUTIONS.iter().filter_map(|say| say(&ctx, l)))
        .collect();
    for (section, s) in said {
        match section {
            Section::Statement => f.statements.push(s),
            Section::Hint => f.hints.push(s),
        }
    }
    f.cautions = cautions;
    f
}

// Statements.

/// The best level, or why there is none.
fn best_level_statement(c: &Ctx<'_>) -> Option<String> {
    let levels = c.levels;
    Some(match (c.f.best, c.f.peak) {
        (Some(b), _) => best_level_words(c, &levels[b]),
        (None, Some(p)) => format!(
            "Best level: none qualifies ({}); the highest throughput was {} at {}, with {} of requests meeting the SLO and error rate {}.",
            c.qualifying(),
            c.tps(&levels[p]),
            c.name(&levels[p]),
            pct(levels[p].good_share()),
            pct(levels[p].error_rate)
        ),
        (None, None) => "Best level: no whole level to judge.".into(),
    })
}

/// The best level `l` with its figures, the tie it won, and a TTFT caveat.
fn best_level_words(c: &Ctx<'_>, l: &LevelRow) -> String {
    let mut s = format!(
        "Best level: {} with {} in total, {} of requests meeting the SLO, error rate {} ({}).",
        c.name(l),
        c.tps(l),
        pct(l.good_share()),
        pct(l.error_rate),
        c.qualifying()
    );
    let top = top_qualifying(c.levels, c.o).unwrap_or(0.0).max(0.0);
    if let Some(higher) = c
        .levels
        .iter()
        .find(|h| qualifies(h, c.o) && h.aggregate_tokens_per_s == top && h.label != l.label)
    {
        s.push_str(&format!(
            " {} reached {} ({:+.1}%), within the {} tie tolerance, so the lower level is preferred.",
            capitalised(&c.name(higher)),
            c.tps(higher),
            (higher.aggregate_tokens_per_s / l.aggregate_tokens_per_s - 1.0) * 100.0,
            pct(c.o.best_tolerance)
        ));
    }
    // Without a TTFT limit, a level can "qualify" while its requests wait for long.
    if let (Some(first), Some(at_best)) = (c.whole.first().and_then(|l| l.ttft.p50_s), l.ttft.p50_s)
    {
        if first > 0.0 && at_best >= 3.0 * first {
            s.push_str(&format!(
                " Its TTFT p50 is {} against {} at the first level: if waiting matters, rerun with --slo-ttft so the SLO judges it.",
                fmt_s(at_best),
                fmt_s(first)
            ));
        }
    }
    s
}

/// Where the throughput curve bends, with the slopes that say so.
fn knee_statement(c: &Ctx<'_>) -> Option<String> {
    let unit = if c.rate_sweep {
        "per added request/s"
    } else {
        "per added concurrent request"
    };
    Some(match &c.f.knee {
        Knee::TooFewLevels => {
            "Saturation knee: fewer than two whole levels, no slope to judge.".into()
        }
        Knee::StillScaling {
            initial_slope,
            last_slope,
        } => format!(
            "Saturation knee: not reached. The last step still gained {} tokens/s {unit} ({} of the initial {}): more load may still pay.",
            fmt_num(*last_slope),
            pct(last_slope / initial_slope),
            fmt_num(*initial_slope)
        ),
        Knee::At {
            index,
            initial_slope,
            next_slope,
        } => {
            let l = &c.levels[*index];
            let next = c.levels[*index + 1..].iter().find(|n| whole(n));
            format!(
                "Saturation knee: {} ({}). The next step{} gained {} tokens/s {unit}, {} of the initial {} (threshold {}): adding load past this point stopped paying.",
                c.name(l),
                c.tps(l),
                next.map(|n| format!(" to {}", c.name(n)))
                    .unwrap_or_default(),
                fmt_num(*next_slope),
                pct(next_slope / initial_slope),
                fmt_num(*initial_slope),
                pct(c.o.knee_fraction)
            )
        }
    })
}

/// Where errors begin and where they pass the limit, or that there were none.
fn errors_statement(c: &Ctx<'_>) -> Option<String> {
    let levels = c.levels;
    let Some(i) = c.f.errors_begin else {
        return Some(format!(
            "Errors: none at any level ({} requests in all).",
            levels.iter().map(|l| u64::from(l.requests)).sum::<u64>()
        ));
    };
    let l = &levels[i];
    let mut s = format!(
        "Errors begin at {}: {} of {} requests failed ({}){}.",
        c.name(l),
        l.failed,
        l.requests,
        pct(l.error_rate),
        if l.errors_by_kind.is_empty() {
            String::new()
        } else {
            format!(", {}", l.errors_by_kind.replace(';', ", "))
        }
    );
    match c.f.errors_over_limit {
        Some(j) if j != i => s.push_str(&format!(
            " They pass the {} limit at {} ({}).",
            pct(c.o.max_error_rate),
            c.name(&levels[j]),
            pct(levels[j].error_rate)
        )),
        None => s.push_str(&format!(
            " No level passes the {} limit.",
            pct(c.o.max_error_rate)
        )),
        _ => {}
    }
    Some(s)
}

/// The most tokens per joule, when power was measured.
fn efficiency_statement(c: &Ctx<'_>) -> Option<String> {
    let l = &c.levels[c.f.most_efficient?];
    let energy = |f: fn(&tokengun_common::monitor::CycleEnergy) -> Option<f64>| {
        l.energy.as_ref().and_then(f)
    };
    let mut s = format!(
        "Most efficient per joule: {} at {} tokens/J ({} J/token, mean power {} W).",
        c.name(l),
        fmt_num(l.tokens_per_joule().unwrap_or(0.0)),
        fmt_num(energy(|e| e.joules_per_token).unwrap_or(0.0)),
        l.mean_power_w().map_or("?".into(), fmt_num)
    );
    if let Some(net) = energy(|e| e.net_tokens_per_joule) {
        s.push_str(&format!(
            " Above the idle baseline ({} W): {} tokens/J.",
            energy(|e| e.baseline_power_w).map_or("?".into(), fmt_num),
            fmt_num(net)
        ));
    }
    if let Some(b) = c.f.best.filter(|&b| Some(b) != c.f.most_efficient) {
        if let Some(tpj) = c.levels[b].tokens_per_joule() {
            s.push_str(&format!(
                " The best level ({}) gets {} tokens/J.",
                c.name(&c.levels[b]),
                fmt_num(tpj)
            ));
        }
    }
    Some(s)
}

// Bottleneck hints: each only when its data exist, said with the numbers behind it.

/// Fewer streams at once than requests in flight: the rest waited in the server's queue.
fn queueing(c: &Ctx<'_>) -> Option<String> {
    let (_, last) = c.first_last()?;
    let (streams, in_flight) = (last.max_streaming?, last.peak_concurrency);
    if streams == 0 || f64::from(streams) > 0.75 * f64::from(in_flight) {
        return None;
    }
    let same: Vec<&str> = c
        .whole
        .iter()
        .filter(|l| l.max_streaming == Some(streams))
        .map(|l| l.label.as_str())
        .collect();
    Some(format!(
        "Queueing: at {} at most {streams} requests streamed at once while {in_flight} were in flight; the rest waited for their first token (TTFT p50 {}, p99 {}). The server appears to serve about {streams} at a time (the same most-at-once at level(s) {}).",
        c.name(last),
        last.ttft.p50_s.map_or("?".into(), fmt_s),
        last.ttft.p99_s.map_or("?".into(), fmt_s),
        same.join(", ")
    ))
}

/// TTFT growing past the knee while throughput is flat.
fn waiting_past_the_knee(c: &Ctx<'_>) -> Option<String> {
    let (_, last) = c.first_last()?;
    let k = c.knee_level?;
    let (a, b) = (k.ttft.p50_s?, last.ttft.p50_s?);
    if k.label == last.label || a <= 0.0 || b < 2.0 * a {
        return None;
    }
    Some(format!(
        "Waiting grows past the knee: TTFT p50 rose from {} at {} to {} at {} while aggregate throughput changed by {:+.1}%: added requests waited rather than added throughput.",
        fmt_s(a),
        c.name(k),
        fmt_s(b),
        c.name(last),
        (last.aggregate_tokens_per_s / k.aggregate_tokens_per_s.max(1e-9) - 1.0) * 100.0
    ))
}

/// The per-request decode rate shared among streams (batching).
fn shared_decode(c: &Ctx<'_>) -> Option<String> {
    let (first, last) = c.first_last()?;
    let (a, b) = (
        first.mean_request_tokens_per_s?,
        last.mean_request_tokens_per_s?,
    );
    if a <= 0.0 || b >= 0.7 * a {
        return None;
    }
    Some(format!(
        "Shared decode: the mean per-request rate fell from {} tokens/s at {} to {} at {} ({:+.0}%): concurrent streams share the server's decode capacity.",
        fmt_num(a),
        c.name(first),
        fmt_num(b),
        c.name(last),
        (b / a - 1.0) * 100.0
    ))
}

/// The machine's CPUs pegged on the plateau: by the server, or by something else on the machine.
fn machine_cpu(c: &Ctx<'_>) -> Option<String> {
    let l = c
        .plateau
        .iter()
        .find(|l| l.machine_cpu_pct_mean.is_some_and(|m| m >= 90.0))?;
    let busy = fmt_num(l.machine_cpu_pct_mean.unwrap_or(0.0));
    Some(match (l.server_cpu_pct_mean(), l.machine_cpu_count) {
        (Some(s), Some(n)) if s >= 0.9 * 100.0 * n => format!(
            "CPU-bound: at {} the server's processes kept {} of the machine's {} CPUs busy ({busy}% of the machine), on the throughput plateau.",
            c.name(l),
            fmt_num(s / 100.0),
            fmt_num(n)
        ),
        (Some(s), Some(n)) => format!(
            "CPU: the machine was {busy}% busy at {}, on the throughput plateau, but the server's own processes used {} of its {} CPUs ({}%): the rest was other processes (the load generator, if it runs here). The machine, not the server alone, was short of CPU.",
            c.name(l),
            fmt_num(s / 100.0),
            fmt_num(n),
            fmt_num(s / n)
        ),
        _ => format!(
            "CPU: the machine's CPUs were {busy}% busy on average at {}, on the throughput plateau. Whether the server is CPU-bound depends on its share of that: the load generator and other processes run on the same CPUs.",
            c.name(l)
        ),
    })
}

/// The server's CPU at the knee against the last level.
fn server_cpu_at_the_knee(c: &Ctx<'_>) -> Option<String> {
    let (_, last) = c.first_last()?;
    let k = c.knee_level?;
    let (a, b) = (k.server_cpu_pct_mean()?, last.server_cpu_pct_mean()?);
    if k.label == last.label {
        return None;
    }
    let flat = (b - a).abs() <= 0.1 * a.max(1.0);
    Some(format!(
        "Server CPU: {}% of a core at the knee ({}), {}% at {}{}.",
        fmt_num(a),
        c.name(k),
        fmt_num(b),
        c.name(last),
        if flat {
            ": flat while the load grew (no more CPU work past the knee; on its own this does not say whether CPU is the limit)"
        } else {
            ""
        }
    ))
}

/// The accelerator busy on the whole plateau.
fn gpu_saturated(c: &Ctx<'_>) -> Option<String> {
    if c.plateau.len() < 2 {
        return None;
    }
    let busy: Vec<f64> = c
        .plateau
        .iter()
        .filter_map(|l| l.gpu_busy_pct_mean)
        .collect();
    if busy.len() != c.plateau.len() || busy.iter().any(|b| *b < 90.0) {
        return None;
    }
    Some(format!(
        "GPU: busy {}–{}% from {} on, while throughput stayed flat: the accelerator looks saturated.",
        fmt_num(lowest(&busy)),
        fmt_num(highest(&busy)),
        c.name(c.plateau[0])
    ))
}

/// Power flat on the plateau while throughput is flat too.
fn power_flat(c: &Ctx<'_>) -> Option<String> {
    if c.plateau.len() < 2 {
        return None;
    }
    let watts: Vec<f64> = c.plateau.iter().filter_map(|l| l.mean_power_w()).collect();
    if watts.len() != c.plateau.len() {
        return None;
    }
    let tp: Vec<f64> = c.plateau.iter().map(|l| l.aggregate_tokens_per_s).collect();
    let (lo, hi, tlo, thi) = (lowest(&watts), highest(&watts), lowest(&tp), highest(&tp));
    if lo <= 0.0 || hi > 1.05 * lo || thi > 1.10 * tlo {
        return None;
    }
    Some(format!(
        "Power flat: mean power stayed within {}–{} W from {} on while throughput stayed within {}–{} tokens/s: more load drew no more power, consistent with a device at its limit.",
        fmt_num(lo),
        fmt_num(hi),
        c.name(c.plateau[0]),
        fmt_num(tlo),
        fmt_num(thi)
    ))
}

/// The server's peak memory rising level after level.
fn memory_climbing(c: &Ctx<'_>) -> Option<String> {
    let rss: Vec<(&LevelRow, f64)> = c
        .whole
        .iter()
        .filter_map(|l| l.server_rss_peak_bytes().map(|r| (*l, r)))
        .collect();
    let (&(la, a), &(lb, b)) = (rss.first()?, rss.last()?);
    let rising = rss.windows(2).all(|w| w[1].1 >= w[0].1);
    if a <= 0.0 || b < 1.2 * a || !rising {
        return None;
    }
    Some(format!(
        "Memory climbing: the server's peak memory rose level after level, from {} at {} to {} at {}.",
        fmt_bytes(a),
        c.name(la),
        fmt_bytes(b),
        c.name(lb)
    ))
}

/// The machine's memory nearly full at a level.
fn memory_pressure(c: &Ctx<'_>) -> Option<String> {
    let l = c
        .whole
        .iter()
        .find(|l| l.machine_mem_used_peak_frac.is_some_and(|m| m >= 0.9))?;
    Some(format!(
        "Memory pressure: the machine's memory was {} used at its peak at {}.",
        pct(l.machine_mem_used_peak_frac.unwrap_or(0.0)),
        c.name(l)
    ))
}

// Cautions about one level.

/// A partial level's figures cover what was collected.
fn partial_level(c: &Ctx<'_>, l: &LevelRow) -> Option<String> {
    l.partial.then(|| {
        format!(
            "{} is partial (interrupted, an agent lost, or records missing): its figures cover what was collected and it is left out of the findings.",
            c.name(l)
        )
    })
}

/// A level tokengun could not send on schedule measured tokengun, not the server.
fn behind_schedule(c: &Ctx<'_>, l: &LevelRow) -> Option<String> {
    (!l.schedule_valid).then(|| {
        format!(
            "{} fell behind its own schedule (p99 send lag above 10 ms): it measured tokengun's limits, not the server's, and is left out of the findings.",
            c.name(l)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokengun_common::monitor::{CycleEnergy, EnergyMethod, ServerUsage};

    /// A whole level with `x` concurrency, `tps` aggregate tokens/s, all requests good.
    fn level(x: f64, tps: f64) -> LevelRow {
        let n = x as u32;
        let mut l = LevelRow {
            label: format!("{x}"),
            x,
            ..LevelRow::default()
        };
        let c = &mut l.cycle;
        (c.requests, c.completed, c.goodput_requests) = (n, n, n);
        c.aggregate_tokens_per_s = tps;
        l
    }

    /// Energy figures of a level drawing `w` watts at `tps` tokens/s.
    fn energy(w: f64, tps: f64) -> CycleEnergy {
        CycleEnergy {
            mean_power_w: w,
            peak_power_w: None,
            energy_j: w,
            method: EnergyMethod::Integrated,
            joules_per_token: Some(w / tps),
            tokens_per_joule: Some(tps / w),
            baseline_power_w: None,
            net_energy_j: None,
            net_joules_per_token: None,
            net_tokens_per_joule: None,
            devices: Vec::new(),
        }
    }

    fn sweep(points: &[(f64, f64)]) -> Vec<LevelRow> {
        points.iter().map(|&(x, t)| level(x, t)).collect()
    }

    #[test]
    fn findings_without_their_data_say_nothing() {
        let f = compute(&sweep(&[(1., 87.)]), &FindingOptions::default(), false);
        // Best level, knee and errors always speak; efficiency and every hint need data.
        assert_eq!(f.statements.len(), 3, "{:?}", f.statements);
        assert!(f.hints.is_empty() && f.cautions.is_empty(), "{:?}", f.hints);
        let statements = FINDINGS
            .iter()
            .filter(|(s, _)| *s == Section::Statement)
            .count();
        assert_eq!(statements, 4);
    }

    #[test]
    fn the_knee_of_a_four_slot_server_is_four() {
        let levels = sweep(&[(1., 87.), (2., 174.), (4., 348.), (8., 349.), (16., 350.)]);
        let o = FindingOptions::default();
        assert!(matches!(knee(&levels, &o), Knee::At { index: 2, .. }));
        assert_eq!(
            best_level(&levels, &o),
            Some(2),
            "ties go to the lower level"
        );
        let f = compute(&levels, &o, false);
        assert!(
            f.statements[0].contains("concurrency 4"),
            "{:?}",
            f.statements
        );
        assert!(
            f.statements[1].contains("concurrency 4"),
            "{:?}",
            f.statements
        );
        assert!(f.statements[2].contains("none at any level"));
    }

    #[test]
    fn the_knee_threshold_is_relative_to_the_initial_slope() {
        // Initial slope 100/unit; 4->8 gains 30/unit (30%), 8->16 gains 10/unit (10%).
        let levels = sweep(&[(1., 100.), (2., 200.), (4., 400.), (8., 520.), (16., 600.)]);
        let at = |frac| match knee(
            &levels,
            &FindingOptions {
                knee_fraction: frac,
                ..FindingOptions::default()
            },
        ) {
            Knee::At { index, .. } => Some(index),
            _ => None,
        };
        assert_eq!(at(0.25), Some(3));
        assert_eq!(at(0.5), Some(2));
        assert_eq!(at(0.05), None);
    }

    #[test]
    fn a_sweep_still_scaling_has_no_knee() {
        let levels = sweep(&[(1., 40.), (2., 80.), (4., 150.)]);
        let k = knee(&levels, &FindingOptions::default());
        assert!(matches!(k, Knee::StillScaling { .. }), "{k:?}");
        assert_eq!(
            knee(&levels[..1], &FindingOptions::default()),
            Knee::TooFewLevels
        );
    }

    #[test]
    fn a_first_level_that_saturates_is_the_knee() {
        let levels = sweep(&[(1., 90.), (2., 91.), (4., 92.)]);
        assert!(matches!(
            knee(&levels, &FindingOptions::default()),
            Knee::At { index: 0, .. }
        ));
    }

    #[test]
    fn levels_over_the_error_limit_or_under_the_slo_are_not_best() {
        let mut levels = sweep(&[(1., 90.), (2., 180.), (4., 360.), (8., 500.)]);
        levels[3].cycle.failed = 2;
        levels[3].cycle.completed = 6;
        levels[3].cycle.goodput_requests = 6;
        levels[3].cycle.error_rate = 0.25;
        levels[3].cycle.errors_by_kind = "http_error=2".into();
        levels[2].cycle.goodput_requests = 3; // 75% good, under 95%
        let o = FindingOptions::default();
        assert_eq!(best_level(&levels, &o), Some(1));
        let f = compute(&levels, &o, false);
        assert_eq!(f.errors_begin, Some(3));
        assert!(
            f.statements[2].contains("2 of 8") && f.statements[2].contains("http_error=2"),
            "{:?}",
            f.statements
        );
        // A looser SLO share lets level 4 in.
        let loose = FindingOptions {
            min_good_share: 0.7,
            ..o
        };
        assert_eq!(best_level(&levels, &loose), Some(2));
    }

    #[test]
    fn no_qualifying_level_is_said_plainly() {
        let mut levels = sweep(&[(1., 10.), (2., 20.)]);
        for l in &mut levels {
            l.cycle.goodput_requests = 0;
        }
        let f = compute(&levels, &FindingOptions::default(), false);
        assert_eq!(f.best, None);
        assert!(
            f.statements[0].contains("none qualifies"),
            "{}",
            f.statements[0]
        );
    }

    #[test]
    fn partial_levels_are_left_out_and_cautioned() {
        let mut levels = sweep(&[(1., 90.), (2., 180.), (4., 1000.)]);
        levels[2].cycle.partial = true;
        let f = compute(&levels, &FindingOptions::default(), false);
        assert_eq!(f.best, Some(1));
        assert_eq!(f.peak, Some(1));
        assert!(f.cautions[0].contains("partial"));
    }

    #[test]
    fn a_busy_machine_is_not_called_a_cpu_bound_server() {
        let mut levels = sweep(&[(1., 100.), (2., 200.), (4., 300.), (8., 305.), (16., 306.)]);
        for l in &mut levels {
            l.machine_cpu_pct_mean = Some(97.0);
            l.machine_cpu_count = Some(2.0);
            l.cycle.server = Some(ServerUsage {
                cpu_pct_mean: Some(10.0),
                ..ServerUsage::default()
            });
        }
        let f = compute(&levels, &FindingOptions::default(), false);
        let cpu: Vec<&String> = f.hints.iter().filter(|h| h.contains("CPU")).collect();
        assert!(cpu.iter().any(|h| h.contains("other processes")), "{cpu:?}");
        assert!(cpu.iter().all(|h| !h.starts_with("CPU-bound")), "{cpu:?}");
        // The server's own processes on both CPUs: that is CPU-bound.
        for l in &mut levels {
            l.cycle.server = Some(ServerUsage {
                cpu_pct_mean: Some(190.0),
                ..ServerUsage::default()
            });
        }
        let f = compute(&levels, &FindingOptions::default(), false);
        assert!(
            f.hints.iter().any(|h| h.starts_with("CPU-bound")),
            "{:?}",
            f.hints
        );
    }

    #[test]
    fn efficiency_and_power_hints_need_power_data() {
        let mut levels = sweep(&[(1., 100.), (2., 200.), (4., 300.), (8., 305.), (16., 306.)]);
        let f = compute(&levels, &FindingOptions::default(), false);
        assert_eq!(f.most_efficient, None);
        assert!(f.hints.iter().all(|h| !h.contains("ower")), "{:?}", f.hints);
        for (l, (w, busy)) in levels.iter_mut().zip([
            (100.0, 40.0),
            (150.0, 70.0),
            (200.0, 95.0),
            (202.0, 97.0),
            (203.0, 98.0),
        ]) {
            l.cycle.energy = Some(energy(w, l.aggregate_tokens_per_s));
            l.cycle.gpu_busy_pct_mean = Some(busy);
        }
        let f = compute(&levels, &FindingOptions::default(), false);
        // 305 tokens/s at 202 W is the most tokens per joule (1.51), but 300 at 200 W (1.50) is
        // within the tolerance with less concurrency: that level is named.
        assert_eq!(f.most_efficient, Some(2));
        assert!(matches!(f.knee, Knee::At { index: 2, .. }), "{:?}", f.knee);
        assert!(
            f.hints.iter().any(|h| h.starts_with("Power flat")),
            "{:?}",
            f.hints
        );
        assert!(
            f.hints.iter().any(|h| h.starts_with("GPU: busy 95")),
            "{:?}",
            f.hints
        );
    }

    #[test]
    fn queueing_and_memory_hints_state_their_evidence() {
        let mut levels = sweep(&[(1., 87.), (2., 174.), (4., 348.), (8., 349.), (16., 350.)]);
        for (l, rss) in levels.iter_mut().zip([
            1_000_000_000,
            1_100_000_000,
            1_300_000_000,
            1_600_000_000,
            2_000_000_000,
        ]) {
            l.max_streaming = Some((l.x as u32).min(4));
            l.cycle.peak_concurrency = l.x as u32;
            l.cycle.ttft.p50_s = Some(if l.x <= 4.0 { 0.15 } else { 0.15 * l.x / 4.0 });
            l.cycle.server = Some(ServerUsage {
                rss_peak_bytes: Some(rss),
                ..ServerUsage::default()
            });
        }
        let f = compute(&levels, &FindingOptions::default(), false);
        let q = f.hints.iter().find(|h| h.starts_with("Queueing")).unwrap();
        assert!(
            q.contains("at most 4 requests streamed at once while 16"),
            "{q}"
        );
        assert!(
            f.hints.iter().any(|h| h.starts_with("Waiting grows")),
            "{:?}",
            f.hints
        );
        assert!(
            f.hints.iter().any(|h| h.starts_with("Memory climbing")),
            "{:?}",
            f.hints
        );
        // No per-level CPU data: no CPU claim.
        assert!(f.hints.iter().all(|h| !h.contains("CPU")));
    }
}
