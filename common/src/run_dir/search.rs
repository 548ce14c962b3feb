//! An SLO search's account in `run.json` (`search`): every level probed in order, whether it met
//! the SLO and why not, the bracket, and the answer.

use serde::{Deserialize, Serialize};

/// One probed level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchProbe {
    /// Its row in cycles.csv (`8`, `8-rep2`, `2.5rps`).
    pub label: String,
    pub x: f64,
    pub met: bool,
    /// Why it did not meet the SLO (empty when it met).
    pub why: String,
    /// Requests/s that met the per-request SLO.
    pub goodput_requests_per_s: f64,
}

/// The search's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRecord {
    /// The SLO searched for, in words.
    pub slo: String,
    pub probes: Vec<SearchProbe>,
    /// The highest level that met the SLO in every run (None: none did).
    pub answer: Option<f64>,
    /// The lowest level above it that failed (None: the ceiling met it).
    pub failed_above: Option<f64>,
    pub reason: String,
}
