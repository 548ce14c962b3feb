//! The run-folder sink: creates the run's folder and writes its files as the run goes, in the
//! format `tokengun_common::run_dir` defines (names, layout, columns, the manifest). It stays in
//! the controller because it also owns `records.pb`, whose encoding is the proto crate's.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokengun_common::run_dir::{self, CyclesCsv, OutputError, RequestSummaryCsv};
use tokengun_common::{Api, CycleSummary, RequestRecord, path_safe};

pub use tokengun_common::run_dir::{Manifest, RunStatus};

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

/// Which level's folder a cycle writes: the model's, the group's within it, the agent's part.
pub struct LevelAt<'a> {
    pub api: Api,
    pub model: &'a str,
    /// The group's folder segment, empty for a run of one group.
    pub group: &'a str,
    pub level: &'a str,
    /// Several agents: this agent's folder inside the level's.
    pub agent: Option<&'a str>,
    /// The cycle's targets, which each record's `target_index` points into.
    pub targets: &'a [String],
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
        run_dir::write_throughput(
            &self.dir.join(run_dir::throughput_csv_name(r.request_id)),
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
        let cycles = CyclesCsv::create(&root.join(run_dir::CYCLES_CSV))?;
        let records = tokengun_proto::stored::RecordFile::create(&root.join(run_dir::RECORDS_PB))?;
        Ok(Self {
            root,
            cycles,
            records,
            throughput_csv: true,
        })
    }

    /// Opens an existing run folder to go on writing it (a resumed run).
    pub fn reopen(root: &Path) -> Result<Self, OutDirError> {
        let cycles = CyclesCsv::open_append(&root.join(run_dir::CYCLES_CSV))?;
        let records =
            tokengun_proto::stored::RecordFile::open_append(&root.join(run_dir::RECORDS_PB))?;
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
        run_dir::write_atomic(&self.root.join(run_dir::PLAN_JSON), &bytes)?;
        Ok(())
    }

    /// The run's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<run>/<api>/<model>/test_results_<level>`, the study's layout (`<level>` is the
    /// concurrency, or `<rate>rps` for open loops).
    pub fn level_dir(&self, api: Api, model: &str, level: &str) -> PathBuf {
        run_dir::level_dir(&self.root, api, model, level)
    }

    /// Opens a level's folder (with several agents, the agent's folder inside it) for writing as
    /// its requests end.
    pub fn begin_cycle(&self, at: &LevelAt<'_>) -> Result<CycleWriter, OutDirError> {
        let mut dir = run_dir::group_level_dir(&self.root, at.api, at.model, at.group, at.level);
        let agent = at.agent;
        if let Some(a) = agent {
            dir = run_dir::agent_dir(&dir, a);
        }
        std::fs::create_dir_all(&dir).map_err(|source| OutDirError::NotWritable {
            path: dir.clone(),
            source,
        })?;
        let summary = RequestSummaryCsv::create(
            &dir.join(run_dir::REQUEST_SUMMARY_CSV),
            at.targets.to_vec(),
        )?;
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
        run_dir::write_atomic(&self.root.join(run_dir::RUN_JSON), &bytes)?;
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
