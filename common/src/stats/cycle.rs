//! The mergeable per-cycle accumulator: counts, tokens, latency histograms, the load window's
//! figures and peak concurrency, one per agent, merged into the cycle's.

use super::{LatencyHistogram, ServerTally, Slo, paid_model_load};
use crate::record::{OutcomeKind, RequestRecord};
use std::collections::BTreeMap;

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
    pub(super) rate_sum: f64,
    pub(super) rate_n: u32,
    pub errors: BTreeMap<String, u32>,
    pub ttft: LatencyHistogram,
    /// Time to the first answer token (after any reasoning).
    pub ttfa: LatencyHistogram,
    pub itl: LatencyHistogram,
    pub tpot: LatencyHistogram,
    pub e2e: LatencyHistogram,
    pub send_lag: LatencyHistogram,
    /// The server's own account: token agreement, timing breakdown, model loads.
    pub server: ServerTally,
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
    pub(super) window_ns: Option<u64>,
    /// Tokens of completed requests that arrived inside the window.
    pub(super) window_tokens: u64,
    /// Prompt tokens of completed requests dispatched inside the window.
    pub(super) window_prompt_tokens: u64,
    /// Completed requests that ended inside the window.
    pub(super) window_completed: u32,
    /// Requests dispatched inside the window.
    pub(super) window_dispatched: u32,
    pub(super) start_ns: Option<u64>,
    pub(super) end_ns: u64,
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
        self.server.add(r);
        if r.outcome != OutcomeKind::Completed {
            *self.errors.entry(r.error_kind().to_string()).or_default() += 1;
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
        // A request that paid a model load is reported apart (ServerAccount::model_loads): its
        // first token measures the load, not the level.
        if !paid_model_load(r) {
            if let Some(t) = r.ttft_s() {
                self.ttft.record_s(t);
            }
            if let Some(t) = r.ttfa_s() {
                self.ttfa.record_s(t);
            }
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
        self.server.merge(&other.server);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::CycleSummary;
    use crate::stats::test_util::{done, info};

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
}
