//! The service-level objective that decides which completed requests count toward goodput.

use crate::record::RequestRecord;
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::CycleSummary;
    use crate::stats::test_util::{done, info};

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
}
