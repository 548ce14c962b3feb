//! Per-cycle statistics from request records: counts, throughput, goodput, and latency
//! percentiles from HDR histograms that merge exactly (percentiles are never averaged).

use crate::record::{OutcomeKind, RequestRecord};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Latency histograms hold microseconds up to one hour at 3 significant digits.
const HIST_MAX_US: u64 = 3_600_000_000;

/// A cycle whose p99 send lag (intended start -> dispatched) exceeds this fell behind its schedule:
/// its figures describe tokengun's limits as much as the server's, and it is marked invalid.
pub const SEND_LAG_LIMIT_S: f64 = 0.010;
/// Above this share of its cores (CPU seconds / wall seconds / cores), the agent's process was
/// busy enough to be the bottleneck.
pub const AGENT_CPU_LIMIT_SHARE: f64 = 0.9;
/// Above this p99 event-loop delay (ms) the agent's runtime woke its tasks late.
pub const LOOP_DELAY_LIMIT_MS: f64 = 10.0;

/// A latency distribution that can be merged exactly (never by averaging percentiles).
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram (1 us .. 1 h, 3 significant digits).
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, HIST_MAX_US, 3)
            .expect("constant histogram bounds are valid");
        Self { hist }
    }

    /// Records a latency in seconds (clamped to the histogram's range).
    pub fn record_s(&mut self, seconds: f64) {
        let us = (seconds * 1e6).round().clamp(1.0, HIST_MAX_US as f64) as u64;
        self.hist.saturating_record(us);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Both histograms share bounds, so `add` cannot fail; a failure would only lose samples.
        let _ = self.hist.add(&other.hist);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The value at quantile `q` (0..=1) in seconds, or `None` when empty.
    pub fn quantile_s(&self, q: f64) -> Option<f64> {
        (!self.hist.is_empty()).then(|| self.hist.value_at_quantile(q) as f64 / 1e6)
    }

    /// The summary figures.
    pub fn percentiles(&self) -> Percentiles {
        let empty = self.hist.is_empty();
        Percentiles {
            mean_s: (!empty).then(|| self.hist.mean() / 1e6),
            p50_s: self.quantile_s(0.50),
            p90_s: self.quantile_s(0.90),
            p95_s: self.quantile_s(0.95),
            p99_s: self.quantile_s(0.99),
            max_s: (!empty).then(|| self.hist.max() as f64 / 1e6),
        }
    }
}

/// Distribution summary of one latency, seconds; `None` when there were no samples.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub mean_s: Option<f64>,
    pub p50_s: Option<f64>,
    pub p90_s: Option<f64>,
    pub p95_s: Option<f64>,
    pub p99_s: Option<f64>,
    pub max_s: Option<f64>,
}

/// Service-level objective for goodput: a completed request is good when it meets every limit set.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Slo {
    /// Decode rate at least this (tokens/s); the study's "reasonable throughput" is 10.
    pub tokens_per_s: f64,
    /// TTFT at most this, when set.
    pub ttft_s: Option<f64>,
    /// End-to-end latency at most this, when set.
    pub e2e_s: Option<f64>,
}

impl Default for Slo {
    fn default() -> Self {
        Self {
            tokens_per_s: crate::defaults::SLO_TOKENS_PER_S,
            ttft_s: None,
            e2e_s: None,
        }
    }
}

impl Slo {
    /// Whether a completed request met the objective (a request with no measurable decode rate,
    /// fewer than 50 ms of streaming, does not).
    pub fn met_by(&self, r: &RequestRecord) -> bool {
        (self.tokens_per_s <= 0.0 || r.tokens_per_s().is_some_and(|x| x >= self.tokens_per_s))
            && self
                .ttft_s
                .is_none_or(|l| r.ttft_s().is_some_and(|t| t <= l))
            && self.e2e_s.is_none_or(|l| r.total_s() <= l)
    }
}

/// Peak-concurrency edges held before a long level's old ones are folded (see
/// [`CycleStats::fold_after`]): 1 MiB of them.
pub const FOLD_EDGES: usize = 65_536;

