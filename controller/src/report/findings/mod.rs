//! The report's findings, computed from the level table alone: best level, saturation knee,
//! where errors begin, the most efficient level per joule, bottleneck hints with evidence, and
//! cautions about levels whose figures deserve less trust.
//!
//! To add a finding:
//! 1. write a `fn(&Ctx) -> Option<String>` that says it with its numbers, or `None` when its
//!    data are absent: in `statements.rs` (best level, knee, errors, efficiency), `hints.rs`
//!    (bottleneck hints), or a new `findings/<name>.rs`;
//! 2. add it to [`FINDINGS`] with its section, where the report should list it;
//! 3. add a test in this module's tests with levels that show it (and levels that must not).
//!
//! A caution about one level is a `fn(&Ctx, &LevelRow) -> Option<String>` in this file,
//! registered in [`LEVEL_CAUTIONS`].
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

mod hints;
mod instances;
mod ollama;
pub mod pressure;
mod server;
mod statements;

use super::load::LevelRow;
use super::util::fmt_num;

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
    (Section::Statement, statements::best_level_statement),
    (Section::Statement, statements::knee_statement),
    (Section::Statement, statements::errors_statement),
    (Section::Statement, statements::efficiency_statement),
    (Section::Statement, server::token_truth),
    (Section::Statement, server::model_loads),
    (Section::Statement, ollama::reloads),
    (Section::Statement, ollama::queue_full),
    (Section::Statement, pressure::server_energy),
    (Section::Hint, server::ttft_breakdown),
    (Section::Hint, server::server_waiting),
    (Section::Hint, hints::queueing),
    (Section::Hint, hints::waiting_past_the_knee),
    (Section::Hint, hints::shared_decode),
    (Section::Hint, hints::machine_cpu),
    (Section::Hint, hints::server_cpu_at_the_knee),
    (Section::Hint, hints::gpu_saturated),
    (Section::Hint, hints::power_flat),
    (Section::Hint, hints::memory_climbing),
    (Section::Hint, hints::memory_pressure),
    (Section::Hint, instances::imbalance),
    (Section::Hint, ollama::cpu_offload),
    (Section::Hint, pressure::thermal),
    (Section::Hint, pressure::memory),
];

/// Every caution about a level, in the order each level's are listed.
pub const LEVEL_CAUTIONS: &[LevelCaution] = &[partial_level, behind_schedule, unrated_requests];

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

/// Requests too short to time say nothing of the decode rate; the reader should know how many.
fn unrated_requests(c: &Ctx<'_>, l: &LevelRow) -> Option<String> {
    (l.unrated_requests > 0).then(|| {
        format!(
            "{}: {} of {} completed requests had no measurable decode rate (a single chunk, or chunks read together: under 50 ms and under 1 ms apart on average); per-request tok/s leaves them out and goodput did not judge their rate.",
            c.name(l),
            l.unrated_requests,
            l.completed
        )
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use tokengun_common::monitor::{CycleEnergy, EnergyMethod, ServerUsage};

    /// A whole level with `x` concurrency, `tps` aggregate tokens/s, all requests good.
    pub(in crate::report::findings) fn level(x: f64, tps: f64) -> LevelRow {
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
        assert_eq!(statements, 9);
    }

    #[test]
    fn the_servers_account_speaks_of_queue_loads_and_token_counts() {
        use tokengun_common::stats::ServerAccount;
        let mut levels = sweep(&[(1., 87.), (8., 170.)]);
        levels[0].cycle.server_account = Some(ServerAccount {
            token_checked: 1,
            token_exact: 1,
            breakdown_requests: 1,
            queue_s_mean: Some(0.01),
            prefill_s_mean: Some(0.1),
            model_loads: 1,
            model_load_max_s: Some(4.1),
            ..ServerAccount::default()
        });
        levels[1].cycle.server_account = Some(ServerAccount {
            token_checked: 9,
            token_exact: 7,
            token_end_token: 1,
            token_utf8_merged: 1,
            breakdown_requests: 8,
            queue_s_mean: Some(0.8),
            prefill_s_mean: Some(0.2),
            ..ServerAccount::default()
        });
        let f = compute(&levels, &FindingOptions::default(), false);
        let all = [f.statements.clone(), f.hints.clone()].concat().join("\n");
        for needle in [
            "TTFT at concurrency 8 is 80% queue",
            "add slots (llama.cpp -np, OLLAMA_NUM_PARALLEL)",
            "1 request(s) paid a model load (the longest 4.1 s, at concurrency 1)",
            "agrees with the tokens seen in the stream for all 10 requests it counted (1 of them count one more",
            "; 1 had tokens held back inside a multi-byte character",
        ] {
            assert!(all.contains(needle), "lacks {needle:?}:\n{all}");
        }

        levels[1].server_waiting_max = Some(4.0);
        let f = compute(&levels, &FindingOptions::default(), false);
        assert!(
            f.hints.iter().any(|h| h.contains(
                "requests waiting for a slot from concurrency 8 on: up to 4 at concurrency 8"
            )),
            "{:?}",
            f.hints
        );

        // A mismatch on a server that packs tokens into chunks says so.
        levels[1].cycle.server_account = Some(ServerAccount {
            token_checked: 8,
            token_mismatch: 8,
            tokens_per_chunk: Some(2.0),
            ..ServerAccount::default()
        });
        let f = compute(&levels, &FindingOptions::default(), false);
        let all = f.statements.join("\n");
        assert!(
            all.contains("for 8 of 9 requests the server's count is not the tokens seen")
                && all.contains("up to 2 tokens per event"),
            "{all}"
        );
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
    fn requests_with_no_measurable_rate_are_counted_in_a_caution() {
        let mut levels = sweep(&[(1., 90.), (2., 180.)]);
        levels[1].cycle.unrated_requests = 2;
        let f = compute(&levels, &FindingOptions::default(), false);
        assert_eq!(f.cautions.len(), 1, "{:?}", f.cautions);
        assert!(
            f.cautions[0].contains("2 of 2 completed requests had no measurable decode rate"),
            "{}",
            f.cautions[0]
        );
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
