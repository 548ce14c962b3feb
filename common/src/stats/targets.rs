//! Per-target figures of a cycle spread over several server instances: each instance's
//! requests, errors, tokens/s and TTFT beside the total, and how unevenly the load fell.

use super::LatencyHistogram;
use crate::record::{OutcomeKind, RequestRecord};
use serde::{Deserialize, Serialize};

/// One instance's part of a cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetCycle {
    /// Its base URL.
    pub target: String,
    pub requests: u32,
    pub completed: u32,
    pub failed: u32,
    pub output_tokens: u64,
    /// Output tokens / the cycle's duration (the same window as the total's), tokens/s.
    pub tokens_per_s: f64,
    pub ttft_p50_s: Option<f64>,
    pub ttft_p99_s: Option<f64>,
}

/// Counts per target as records arrive.
#[derive(Debug, Clone, Default)]
pub struct TargetTally {
    targets: Vec<String>,
    parts: Vec<(u32, u32, u32, u64, LatencyHistogram)>,
}

impl TargetTally {
    /// A tally over `targets` (a record's `target_index` points into them).
    pub fn new(targets: Vec<String>) -> Self {
        let parts = targets
            .iter()
            .map(|_| (0, 0, 0, 0, LatencyHistogram::new()))
            .collect();
        Self { targets, parts }
    }

    pub fn add(&mut self, r: &RequestRecord) {
        let Some(p) = self.parts.get_mut(r.target_index as usize) else {
            return;
        };
        p.0 += 1;
        if r.outcome == OutcomeKind::Completed {
            p.1 += 1;
            p.3 += r.output_tokens;
            if let Some(t) = r.ttft_s() {
                p.4.record_s(t);
            }
        } else {
            p.2 += 1;
        }
    }

    /// Each target's figures over a cycle of `duration_s`; empty for a cycle of one target.
    pub fn figures(&self, duration_s: f64) -> Vec<TargetCycle> {
        if self.targets.len() < 2 {
            return Vec::new();
        }
        self.targets
            .iter()
            .zip(&self.parts)
            .map(|(t, p)| TargetCycle {
                target: t.clone(),
                requests: p.0,
                completed: p.1,
                failed: p.2,
                output_tokens: p.3,
                tokens_per_s: if duration_s > 0.0 {
                    p.3 as f64 / duration_s
                } else {
                    0.0
                },
                ttft_p50_s: p.4.quantile_s(0.5),
                ttft_p99_s: p.4.quantile_s(0.99),
            })
            .collect()
    }
}

/// How unevenly a cycle's output fell over its instances: the busiest instance's tokens over
/// the mean's (1 = even, 2 = one did twice its share). None for one target or no tokens.
pub fn imbalance(targets: &[TargetCycle]) -> Option<f64> {
    if targets.len() < 2 {
        return None;
    }
    let total: u64 = targets.iter().map(|t| t.output_tokens).sum();
    let max = targets.iter().map(|t| t.output_tokens).max()?;
    (total > 0).then(|| max as f64 / (total as f64 / targets.len() as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::test_util::done;

    #[test]
    fn each_target_keeps_its_own_requests_and_failures() {
        let mut t = TargetTally::new(vec!["a".into(), "b".into()]);
        let mut ok = done(1, 0, 100, 20, 10);
        t.add(&ok);
        ok.target_index = 1;
        ok.outcome = OutcomeKind::ConnectError;
        t.add(&ok);
        let f = t.figures(2.0);
        assert_eq!((f[0].requests, f[0].completed, f[0].failed), (1, 1, 0));
        assert_eq!((f[1].requests, f[1].completed, f[1].failed), (1, 0, 1));
        assert_eq!(f[0].output_tokens, 20);
        assert!((f[0].tokens_per_s - 10.0).abs() < 1e-9);
        assert_eq!(imbalance(&f), Some(2.0), "all tokens came from one of two");
        assert!(TargetTally::new(vec!["a".into()]).figures(1.0).is_empty());
    }
}