/// Mergeable per-cycle accumulator: one per agent, merged into the cycle's figures.
#[derive(Debug, Clone, Default)]
pub struct CycleStats {
    pub requests: u32,
    pub completed: u32,
    pub output_tokens: u64,
    pub prompt_tokens: u64,
    pub goodput: u32,
    rate_sum: f64,
    rate_n: u32,
    pub errors: BTreeMap<String, u32>,
    pub ttft: LatencyHistogram,
    /// Time to the first answer token (after any reasoning).
    pub ttfa: LatencyHistogram,
    pub itl: LatencyHistogram,
    pub tpot: LatencyHistogram,
    pub e2e: LatencyHistogram,
    pub send_lag: LatencyHistogram,
    /// (instant ns, +1 start / -1 end) for the peak-concurrency sweep line.
    edges: Vec<(u64, i32)>,
    /// Long levels: edges older than this (ns before the latest end seen) are folded into
    /// `folded_in_flight`/`folded_peak`, so memory stays bounded however long a level runs.
    /// None = never fold (exact for records in any order).
    fold_after_ns: Option<u64>,
    /// Requests in flight at the fold horizon, and the peak before it.
    folded_in_flight: i64,
    folded_peak: i64,
    /// Fold when `edges` reaches this length (doubles when little can be folded).
    next_fold_at: usize,
    /// Closed/open loops: the load window (origin -> origin + duration), ns.
    window_ns: Option<u64>,
    /// Tokens of completed requests that arrived inside the window.
    window_tokens: u64,
    /// Prompt tokens of completed requests dispatched inside the window.
    window_prompt_tokens: u64,
    /// Completed requests that ended inside the window.
    window_completed: u32,
    /// Requests dispatched inside the window.
    window_dispatched: u32,
    start_ns: Option<u64>,
    end_ns: u64,
}

impl CycleStats {
    /// An accumulator whose rates count only what happened in `[0, window_ns]` when given
    /// (closed and open loops: the drain after the duration would otherwise dilute them).
    pub fn with_window(window_ns: Option<u64>) -> Self {
        Self {
            window_ns,
            ..Self::default()
        }
    }

    /// Folds the peak-concurrency edges that are more than `after` older than the latest request
    /// end seen (kept while fewer than [`FOLD_EDGES`]). Records arriving later than `after` behind
    /// the newest would count as in flight at the horizon, so give `after` at least the request
    /// timeout plus any wait for a lost agent's replay.
    pub fn fold_after(mut self, after: std::time::Duration) -> Self {
        self.fold_after_ns = Some(u64::try_from(after.as_nanos()).unwrap_or(u64::MAX));
        self
    }

    /// Peak-concurrency edges held in memory now.
    pub fn edges_held(&self) -> usize {
        self.edges.len()
    }

    fn fold(&mut self) {
        let Some(after) = self.fold_after_ns else {
            return;
        };
        let horizon = self.end_ns.saturating_sub(after);
        // Ends before starts at the same instant, as in `peak_concurrency`.
        self.edges.sort_unstable();
        let cut = self.edges.partition_point(|&(t, _)| t < horizon);
        for &(_, d) in &self.edges[..cut] {
            self.folded_in_flight += i64::from(d);
            self.folded_peak = self.folded_peak.max(self.folded_in_flight);
        }
        self.edges.drain(..cut);
        self.next_fold_at = FOLD_EDGES.max(self.edges.len() * 2);
    }

    /// Adds one request.
    pub fn add(&mut self, r: &RequestRecord, slo: &Slo) {
        self.requests += 1;
        let w = self.window_ns.unwrap_or(u64::MAX);
        if r.dispatched_ns <= w {
            self.window_dispatched += 1;
        }
        self.start_ns = Some(
            self.start_ns
                .map_or(r.intended_start_ns, |s| s.min(r.intended_start_ns)),
        );
        self.end_ns = self.end_ns.max(r.end_ns);
        self.edges.push((r.sent_ns, 1));
        self.edges.push((r.end_ns, -1));
        if self.fold_after_ns.is_some() && self.edges.len() >= self.next_fold_at.max(FOLD_EDGES) {
            self.fold();
        }
        self.send_lag.record_s(r.send_lag_s());
        if r.outcome != OutcomeKind::Completed {
            *self
                .errors
                .entry(r.outcome.as_str().to_string())
                .or_default() += 1;
            return;
        }
        self.completed += 1;
        self.output_tokens += r.output_tokens;
        if r.end_ns <= w {
            self.window_completed += 1;
        }
        if r.dispatched_ns <= w {
            self.window_prompt_tokens += r.prompt_tokens.unwrap_or(0);
        }
        self.window_tokens += r
            .timeline
            .iter()
            .take_while(|c| c.offset_ns <= w)
            .map(|c| u64::from(c.tokens))
            .sum::<u64>();
        self.prompt_tokens += r.prompt_tokens.unwrap_or(0);
        self.e2e.record_s(r.total_s());
        if let Some(t) = r.ttft_s() {
            self.ttft.record_s(t);
        }
        if let Some(t) = r.ttfa_s() {
            self.ttfa.record_s(t);
        }
        if let Some(t) = r.tpot_s() {
            self.tpot.record_s(t);
        }
        for gap in r.itl_s() {
            self.itl.record_s(gap);
        }
        if let Some(rate) = r.tokens_per_s() {
            self.rate_sum += rate;
            self.rate_n += 1;
        }
        if slo.met_by(r) {
            self.goodput += 1;
        }
    }

