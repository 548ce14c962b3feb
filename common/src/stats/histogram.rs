//! Latency distributions as HDR histograms that merge exactly, and their summary percentiles
//! (percentiles are never averaged).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use crate::record::RequestRecord;
    use crate::stats::test_util::{done, info};
    use crate::stats::{CycleStats, CycleSummary, Slo};

    /// Exact percentile of raw samples (nearest rank), for comparison.
    fn raw_quantile(samples: &mut [f64], q: f64) -> f64 {
        samples.sort_by(f64::total_cmp);
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
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
