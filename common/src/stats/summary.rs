//! A cycle's summary row (as written to `cycles.csv` and `run.json`) from its records or its
//! merged statistics, and each agent's part of it.

use super::self_check::{SEND_LAG_LIMIT_S, self_check_verdict};
use super::{CycleStats, Percentiles, Slo};
use crate::record::RequestRecord;
use serde::{Deserialize, Serialize};

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
    /// Completed requests with no measurable decode rate (one chunk, or chunks that came
    /// together): left out of `mean_request_tokens_per_s`, and not failed for it by the SLO.
    #[serde(default)]
    pub unrated_requests: u32,
    /// Completed requests that met the SLO (judged on the figures that were measured).
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
    /// Several agents: each one's part of the cycle (absent from runs before several agents).
    #[serde(default)]
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
    /// The server's own account of the level's requests, where its API gives one (absent
    /// from runs before it, and for servers that say nothing about their work).
    #[serde(default)]
    pub server_account: Option<super::ServerAccount>,
    /// The group of a run of several (instance counts, server settings): its folder segment
    /// below the model's, empty for a run of one group or from before groups.
    #[serde(default)]
    pub group: String,
    /// The group for people (`llama3.2:1b · 2 instances`), empty for a run of one group.
    #[serde(default)]
    pub group_label: String,
    /// The managed server's setting (`OLLAMA_NUM_PARALLEL=4`), empty without one.
    #[serde(default)]
    pub setting: String,
    /// Server instances the level's load was spread over (0 in runs from before).
    #[serde(default)]
    pub instances: u32,
    /// Several instances: each one's part (empty otherwise).
    #[serde(default)]
    pub targets: Vec<super::TargetCycle>,
    /// The cycle that ran the level (records.pb's `cycle_id`); 0 in runs from before it.
    #[serde(default)]
    pub cycle_id: u32,
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
            unrated_requests: s.completed.saturating_sub(s.rate_n),
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
            server_account: s.server.account(),
            group: String::new(),
            group_label: String::new(),
            setting: String::new(),
            instances: 0,
            targets: Vec::new(),
            cycle_id: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::OutcomeKind;
    use crate::stats::test_util::{done, info};

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
    fn empty_cycle_is_all_zero_not_nan() {
        let s = CycleSummary::from_records(&info(1), &[], &Slo::default(), true);
        assert_eq!(s.aggregate_tokens_per_s, 0.0);
        assert_eq!(s.ttft.p50_s, None);
        assert!(s.error_rate.is_finite());
    }
}