    /// Adds everything `other` holds (another agent's share of the same cycle).
    pub fn merge(&mut self, other: &CycleStats) {
        self.requests += other.requests;
        self.completed += other.completed;
        self.output_tokens += other.output_tokens;
        self.prompt_tokens += other.prompt_tokens;
        self.goodput += other.goodput;
        self.rate_sum += other.rate_sum;
        self.rate_n += other.rate_n;
        for (k, n) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += n;
        }
        self.ttft.merge(&other.ttft);
        self.ttfa.merge(&other.ttfa);
        self.itl.merge(&other.itl);
        self.tpot.merge(&other.tpot);
        self.e2e.merge(&other.e2e);
        self.send_lag.merge(&other.send_lag);
        self.edges.extend_from_slice(&other.edges);
        // Folded parts were folded at different horizons: the sum of their peaks bounds the
        // merged peak from above (exact when neither side folded).
        self.folded_in_flight += other.folded_in_flight;
        self.folded_peak += other.folded_peak;
        self.window_tokens += other.window_tokens;
        self.window_prompt_tokens += other.window_prompt_tokens;
        self.window_completed += other.window_completed;
        self.window_dispatched += other.window_dispatched;
        self.start_ns = match (self.start_ns, other.start_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.end_ns = self.end_ns.max(other.end_ns);
    }

    /// Most requests in flight at once (sent, not yet ended).
    pub fn peak_concurrency(&self) -> u32 {
        let mut edges = self.edges.clone();
        // Ends before starts at the same instant: a request replaced at once is not two in flight.
        edges.sort_unstable();
        let mut now = self.folded_in_flight;
        let mut peak = self.folded_peak;
        for (_, d) in edges {
            now += i64::from(d);
            peak = peak.max(now);
        }
        u32::try_from(peak).unwrap_or(0)
    }
}

/// What was asked of a cycle, for its summary row.
#[derive(Debug, Clone, PartialEq)]
pub struct CycleInfo {
    pub model: String,
    pub shape: String,
    /// Concurrency, or the rate for open loops, as shown.
    pub level: String,
    pub concurrency: u32,
    pub rate_per_s: Option<f64>,
    /// Requests the agents say they started; missing records count as failed.
    pub expected_requests: u32,
    /// Closed/open loops: the duration new requests were started for, ns.
    pub window_ns: Option<u64>,
}

