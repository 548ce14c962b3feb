//! `run.json`: the run's manifest (settings, agents, monitors, each cycle's figures), with the
//! types it embeds, and its reader.
//!
//! Compatibility: a field added after the first release carries `#[serde(default)]` (an
//! `Option` defaults to `None` by itself), so an older manifest still loads. Manifests from
//! before the four APIs (`"api": "ollama"`) do not; a reader falls back to cycles.csv for them.

use super::RUN_JSON;
use crate::monitor::SourceStatus;
use crate::{Api, Arrival, CycleSummary, LoadShape, Slo};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Still going (what an interrupted process leaves behind if it could not finish the file).
    Running,
    /// Every level ran to its end.
    Complete,
    /// Stopped by the user; finished cycles are whole, the last one partial.
    Interrupted,
    /// An agent was lost or records were missing; figures cover what was collected.
    Partial,
}

impl RunStatus {
    /// The manifest's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Complete => "complete",
            Self::Interrupted => "interrupted",
            Self::Partial => "partial",
        }
    }
}

/// What an agent said about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentInfo {
    pub address: String,
    pub agent_id: String,
    pub version: String,
    pub hostname: String,
    pub capabilities: Vec<String>,
    pub max_concurrency: u32,
    pub in_process: bool,
    /// `agent1`, `agent2`... in a run (absent before several agents: one, unnamed).
    #[serde(default)]
    pub label: String,
    /// Half the lowest clock-probe round trip: how far its instants may be off ours (several
    /// agents).
    pub clock_uncertainty_ms: Option<f64>,
    /// Its last record number when the run began: the run's records come after it.
    #[serde(default)]
    pub first_seq: u64,
}

/// What monitoring found at the start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorInfo {
    pub sources: Vec<SourceStatus>,
    pub watching: Vec<String>,
    pub process_interval_ms: u64,
    pub power_interval_ms: u64,
    pub baseline_s: Option<f64>,
    /// Idle power before the sweep (W), when it was measured.
    pub baseline_power_w: Option<f64>,
}

/// The `run.json` manifest. `C` is how its cycles are read: [`CycleSummary`] (what the
/// controller writes and `resume` reads back), or [`IgnoredAny`] for a reader that takes the
/// figures from cycles.csv (see [`ManifestSettings`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest<C = CycleSummary> {
    pub tool: String,
    pub version: String,
    pub run_id: String,
    pub status: RunStatus,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub controller_host: String,
    pub target: String,
    pub api: Api,
    pub model: String,
    /// The first prompt of the workload (the only one unless `prompt_count` says otherwise).
    pub prompt: String,
    pub prompt_count: usize,
    pub shape: LoadShape,
    /// Level labels: concurrency, or `<rate>rps` for open loops.
    pub levels: Vec<String>,
    /// Closed/open loops only.
    pub duration_ms: Option<u64>,
    pub arrival: Arrival,
    pub warmup_ms: u64,
    pub seed: u64,
    pub request_timeout_ms: u64,
    pub extra_body_json: String,
    pub slo: Slo,
    /// Percent, as `--stop-on-error-rate` takes it.
    pub stop_on_error_rate: Option<f64>,
    pub server_version: Option<String>,
    pub simulator: Option<serde_json::Value>,
    pub agents: Vec<AgentInfo>,
    /// Several agents: `total` (levels divided among them) or `per-agent`.
    #[serde(default)]
    pub split: Option<String>,
    /// What was monitored besides the load (absent with --no-monitor, and before monitoring).
    #[serde(default)]
    pub monitor: Option<MonitorInfo>,
    /// An SLO search's probes and answer (`--search slo` runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<super::SearchRecord>,
    /// What the workload was (absent in runs from before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<super::WorkloadInfo>,
    /// The warm-up phase's figures (not counted in `cycles`).
    pub warmup: Option<C>,
    pub cycles: Vec<C>,
    /// Why the sweep stopped before its last level (error-rate limit), if it did.
    pub stop_reason: Option<String>,
    pub notes: Vec<String>,
    /// The run's groups (models x instance counts x server settings), when it had several or
    /// a managed server; absent before them.
    #[serde(default)]
    pub groups: Vec<GroupInfo>,
    /// Phases finished (loads, warm-ups and levels), for `resume` to find where it broke off;
    /// absent before groups (the warm-up and `cycles` tell it then).
    #[serde(default)]
    pub phases_done: Option<usize>,
}

/// One group of a run: the model, instances and server setting its levels ran on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupInfo {
    /// For people: `llama3.2:1b · 2 instances`.
    pub label: String,
    pub model: String,
    /// Its folder segment below the model's (empty when only the model varies).
    pub variant: String,
    pub targets: Vec<String>,
    pub setting: String,
    /// The model's load before its first level: the load request's end-to-end time and the
    /// server's own account of it (Ollama's `load_duration`), seconds.
    pub load_s: Option<f64>,
    pub server_load_s: Option<f64>,
    /// The managed server's process, when the plan owned it.
    pub server: Option<ServerProcess>,
}

