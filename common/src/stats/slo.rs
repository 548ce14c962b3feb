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
    /// Whether a completed request met the objective. A limit is judged only on a figure that
    /// was measured: a request with no measurable decode rate (one chunk, or chunks that came
    /// together, see [`RequestRecord::tokens_per_s`]) or no first token is not failed for it
    /// ([`Slo::unjudged_rate`] counts those).
    pub fn met_by(&self, r: &RequestRecord) -> bool {
        (self.tokens_per_s <= 0.0 || r.tokens_per_s().is_none_or(|x| x >= self.tokens_per_s))
            && self
                .ttft_s
                .is_none_or(|l| r.ttft_s().is_none_or(|t| t <= l))
            && self.e2e_s.is_none_or(|l| r.total_s() <= l)
    }

    /// Whether the rate limit applies but `r` had no measurable rate to judge it by.
    pub fn unjudged_rate(&self, r: &RequestRecord) -> bool {
        self.tokens_per_s > 0.0 && r.tokens_per_s().is_none()
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

    #[test]
    fn an_unmeasured_figure_fails_no_limit() {
        // One chunk: no decode rate; no tokens at all: no TTFT either.
        let mut one = done(1, 0, 100, 1, 10);
        one.timeline.truncate(1);
        let mut none = done(2, 0, 100, 1, 10);
        none.timeline.clear();
        none.first_token_ns = None;
        let slo = Slo {
            tokens_per_s: 10.0,
            ttft_s: Some(0.2),
            e2e_s: Some(100.0),
        };
        assert!(one.tokens_per_s().is_none() && slo.met_by(&one) && slo.unjudged_rate(&one));
        assert!(slo.met_by(&none) && slo.unjudged_rate(&none));
        // A measured figure still fails: E2E over its limit.
        let tight = Slo {
            e2e_s: Some(0.001),
            ..slo
        };
        assert!(!tight.met_by(&one));
    }
}