/// One cycle's figures, as written to `cycles.csv` and `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CycleSummary {
    pub model: String,
    pub shape: String,
    pub level: String,
    pub concurrency: u32,
    pub rate_per_s: Option<f64>,
    pub requests: u32,
    pub completed: u32,
    pub failed: u32,
    /// failed / requests, 0..=1.
    pub error_rate: f64,
    /// Earliest intended start -> last end over the cycle's requests, seconds.
    pub duration_s: f64,
    /// Output tokens of completed requests.
    pub output_tokens: u64,
    /// Prompt tokens of completed requests, as the server counted them.
    pub prompt_tokens: u64,
    /// Burst: output_tokens / duration_s. Closed/open: output tokens that arrived within the
    /// load window / the window (the drain after it does not dilute the rate).
    pub aggregate_tokens_per_s: f64,
    /// (prompt_tokens + output_tokens) / duration_s.
    /// Closed/open loops: over the load window, like the other rates.
    pub total_tokens_per_s: f64,
    /// Burst: completed / duration_s. Closed/open: requests completed within the window / window.
    pub requests_per_s: f64,
    /// Open loops: requests dispatched within the window / window (the arrival rate achieved).
    pub achieved_rate_per_s: Option<f64>,
    /// Most requests in flight at once.
    pub peak_concurrency: u32,
    pub ttft: Percentiles,
    /// Time to first answer token: differs from TTFT only for reasoning models.
    pub ttfa: Percentiles,
    pub itl: Percentiles,
    pub tpot: Percentiles,
    pub e2e: Percentiles,
    /// Mean over completed requests of their decode rate (tokens/s).
    pub mean_request_tokens_per_s: Option<f64>,
    /// Completed requests that met the SLO.
    pub goodput_requests: u32,
    /// goodput_requests / duration_s.
    pub goodput_requests_per_s: f64,
    pub slo: Slo,
    /// How late tokengun sent requests against their intended start.
    pub send_lag_p99_s: Option<f64>,
    pub send_lag_max_s: Option<f64>,
    /// False when tokengun fell behind its schedule (p99 send lag above 10 ms).
    pub schedule_valid: bool,
    /// `kind=count` pairs joined by `;`, empty when nothing failed.
    pub errors_by_kind: String,
    /// The cycle was interrupted or lost requests; its figures cover what was collected.
    pub partial: bool,
    /// Power and energy over the cycle, when a power source was read.
    pub energy: Option<crate::monitor::CycleEnergy>,
    /// The watched server processes over the cycle, when any were sampled in it.
    pub server: Option<crate::monitor::ServerUsage>,
    /// Mean busy % and core clock over the accelerators that report them.
    pub gpu_busy_pct_mean: Option<f64>,
    pub gpu_freq_mhz_mean: Option<f64>,
    /// Several agents: latest minus earliest cycle start, on the controller's clock.
    pub start_spread_s: Option<f64>,
    /// Several agents: each one's part of the cycle.
    pub agents: Vec<AgentCycle>,
    /// CPU seconds the agents' processes used over the cycle (summed over agents; an
    /// in-process agent's process is the controller's too). None: no agent measured it.
    #[serde(default)]
    pub agent_cpu_s: Option<f64>,
    /// The busiest agent's CPU time as a share of its cores over the cycle, percent (0-100).
    #[serde(default)]
    pub agent_cpu_pct: Option<f64>,
    /// How late a 10 ms timer on the agents' runtimes woke: p99 and max over the cycle, ms (the
    /// worst agent's).
    #[serde(default)]
    pub loop_delay_p99_ms: Option<f64>,
    #[serde(default)]
    pub loop_delay_max_ms: Option<f64>,
    /// `ok`, or why tokengun itself may have been the bottleneck of this cycle (reasons joined
    /// by `; `): its CPU near its cores, a late event loop, or a late schedule.
    #[serde(default)]
    pub self_check: String,
}

/// Why tokengun itself may have limited a cycle: `ok`, or the reasons joined by `; `. `checks`
/// are the agents' own measures; `schedule_valid` the start-lag verdict.
pub fn self_check_verdict(
    checks: &[crate::record::AgentSelfCheck],
    schedule_valid: bool,
    send_lag_p99_s: Option<f64>,
) -> String {
    let mut why = Vec::new();
    for c in checks {
        let share = if c.wall_s > 0.0 {
            c.cpu_s / c.wall_s / f64::from(c.cores.max(1))
        } else {
            0.0
        };
        if share > AGENT_CPU_LIMIT_SHARE {
            why.push(format!(
                "agent CPU at {:.0}% of its {} core(s)",
                share * 100.0,
                c.cores
            ));
        }
        if let Some(d) = c.loop_delay_p99_ms.filter(|d| *d > LOOP_DELAY_LIMIT_MS) {
            why.push(format!(
                "event-loop delay p99 {d:.1} ms (over {LOOP_DELAY_LIMIT_MS} ms)"
            ));
        }
    }
    if !schedule_valid {
        why.push(format!(
            "start lag p99 {:.1} ms (over {} ms)",
            send_lag_p99_s.unwrap_or(0.0) * 1e3,
            SEND_LAG_LIMIT_S * 1e3
        ));
    }
    if why.is_empty() {
        "ok".into()
    } else {
        why.dedup();
        why.join("; ")
    }
}

/// One agent's part of a cycle run by several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCycle {
    /// `agent1`, `agent2`...
    pub agent: String,
    pub address: String,
    /// Requests it started (its own count when its cycle end arrived).
    pub requests: u32,
    pub completed: u32,
    pub failed: u32,
    pub output_tokens: u64,
    /// Its cycle start against the scheduled instant, seconds (controller clock).
    pub start_offset_s: Option<f64>,
    /// Its stream broke during the cycle.
    pub lost: bool,
    /// It came back and its records were replayed.
    pub recovered: bool,
}

