//! The run's folder on disk: layout, the study's per-cycle files, `cycles.csv` and `run.json`.

use crate::link::AgentInfo;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokengun_common::csv_out::{self, CyclesCsv, OutputError, RequestSummaryCsv};
use tokengun_common::{Api, Arrival, CycleSummary, LoadShape, RequestRecord, Slo, path_safe};

/// The output folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OutDirError {
    #[error("cannot write results under {path}: {source}; pass --out with a writable folder")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run folder {0} already exists; pass another --run-id (or --out)")]
    Exists(PathBuf),
    #[error(transparent)]
    Write(#[from] OutputError),
    #[error("cannot encode run.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Records(#[from] tokengun_proto::stored::StoredError),
}

/// Checks that `out` exists (creating it) and accepts files, before any load is sent.
pub fn probe_writable(out: &Path) -> Result<(), OutDirError> {
    let err = |source| OutDirError::NotWritable {
        path: out.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(out).map_err(err)?;
    let probe = out.join(format!(".tokengun-probe-{}", std::process::id()));
    std::fs::write(&probe, b"probe").map_err(err)?;
    std::fs::remove_file(&probe).map_err(err)?;
    Ok(())
}

/// A run id from the clock: `20261127T192130Z`.
pub fn default_run_id(now: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(now).to_string();
    s.replace(['-', ':'], "")
}

/// Where a run writes.
pub struct RunDir {
    root: PathBuf,
    cycles: CyclesCsv,
    /// `records.pb`: every record with its full timeline, compactly.
    records: tokengun_proto::stored::RecordFile,
    /// Write the study's per-request throughput CSVs too.
    throughput_csv: bool,
}

/// One level's files, written request by request as records arrive, so nothing waits in memory
/// for the level to end.
pub struct CycleWriter {
    dir: PathBuf,
    summary: RequestSummaryCsv,
    origin_unix_ns: i64,
    throughput_csv: bool,
}

impl CycleWriter {
    /// The wall-clock instant of the cycle's origin (for throughput timestamps).
    pub fn set_origin(&mut self, origin_unix_ns: i64) {
        self.origin_unix_ns = origin_unix_ns;
    }

    /// Writes one request: its `request_summary.csv` row and its throughput file.
    pub fn record(&mut self, r: &RequestRecord) -> Result<(), OutDirError> {
        self.summary.append(r)?;
        if !self.throughput_csv {
            return Ok(());
        }
        csv_out::write_throughput(
            &self
                .dir
                .join(format!("request_{}_throughput.csv", r.request_id)),
            r,
            self.origin_unix_ns,
        )?;
        Ok(())
    }

    /// Pushes buffered rows to disk (before the agent is told it may forget them).
    pub fn flush(&mut self) -> Result<(), OutDirError> {
        Ok(self.summary.flush()?)
    }
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
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

/// The `run.json` manifest.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Manifest {
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
    pub split: Option<String>,
    /// What was monitored besides the load (absent with --no-monitor).
    pub monitor: Option<crate::monitoring::MonitorInfo>,
    /// The warm-up phase's figures (not counted in `cycles`).
    pub warmup: Option<CycleSummary>,
    pub cycles: Vec<CycleSummary>,
    /// Why the sweep stopped before its last level (error-rate limit), if it did.
    pub stop_reason: Option<String>,
    pub notes: Vec<String>,
}

impl RunDir {
    /// Creates `<out>/<run_id>` (refusing to reuse one; with `suffix_if_taken`, a default id
    /// that is taken gets `-2`, `-3`, ...) and its `cycles.csv`.
    pub fn create(out: &Path, run_id: &str, suffix_if_taken: bool) -> Result<Self, OutDirError> {
        let base = path_safe(run_id);
        let mut n = 1;
        let root = loop {
            let name = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let root = out.join(name);
            match std::fs::create_dir(&root) {
                Ok(()) => break root,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AlreadyExists
                        && suffix_if_taken
                        && n < 1000 =>
                {
                    n += 1
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(OutDirError::Exists(root));
                }
                Err(source) => return Err(OutDirError::NotWritable { path: root, source }),
            }
        };
        let cycles = CyclesCsv::create(&root.join("cycles.csv"))?;
        let records = tokengun_proto::stored::RecordFile::create(&root.join("records.pb"))?;
        Ok(Self {
            root,
            cycles,
            records,
            throughput_csv: true,
        })
    }

    /// Opens an existing run folder to go on writing it (a resumed run).
    pub fn reopen(root: &Path) -> Result<Self, OutDirError> {
        let cycles = CyclesCsv::open_append(&root.join("cycles.csv"))?;
        let records = tokengun_proto::stored::RecordFile::open_append(&root.join("records.pb"))?;
        Ok(Self {
            root: root.to_path_buf(),
            cycles,
            records,
            throughput_csv: true,
        })
    }

    /// Writes `plan.json`: the compiled run configuration a resume starts from.
    pub fn write_plan(&self, plan: &impl Serialize) -> Result<(), OutDirError> {
        let bytes = serde_json::to_vec_pretty(plan)?;
        csv_out::write_atomic(&self.root.join("plan.json"), &bytes)?;
        Ok(())
    }

    /// The run's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<run>/<api>/<model>/test_results_<level>`, the study's layout (`<level>` is the
    /// concurrency, or `<rate>rps` for open loops).
    pub fn level_dir(&self, api: Api, model: &str, level: &str) -> PathBuf {
        self.root
            .join(api.family())
            .join(path_safe(model))
            .join(format!("test_results_{level}"))
    }

    /// Opens a level's folder (with several agents, the agent's folder inside it) for writing as
    /// its requests end.
    pub fn begin_cycle(
        &self,
        api: Api,
        model: &str,
        level: &str,
        agent: Option<&str>,
    ) -> Result<CycleWriter, OutDirError> {
        let mut dir = self.level_dir(api, model, level);
        if let Some(a) = agent {
            dir = dir.join(path_safe(a));
        }
        std::fs::create_dir_all(&dir).map_err(|source| OutDirError::NotWritable {
            path: dir.clone(),
            source,
        })?;
        let summary = RequestSummaryCsv::create(&dir.join("request_summary.csv"))?;
        Ok(CycleWriter {
            dir,
            summary,
            origin_unix_ns: 0,
            throughput_csv: self.throughput_csv,
        })
    }

    /// Whether levels get the study's per-request throughput CSVs (records.pb has the timelines
    /// either way).
    pub fn set_throughput_csv(&mut self, on: bool) {
        self.throughput_csv = on;
    }

    /// Appends one agent's record to `records.pb`.
    pub fn store(&mut self, agent: &str, r: &tokengun_common::Record) -> Result<(), OutDirError> {
        Ok(self.records.append(agent, r)?)
    }

    /// Pushes `records.pb` to the OS (with `sync`, to the disk).
    pub fn flush_records(&mut self, sync: bool) -> Result<(), OutDirError> {
        Ok(self.records.flush(sync)?)
    }

    /// Appends a finished cycle's row to `cycles.csv`.
    pub fn append_cycle(&mut self, summary: &CycleSummary) -> Result<(), OutDirError> {
        Ok(self.cycles.append(summary)?)
    }

    /// Writes `run.json` atomically.
    pub fn write_manifest(&self, m: &Manifest) -> Result<(), OutDirError> {
        let bytes = serde_json::to_vec_pretty(m)?;
        csv_out::write_atomic(&self.root.join("run.json"), &bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_path_friendly() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(default_run_id(t), "20231114T221320Z");
    }

    #[test]
    fn an_unwritable_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let e = probe_writable(&file.join("sub")).unwrap_err();
        assert!(e.to_string().contains("pass --out"), "{e}");
    }
}
