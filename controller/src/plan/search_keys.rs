//! The `[search]` plan table and its flags (`--search slo`, `--search-start`, `--search-max`,
//! `--search-ttft-p99`, ...), compiled into the [`SearchSpec`] the sweep follows.

use crate::plan::search::SearchSpec;
use serde::{Deserialize, Serialize};
use tokengun_common::LoadShape;
use tokengun_common::plan::{MAX_LEVEL, MAX_RATE_PER_S};

/// `[search]`: find the highest level that meets the SLO instead of running a list of levels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchPlan {
    /// `slo` (the only search so far).
    pub mode: Option<String>,
    /// First level probed [default: 1].
    pub start: Option<f64>,
    /// Lowest and highest levels probed [default: 1 (0.1 req/s for rates) and 1024 (1000)].
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Bracket width to stop at: levels apart for concurrency [1], a share for rates [0.1].
    pub resolution: Option<f64>,
    /// Runs the answer needs, every one meeting the SLO [2].
    pub repeats: Option<u32>,
    /// TTFT p99 at most this (e.g. "2s") [default: not part of the SLO].
    pub ttft_p99: Option<String>,
    /// Share of requests that must meet the per-request SLO (slo_tokens_per_s, slo_ttft,
    /// slo_e2e) [0.95].
    pub good_share: Option<f64>,
    /// Share of requests that may fail [0.01].
    pub max_error_rate: Option<f64>,
}

impl SearchPlan {
    /// `over`'s settings over `base`'s, key by key.
    pub fn overlay(base: Option<Self>, over: Option<Self>) -> Option<Self> {
        let (b, o) = match (base, over) {
            (None, o) => return o,
            (b, None) => return b,
            (Some(b), Some(o)) => (b, o),
        };
        Some(Self {
            mode: o.mode.or(b.mode),
            start: o.start.or(b.start),
            min: o.min.or(b.min),
            max: o.max.or(b.max),
            resolution: o.resolution.or(b.resolution),
            repeats: o.repeats.or(b.repeats),
            ttft_p99: o.ttft_p99.or(b.ttft_p99),
            good_share: o.good_share.or(b.good_share),
            max_error_rate: o.max_error_rate.or(b.max_error_rate),
        })
    }
}

/// A `[search]` setting that does not make a search (named `--search`, plan key `search`).
fn bad(message: impl Into<String>) -> super::PlanFileError {
    super::file::field("search", message)
}

/// The search the plan asks for, None without `[search]`.
pub fn compile(
    plan: Option<&SearchPlan>,
    shape: LoadShape,
) -> Result<Option<SearchSpec>, super::PlanFileError> {
    let Some(p) = plan else {
        return Ok(None);
    };
    match p.mode.as_deref() {
        Some("slo") => {}
        Some(m) => return Err(bad(format!("{m:?}: the search is `slo`"))),
        None => return Err(bad("say which search: --search slo (mode = \"slo\")")),
    }
    let rate = shape.is_rate();
    let (lowest, highest) = if rate {
        (0.001, MAX_RATE_PER_S)
    } else {
        (1.0, f64::from(MAX_LEVEL))
    };
    let min = p.min.unwrap_or(if rate { 0.1 } else { 1.0 });
    let max = p.max.unwrap_or(if rate { 1000.0 } else { 1024.0 });
    let start = p.start.unwrap_or(1.0);
    let within = |v: f64| v.is_finite() && v >= lowest && v <= highest;
    if !(within(min) && within(max) && min <= max) {
        return Err(bad(format!(
            "min {min} and max {max} must be levels from {lowest} to {highest}, min at most max"
        )));
    }
    if !(start >= min && start <= max) {
        return Err(bad(format!(
            "start {start} must lie between min {min} and max {max}"
        )));
    }
    let resolution = p.resolution.unwrap_or(if rate { 0.1 } else { 1.0 });
    if !(resolution.is_finite() && resolution > 0.0) {
        return Err(bad("resolution must be above 0"));
    }
    let repeats = p.repeats.unwrap_or(2);
    if !(1..=10).contains(&repeats) {
        return Err(bad("repeats from 1 to 10"));
    }
    let share = |name: &str, v: Option<f64>, d: f64| {
        let v = v.unwrap_or(d);
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(bad(format!("{name} must be a share from 0 to 1")))
        }
    };
    let ttft_p99_max_s = p
        .ttft_p99
        .as_deref()
        .map(|t| {
            humantime::parse_duration(t)
                .map(|d| d.as_secs_f64())
                .map_err(|e| bad(format!("ttft_p99 {t:?} is not a duration ({e})")))
        })
        .transpose()?;
    Ok(Some(SearchSpec {
        start,
        min,
        max,
        integer: !rate,
        resolution,
        repeats,
        min_good_share: share("good_share", p.good_share, 0.95)?,
        ttft_p99_max_s,
        max_error_rate: share("max_error_rate", p.max_error_rate, 0.01)?,
    }))
}