impl CycleSummary {
    /// Summarises one cycle from all of its records.
    pub fn from_records(
        info: &CycleInfo,
        records: &[RequestRecord],
        slo: &Slo,
        partial: bool,
    ) -> Self {
        let mut stats = CycleStats::with_window(info.window_ns);
        for r in records {
            stats.add(r, slo);
        }
        Self::from_stats(info, &stats, slo, partial)
    }

    /// Summarises merged statistics.
    pub fn from_stats(info: &CycleInfo, s: &CycleStats, slo: &Slo, partial: bool) -> Self {
        let mut errors = s.errors.clone();
        let requests = s.requests.max(info.expected_requests);
        let missing = requests - s.requests;
        if missing > 0 {
            *errors.entry("missing".into()).or_default() += missing;
        }
        let failed = requests - s.completed;
        let duration_s = match s.start_ns {
            Some(start) if s.end_ns > start => (s.end_ns - start) as f64 / 1e9,
            _ => 0.0,
        };
        let per_s = |x: f64| {
            if duration_s > 0.0 {
                x / duration_s
            } else {
                0.0
            }
        };
        let window_s = s.window_ns.map(|w| w as f64 / 1e9).filter(|w| *w > 0.0);
        let (aggregate, total, req_rate) = match window_s {
            Some(w) => (
                s.window_tokens as f64 / w,
                (s.window_tokens + s.window_prompt_tokens) as f64 / w,
                f64::from(s.window_completed) / w,
            ),
            None => (
                per_s(s.output_tokens as f64),
                per_s((s.output_tokens + s.prompt_tokens) as f64),
                per_s(f64::from(s.completed)),
            ),
        };
        let send_lag_p99_s = s.send_lag.quantile_s(0.99);
        let schedule_valid = send_lag_p99_s.is_none_or(|l| l <= SEND_LAG_LIMIT_S);
        Self {
            model: info.model.clone(),
            shape: info.shape.clone(),
            level: info.level.clone(),
            concurrency: info.concurrency,
            rate_per_s: info.rate_per_s,
            requests,
            completed: s.completed,
            failed,
            error_rate: if requests > 0 {
                f64::from(failed) / f64::from(requests)
            } else {
                0.0
            },
            duration_s,
            output_tokens: s.output_tokens,
            prompt_tokens: s.prompt_tokens,
            aggregate_tokens_per_s: aggregate,
            total_tokens_per_s: total,
            requests_per_s: req_rate,
            achieved_rate_per_s: info
                .rate_per_s
                .and(window_s)
                .map(|w| f64::from(s.window_dispatched) / w),
            peak_concurrency: s.peak_concurrency(),
            ttft: s.ttft.percentiles(),
            ttfa: s.ttfa.percentiles(),
            itl: s.itl.percentiles(),
            tpot: s.tpot.percentiles(),
            e2e: s.e2e.percentiles(),
            mean_request_tokens_per_s: (s.rate_n > 0).then(|| s.rate_sum / f64::from(s.rate_n)),
            goodput_requests: s.goodput,
            goodput_requests_per_s: per_s(f64::from(s.goodput)),
            slo: *slo,
            send_lag_p99_s,
            send_lag_max_s: s.send_lag.percentiles().max_s,
            schedule_valid,
            errors_by_kind: errors
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(";"),
            partial: partial || missing > 0,
            energy: None,
            server: None,
            gpu_busy_pct_mean: None,
            gpu_freq_mhz_mean: None,
            start_spread_s: None,
            agents: Vec::new(),
            agent_cpu_s: None,
            agent_cpu_pct: None,
            loop_delay_p99_ms: None,
            loop_delay_max_ms: None,
            self_check: self_check_verdict(&[], schedule_valid, send_lag_p99_s),
        }
    }

