//! Per-cycle statistics from request records: throughput, error rates and HDR-histogram percentiles.

use crate::record::{OutcomeKind, RequestRecord};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// Latency histograms hold microseconds up to one hour at 3 significant digits.
const HIST_MAX_US: u64 = 3_600_000_000;

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
}

/// One cycle's figures, as written to `cycles.csv`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CycleSummary {
    pub model: String,
    pub level: u32,
    pub requests: u32,
    pub completed: u32,
    pub failed: u32,
    /// failed / requests, 0..=1.
    pub error_rate: f64,
    /// Earliest intended start -> last end over the cycle's requests, seconds.
    pub duration_s: f64,
    /// Output tokens of completed requests.
    pub output_tokens: u64,
    /// output_tokens / duration_s.
    pub aggregate_tokens_per_s: f64,
    /// completed / duration_s.
    pub requests_per_s: f64,
    pub ttft_p50_s: Option<f64>,
    pub ttft_p90_s: Option<f64>,
    pub ttft_p99_s: Option<f64>,
    pub e2e_p50_s: Option<f64>,
    pub e2e_p99_s: Option<f64>,
    /// Mean over completed requests of their decode rate (tokens/s).
    pub mean_request_tokens_per_s: Option<f64>,
    /// Completed requests whose decode rate met the SLO.
    pub goodput_requests: u32,
    pub slo_tokens_per_s: f64,
    /// `kind=count` pairs joined by `;`, empty when nothing failed.
    pub errors_by_kind: String,
    /// The cycle was interrupted or lost requests; its figures cover what was collected.
    pub partial: bool,
}

impl CycleSummary {
    /// Summarises one cycle. `expected_requests` is the level: missing records count as failed.
    pub fn from_records(
        model: &str,
        level: u32,
        records: &[RequestRecord],
        slo_tokens_per_s: f64,
        partial: bool,
    ) -> Self {
        let mut ttft = LatencyHistogram::new();
        let mut e2e = LatencyHistogram::new();
        let mut by_kind: BTreeMap<&'static str, u32> = BTreeMap::new();
        let mut completed = 0u32;
        let mut output_tokens = 0u64;
        let mut rate_sum = 0.0;
        let mut rate_n = 0u32;
        let mut goodput = 0u32;
        let mut start = u64::MAX;
        let mut end = 0u64;
        for r in records {
            start = start.min(r.intended_start_ns);
            end = end.max(r.end_ns);
            if r.outcome != OutcomeKind::Completed {
                *by_kind.entry(r.outcome.as_str()).or_default() += 1;
                continue;
            }
            completed += 1;
            output_tokens += r.output_tokens;
            e2e.record_s(r.total_s());
            if let Some(t) = r.ttft_s() {
                ttft.record_s(t);
            }
            if let Some(rate) = r.tokens_per_s() {
                rate_sum += rate;
                rate_n += 1;
                if rate >= slo_tokens_per_s {
                    goodput += 1;
                }
            }
        }
        let requests = u32::try_from(records.len()).unwrap_or(u32::MAX).max(level);
        let missing = requests - u32::try_from(records.len()).unwrap_or(u32::MAX);
        if missing > 0 {
            *by_kind.entry("missing").or_default() += missing;
        }
        let failed = requests - completed;
        let duration_s = if end > start {
            (end - start) as f64 / 1e9
        } else {
            0.0
        };
        let per_s = |x: f64| {
            if duration_s > 0.0 {
                x / duration_s
            } else {
                0.0
            }
        };
        Self {
            model: model.to_string(),
            level,
            requests,
            completed,
            failed,
            error_rate: if requests > 0 {
                f64::from(failed) / f64::from(requests)
            } else {
                0.0
            },
            duration_s,
            output_tokens,
            aggregate_tokens_per_s: per_s(output_tokens as f64),
            requests_per_s: per_s(f64::from(completed)),
            ttft_p50_s: ttft.quantile_s(0.50),
            ttft_p90_s: ttft.quantile_s(0.90),
            ttft_p99_s: ttft.quantile_s(0.99),
            e2e_p50_s: e2e.quantile_s(0.50),
            e2e_p99_s: e2e.quantile_s(0.99),
            mean_request_tokens_per_s: (rate_n > 0).then(|| rate_sum / f64::from(rate_n)),
            goodput_requests: goodput,
            slo_tokens_per_s,
            errors_by_kind: by_kind
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(";"),
            partial: partial || missing > 0,
        }
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
            intended_start_ns: start_ms * 1_000_000,
            sent_ns: start_ms * 1_000_000,
            first_byte_ns: Some(first_ms * 1_000_000),
            first_token_ns: timeline.first().map(|c| c.offset_ns),
            last_token_ns: timeline.last().map(|c| c.offset_ns),
            end_ns: timeline.last().map_or(0, |c| c.offset_ns),
            status_code: Some(200),
            outcome: OutcomeKind::Completed,
            error: String::new(),
            output_tokens: u64::from(n),
            token_source: TokenSource::Server,
            counted_tokens: u64::from(n),
            prompt_tokens: None,
            server: ServerTimings::default(),
            done_reason: "stop".into(),
            timeline,
        }
    }

    #[test]
    fn summary_counts_and_rates() {
        let mut failed = done(3, 0, 50, 0, 0);
        failed.outcome = OutcomeKind::HttpError;
        failed.end_ns = 10_000_000;
        let recs = vec![done(1, 0, 100, 11, 10), done(2, 0, 100, 11, 10), failed];
        let s = CycleSummary::from_records("m", 3, &recs, 10.0, false);
        assert_eq!((s.requests, s.completed, s.failed), (3, 2, 1));
        assert!((s.error_rate - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.duration_s - 0.2).abs() < 1e-9);
        assert_eq!(s.output_tokens, 22);
        assert!((s.aggregate_tokens_per_s - 110.0).abs() < 1e-6);
        assert!((s.mean_request_tokens_per_s.unwrap() - 100.0).abs() < 1e-6);
        assert!((s.ttft_p50_s.unwrap() - 0.1).abs() < 1e-3);
        assert_eq!(s.goodput_requests, 2);
        assert_eq!(s.errors_by_kind, "http_error=1");
        assert!(!s.partial);
    }

    #[test]
    fn missing_records_are_failures_and_mark_partial() {
        let s = CycleSummary::from_records("m", 4, &[done(1, 0, 10, 3, 1)], 10.0, false);
        assert_eq!((s.requests, s.completed, s.failed), (4, 1, 3));
        assert_eq!(s.errors_by_kind, "missing=3");
        assert!(s.partial);
    }

    #[test]
    fn empty_cycle_is_all_zero_not_nan() {
        let s = CycleSummary::from_records("m", 1, &[], 10.0, true);
        assert_eq!(s.aggregate_tokens_per_s, 0.0);
        assert_eq!(s.ttft_p50_s, None);
        assert!(s.error_rate.is_finite());
    }

    #[test]
    fn histograms_merge_exactly() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        for i in 1..=50 {
            a.record_s(f64::from(i) / 1000.0);
            b.record_s(f64::from(i + 50) / 1000.0);
        }
        a.merge(&b);
        assert_eq!(a.len(), 100);
        assert!((a.quantile_s(0.5).unwrap() - 0.050).abs() < 1e-4);
        assert!((a.quantile_s(1.0).unwrap() - 0.100).abs() < 1e-3);
    }
}