/// A server process the plan started: exactly what ran, and what it said it was.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerProcess {
    pub command: String,
    pub args: Vec<String>,
    /// Only the variables the plan set.
    pub env: Vec<(String, String)>,
    pub pid: Option<u32>,
    /// What the server reported (`/api/version`, `/props`), empty when it said nothing.
    pub version: String,
    /// From start to the first healthy answer, seconds.
    pub ready_s: f64,
    /// How it stopped: `SIGTERM`, `SIGKILL after 10s`, or that it had already exited.
    pub stopped: String,
}

/// A manifest read for its settings only: its cycles are skipped unread, so a run.json whose
/// cycles an older tokengun wrote (fewer fields) still loads. What the report reads.
pub type ManifestSettings = Manifest<IgnoredAny>;

/// `run.json` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("run.json is missing")]
    Missing,
    #[error("cannot read run.json ({0})")]
    Io(#[source] std::io::Error),
    #[error("run.json is not valid JSON ({0})")]
    NotJson(#[source] serde_json::Error),
    #[error("run.json is not a manifest this tokengun reads ({0})")]
    NotManifest(#[source] serde_json::Error),
}

/// Reads `<run>/run.json`.
pub fn read_manifest<C: DeserializeOwned>(run: &Path) -> Result<Manifest<C>, ManifestError> {
    let bytes = std::fs::read(run.join(RUN_JSON)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ManifestError::Missing,
        _ => ManifestError::Io(e),
    })?;
    // JSON first, then the manifest: a broken file and an unknown one are told apart.
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(ManifestError::NotJson)?;
    serde_json::from_value(v).map_err(ManifestError::NotManifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as tokengun wrote it before several agents and monitoring (issue 5 and 7):
    /// no `split`, no `monitor`, agents without labels, cycles without `agents`.
    const BEFORE_AGENTS: &str = r#"{
      "tool": "tokengun", "version": "0.1.0", "run_id": "r1", "status": "complete",
      "started_at": "2026-01-01T00:00:00Z", "ended_at": null, "controller_host": "h",
      "target": "http://127.0.0.1:11434", "api": "ollama-generate", "model": "m",
      "prompt": "p", "prompt_count": 1, "shape": "burst", "levels": ["1"], "duration_ms": null,
      "arrival": "poisson", "warmup_ms": 0, "seed": 0, "request_timeout_ms": 1000,
      "extra_body_json": "", "slo": {"tokens_per_s": 10.0, "ttft_s": null, "e2e_s": null},
      "stop_on_error_rate": null, "server_version": null, "simulator": null,
      "agents": [{"address": "a", "agent_id": "i", "version": "0.1.0", "hostname": "h",
                  "capabilities": [], "max_concurrency": 1, "in_process": true}],
      "warmup": null, "cycles": [{"model": "m", "level": "1"}], "stop_reason": null, "notes": []
    }"#;

    #[test]
    fn an_older_manifest_loads_for_its_settings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RUN_JSON), BEFORE_AGENTS).unwrap();
        let m: ManifestSettings = read_manifest(dir.path()).unwrap();
        assert_eq!(m.api, Api::OllamaGenerate);
        assert_eq!(m.status.as_str(), "complete");
        assert_eq!(m.agents[0].label, "");
        assert!(m.monitor.is_none() && m.split.is_none());
        assert_eq!(m.cycles.len(), 1);
        // Its cycles are not this version's summaries: the full read says so.
        let e = read_manifest::<CycleSummary>(dir.path()).unwrap_err();
        assert!(matches!(e, ManifestError::NotManifest(_)), "{e}");
    }

    #[test]
    fn missing_and_broken_manifests_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_manifest::<IgnoredAny>(dir.path()).unwrap_err();
        assert_eq!(e.to_string(), "run.json is missing");
        std::fs::write(dir.path().join(RUN_JSON), &BEFORE_AGENTS[..40]).unwrap();
        let e = read_manifest::<IgnoredAny>(dir.path()).unwrap_err();
        assert!(matches!(e, ManifestError::NotJson(_)), "{e}");
        std::fs::write(dir.path().join(RUN_JSON), "{\"api\": \"ollama\"}").unwrap();
        let e = read_manifest::<IgnoredAny>(dir.path()).unwrap_err();
        assert!(matches!(e, ManifestError::NotManifest(_)), "{e}");
    }

    #[test]
    fn status_names_are_the_manifests() {
        for s in [
            RunStatus::Running,
            RunStatus::Complete,
            RunStatus::Interrupted,
            RunStatus::Partial,
        ] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::from(s.as_str())
            );
        }
    }
}