    /// Adds the agents' measures of their own cost and judges whether tokengun was the
    /// bottleneck (see [`self_check_verdict`]).
    pub fn apply_self_checks(&mut self, checks: &[crate::record::AgentSelfCheck]) {
        let max = |v: Option<f64>, x: Option<f64>| match (v, x) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.agent_cpu_s = None;
        self.agent_cpu_pct = None;
        self.loop_delay_p99_ms = None;
        self.loop_delay_max_ms = None;
        for c in checks {
            self.agent_cpu_s = Some(self.agent_cpu_s.unwrap_or(0.0) + c.cpu_s);
            let pct =
                (c.wall_s > 0.0).then(|| c.cpu_s / c.wall_s / f64::from(c.cores.max(1)) * 100.0);
            self.agent_cpu_pct = max(self.agent_cpu_pct, pct);
            self.loop_delay_p99_ms = max(self.loop_delay_p99_ms, c.loop_delay_p99_ms);
            self.loop_delay_max_ms = max(self.loop_delay_max_ms, c.loop_delay_max_ms);
        }
        self.self_check = self_check_verdict(checks, self.schedule_valid, self.send_lag_p99_s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ServerTimings, TokenChunk, TokenSource};

    fn done(id: u32, start_ms: u64, first_ms: u64, n: u32, gap_ms: u64) -> RequestRecord {
        let timeline: Vec<TokenChunk> = (0..n)
            .map(|i| TokenChunk {
                offset_ns: (first_ms + u64::from(i) * gap_ms) * 1_000_000,
                tokens: 1,
            })
            .collect();
        RequestRecord {
            cycle_id: 1,
            request_id: id,
            prompt_index: 0,
            intended_start_ns: start_ms * 1_000_000,
            dispatched_ns: start_ms * 1_000_000,
            sent_ns: start_ms * 1_000_000,
            first_byte_ns: Some(first_ms * 1_000_000),
            first_token_ns: timeline.first().map(|c| c.offset_ns),
            first_answer_ns: timeline.first().map(|c| c.offset_ns),
            last_token_ns: timeline.last().map(|c| c.offset_ns),
            end_ns: timeline
                .last()
                .map_or(start_ms * 1_000_000 + 1, |c| c.offset_ns),
            status_code: Some(200),
            outcome: OutcomeKind::Completed,
            error: String::new(),
            output_tokens: u64::from(n),
            token_source: TokenSource::Server,
            counted_tokens: u64::from(n),
            reasoning_tokens: 0,
            prompt_tokens: Some(5),
            server: ServerTimings::default(),
            done_reason: "stop".into(),
            timeline,
        }
    }

    fn info(level: u32) -> CycleInfo {
        CycleInfo {
            model: "m".into(),
            shape: "burst".into(),
            level: level.to_string(),
            concurrency: level,
            rate_per_s: None,
            expected_requests: level,
            window_ns: None,
        }
    }

    #[test]
    fn a_window_keeps_the_drain_out_of_the_rates() {
        // Two requests of 11 tokens 10 ms apart, one ending inside a 150 ms window, one after.
        let recs = vec![done(1, 0, 0, 11, 10), done(2, 0, 100, 11, 10)];
        let mut i = info(2);
        i.window_ns = Some(150_000_000);
        i.rate_per_s = Some(10.0);
        let s = CycleSummary::from_records(&i, &recs, &Slo::default(), false);
        // 11 tokens of the first + 6 of the second (at 100..150 ms) in 0.15 s.
        assert!(
            (s.aggregate_tokens_per_s - 17.0 / 0.15).abs() < 1e-6,
            "{}",
            s.aggregate_tokens_per_s
        );
        assert!((s.requests_per_s - 1.0 / 0.15).abs() < 1e-6);
        assert!(
            (s.total_tokens_per_s - 27.0 / 0.15).abs() < 1e-6,
            "prompt tokens in the window too"
        );
        assert!((s.achieved_rate_per_s.unwrap() - 2.0 / 0.15).abs() < 1e-6);
    }

    #[test]
    fn summary_counts_and_rates() {
        let mut failed = done(3, 0, 50, 0, 0);
        failed.outcome = OutcomeKind::HttpError;
        failed.end_ns = 10_000_000;
        let recs = vec![done(1, 0, 100, 11, 10), done(2, 0, 100, 11, 10), failed];
        let s = CycleSummary::from_records(&info(3), &recs, &Slo::default(), false);
        assert_eq!((s.requests, s.completed, s.failed), (3, 2, 1));
        assert!((s.error_rate - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.duration_s - 0.2).abs() < 1e-9);
        assert_eq!((s.output_tokens, s.prompt_tokens), (22, 10));
        assert!((s.aggregate_tokens_per_s - 110.0).abs() < 1e-6);
        assert!((s.total_tokens_per_s - 160.0).abs() < 1e-6);
        assert!((s.mean_request_tokens_per_s.unwrap() - 100.0).abs() < 1e-6);
        assert!((s.ttft.p50_s.unwrap() - 0.1).abs() < 1e-3);
        assert!((s.itl.max_s.unwrap() - 0.010).abs() < 1e-5);
        assert_eq!(s.itl.p50_s, s.itl.p99_s);
        assert!((s.tpot.p50_s.unwrap() - 0.010).abs() < 1e-5);
        assert_eq!(s.peak_concurrency, 3);
        assert_eq!(s.goodput_requests, 2);
        assert_eq!(s.errors_by_kind, "http_error=1");
        assert!(s.schedule_valid && !s.partial);
    }

    #[test]
    fn goodput_honours_every_limit() {
        let recs = vec![done(1, 0, 100, 11, 10), done(2, 0, 300, 11, 10)];
        let slo = Slo {
            tokens_per_s: 10.0,
            ttft_s: Some(0.2),
            e2e_s: None,
        };
        assert_eq!(
            CycleSummary::from_records(&info(2), &recs, &slo, false).goodput_requests,
            1
        );
        let slo = Slo {
            tokens_per_s: 200.0,
            ..Slo::default()
        };
        assert_eq!(
            CycleSummary::from_records(&info(2), &recs, &slo, false).goodput_requests,
            0
        );
    }

    #[test]
    fn peak_concurrency_counts_overlap_only() {
        // Back to back: the second starts when the first ends.
        let mut a = done(1, 0, 10, 2, 10);
        a.end_ns = 100;
        let mut b = done(2, 0, 10, 2, 10);
        b.sent_ns = 100;
        b.end_ns = 200;
        let s = CycleSummary::from_records(&info(1), &[a, b], &Slo::default(), false);
        assert_eq!(s.peak_concurrency, 1);
    }

    #[test]
    fn missing_records_are_failures_and_mark_partial() {
        let s =
            CycleSummary::from_records(&info(4), &[done(1, 0, 10, 3, 1)], &Slo::default(), false);
        assert_eq!((s.requests, s.completed, s.failed), (4, 1, 3));
        assert_eq!(s.errors_by_kind, "missing=3");
        assert!(s.partial);
    }

    #[test]
    fn late_sends_invalidate_the_schedule() {
        let mut r = done(1, 0, 100, 3, 10);
        r.dispatched_ns = 50_000_000;
        r.sent_ns = 50_000_000;
        let s = CycleSummary::from_records(&info(1), &[r], &Slo::default(), false);
        assert!(!s.schedule_valid);
        assert!((s.send_lag_max_s.unwrap() - 0.05).abs() < 1e-4);
    }

    #[test]
    fn self_check_flags_a_busy_agent_a_late_loop_and_a_late_schedule() {
        use crate::record::AgentSelfCheck;
        let calm = AgentSelfCheck {
            cpu_s: 0.5,
            wall_s: 10.0,
            cores: 2,
            loop_delay_p99_ms: Some(1.2),
            loop_delay_max_ms: Some(4.0),
        };
        let mut s =
            CycleSummary::from_records(&info(1), &[done(1, 0, 100, 3, 10)], &Slo::default(), false);
        assert_eq!(s.self_check, "ok");
        s.apply_self_checks(&[calm]);
        assert_eq!(s.self_check, "ok");
        assert_eq!(s.agent_cpu_s, Some(0.5));
        assert!((s.agent_cpu_pct.unwrap() - 2.5).abs() < 1e-9);
        assert_eq!(
            (s.loop_delay_p99_ms, s.loop_delay_max_ms),
            (Some(1.2), Some(4.0))
        );
        // 18.2 CPU s over 10 s on 2 cores: 91% > 90%.
        let busy = AgentSelfCheck {
            cpu_s: 18.2,
            ..calm
        };
        s.apply_self_checks(&[calm, busy]);
        assert_eq!(s.self_check, "agent CPU at 91% of its 2 core(s)");
        assert_eq!(s.agent_cpu_s, Some(18.7));
        // 17.9 s is 89.5%: not flagged.
        assert_eq!(
            self_check_verdict(
                &[AgentSelfCheck {
                    cpu_s: 17.9,
                    ..calm
                }],
                true,
                None
            ),
            "ok"
        );
        let late = AgentSelfCheck {
            loop_delay_p99_ms: Some(10.5),
            ..calm
        };
        assert_eq!(
            self_check_verdict(&[late], true, None),
            "event-loop delay p99 10.5 ms (over 10 ms)"
        );
        assert_eq!(
            self_check_verdict(&[late, busy], false, Some(0.015)),
            "event-loop delay p99 10.5 ms (over 10 ms); agent CPU at 91% of its 2 core(s); start lag p99 15.0 ms (over 10 ms)"
        );
        let mut r = done(1, 0, 100, 3, 10);
        r.dispatched_ns = 50_000_000;
        r.sent_ns = 50_000_000;
        let s = CycleSummary::from_records(&info(1), &[r], &Slo::default(), false);
        assert!(
            s.self_check.starts_with("start lag p99 5"),
            "{}",
            s.self_check
        );
    }

    #[test]
    fn empty_cycle_is_all_zero_not_nan() {
        let s = CycleSummary::from_records(&info(1), &[], &Slo::default(), true);
        assert_eq!(s.aggregate_tokens_per_s, 0.0);
        assert_eq!(s.ttft.p50_s, None);
        assert!(s.error_rate.is_finite());
    }

    /// Exact percentile of raw samples (nearest rank), for comparison.
    fn raw_quantile(samples: &mut [f64], q: f64) -> f64 {
        samples.sort_by(f64::total_cmp);
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    }

    #[test]
    fn a_long_level_folds_old_edges_and_keeps_the_exact_peak() {
        // 200,000 requests of a closed loop at 4 (each 10 ms, back to back), plus one burst of 7
        // extra requests early on: the peak is 11 and lies long before the horizon.
        let slo = Slo::default();
        let mut folded = CycleStats::default().fold_after(std::time::Duration::from_secs(60));
        let mut exact = CycleStats::default();
        let mut add = |r: &RequestRecord| {
            folded.add(r, &slo);
            exact.add(r, &slo);
        };
        for i in 0..200_000u32 {
            let slot = u64::from(i % 4);
            let start_ms = u64::from(i / 4) * 10;
            let mut r = done(i, start_ms, start_ms + 5, 2, 5);
            r.end_ns = (start_ms + 10) * 1_000_000 - slot; // ends just before the next starts
            add(&r);
            if i == 1_000 {
                for k in 0..7 {
                    add(&done(1_000_000 + k, start_ms, start_ms + 3, 2, 3));
                }
            }
        }
        assert_eq!(exact.peak_concurrency(), 11);
        assert_eq!(folded.peak_concurrency(), 11);
        // 500 s of requests: the last 60 s of edges (48,000) and at most as many again until the
        // next fold are held, not all 400,000.
        assert!(folded.edges_held() <= 2 * 48_100, "{}", folded.edges_held());
        assert_eq!(exact.edges_held(), 400_014);
        // Everything else is untouched by folding.
        let a = CycleSummary::from_stats(&info(200_007), &folded, &slo, false);
        let b = CycleSummary::from_stats(&info(200_007), &exact, &slo, false);
        assert_eq!(a, b);
    }

    #[test]
    fn merged_histograms_give_the_raw_percentiles_and_never_averages() {
        // Two agents with very different latencies: one fast, one slow.
        let fast: Vec<RequestRecord> = (0..900)
            .map(|i| done(i, 0, 20 + u64::from(i % 10), 3, 5))
            .collect();
        let slow: Vec<RequestRecord> = (0..100)
            .map(|i| done(i, 0, 900 + u64::from(i), 3, 5))
            .collect();
        let slo = Slo::default();
        let mut a = CycleStats::default();
        fast.iter().for_each(|r| a.add(r, &slo));
        let mut b = CycleStats::default();
        slow.iter().for_each(|r| b.add(r, &slo));
        let mut merged = a.clone();
        merged.merge(&b);
        let whole = CycleSummary::from_records(
            &info(1000),
            &[fast.clone(), slow.clone()].concat(),
            &slo,
            false,
        );
        let from_merge = CycleSummary::from_stats(&info(1000), &merged, &slo, false);
        assert_eq!(
            whole, from_merge,
            "merging per-agent stats equals summarising all records"
        );

        let mut raw: Vec<f64> = fast
            .iter()
            .chain(&slow)
            .filter_map(RequestRecord::ttft_s)
            .collect();
        for q in [0.5, 0.9, 0.95, 0.99] {
            let exact = raw_quantile(&mut raw, q);
            let got = merged.ttft.quantile_s(q).unwrap();
            assert!(
                (got - exact).abs() <= exact * 1e-3,
                "q{q}: {got} vs raw {exact}"
            );
        }
        // Averaging the two agents' p99 would report about 0.51 s; the true p99 is 0.99 s.
        let averaged = (a.ttft.quantile_s(0.99).unwrap() + b.ttft.quantile_s(0.99).unwrap()) / 2.0;
        let p99 = from_merge.ttft.p99_s.unwrap();
        assert!((p99 - raw_quantile(&mut raw, 0.99)).abs() < 1e-3);
        assert!(
            (p99 - averaged).abs() > 0.3,
            "p99 {p99} must not be the average {averaged}"
        );
    }
}
