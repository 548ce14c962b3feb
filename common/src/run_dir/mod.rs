//! The run folder's format, owned here and only here: its file names and layout, `run.json`'s
//! manifest, every CSV's columns, the writers of the study's CSVs, and the typed readers the
//! report uses. The controller's run-folder sink writes through it; `tokengun report` reads
//! through it.
//!
//! ```text
//! <out>/<run_id>/
//!   run.json                      manifest (settings, agents, monitors, each cycle's figures)
//!   plan.json                     the compiled run configuration (what `resume` starts from)
//!   cycles.csv                    one row per finished level
//!   records.pb                    every request record with its timeline (tokengun-proto)
//!   power.csv, processes.csv      monitor readings, long format (when monitored)
//!   <family>/<model>/[<group>/]test_results_<level>/[<agent>/]
//!                                 (<group>: a run of several instance counts or server
//!                                 settings, e.g. `2-instances_OLLAMA_NUM_PARALLEL-4`)
//!     request_summary.csv         one row per request, the study's columns first
//!     request_<id>_throughput.csv one request's token timeline (unless --no-throughput-csv)
//! ```
//!
//! Readers are tolerant by design: a file from before a column existed still reads, the
//! column's figure absent (`None`, zero or empty); see each reader for what an absence reads as.
//!
//! To add a column: add it to its file's column list here (the writer and the reader both take
//! it from there), give its absence a meaning in old files, and extend the round-trip test.
//! To add a field to run.json: add it to [`Manifest`] with `#[serde(default)]` so older
//! manifests still load.

mod csv_file;
pub mod cycles;
mod cycles_server;
pub mod manifest;
pub mod monitor_files;
pub mod requests;
pub mod search;
pub mod workload;

pub use csv_file::{OutputError, ReadError, write_atomic};
pub use cycles::{CyclesCsv, cycle_ids, cycles_header, cycles_row, read_cycles};
pub use manifest::{
    AgentInfo, GroupInfo, Manifest, ManifestError, ManifestSettings, MonitorInfo, RunStatus,
    ServerProcess, read_manifest,
};
pub use monitor_files::{
    POWER_HEADER, PROCESSES_HEADER, PowerRow, ProcessRow, read_power, read_processes,
    read_server_metrics,
};
pub use requests::{
    REQUEST_SUMMARY_HEADER, RequestRow, RequestSummaryCsv, THROUGHPUT_HEADER, read_request_summary,
    request_summary_row, timestamp, write_throughput,
};
pub use search::{SearchProbe, SearchRecord};
pub use workload::WorkloadInfo;

use crate::{Api, path_safe};
use std::path::{Path, PathBuf};

/// The manifest.
pub const RUN_JSON: &str = "run.json";
/// The compiled run configuration a resume starts from.
pub const PLAN_JSON: &str = "plan.json";
/// One row per finished level.
pub const CYCLES_CSV: &str = "cycles.csv";
/// Every record with its full timeline.
pub const RECORDS_PB: &str = "records.pb";
/// Power, clock and busy readings of the power sources.
pub const POWER_CSV: &str = "power.csv";
/// Process and machine readings.
pub const PROCESSES_CSV: &str = "processes.csv";
/// The server's own Prometheus metrics over the run (power.csv's columns: `source` is
/// `prometheus`, `metric` the metric's name), when its endpoint answered.
pub const SERVER_METRICS_CSV: &str = "server_metrics.csv";
/// One level's (or one agent's part of a level's) requests.
pub const REQUEST_SUMMARY_CSV: &str = "request_summary.csv";
/// The `cycle` column of the monitor files while the idle baseline is measured.
pub const BASELINE_LABEL: &str = "baseline";

/// The `cycle` column of the monitor files for a level: its label, prefixed in a run of several
/// groups by the group's (`a · 2 instances|8`), so the same level of two groups is two cycles.
pub fn monitor_label(group_label: &str, level: &str) -> String {
    if group_label.is_empty() {
        level.to_string()
    } else {
        format!("{group_label}|{level}")
    }
}

/// `request_<id>_throughput.csv`: one request's token timeline.
pub fn throughput_csv_name(request_id: u32) -> String {
    format!("request_{request_id}_throughput.csv")
}

/// `test_results_<level>`: a level's folder (`<level>` is the concurrency, or `<rate>rps`).
pub fn level_dir_name(level: &str) -> String {
    format!("test_results_{level}")
}

/// `<run>/<api family>/<model>/test_results_<level>`, the study's layout.
pub fn level_dir(run: &Path, api: Api, model: &str, level: &str) -> PathBuf {
    group_level_dir(run, api, model, "", level)
}

/// A level's folder in a run of several groups: `<run>/<family>/<model>/<group>/test_results_<level>`
/// (`group` empty: the study's layout). `group` is a folder-safe segment (`CycleSummary::group`).
pub fn group_level_dir(run: &Path, api: Api, model: &str, group: &str, level: &str) -> PathBuf {
    let mut d = run.join(api.family()).join(path_safe(model));
    if !group.is_empty() {
        d = d.join(path_safe(group));
    }
    d.join(level_dir_name(level))
}

/// One agent's part of a level, when several agents ran it.
pub fn agent_dir(level_dir: &Path, agent: &str) -> PathBuf {
    level_dir.join(path_safe(agent))
}

/// A level's folder in a run being read: `<run>/<family>/<model>/test_results_<level>` when the
/// family (from the manifest's API) is known and that folder exists, else the first of any
/// `<run>/*/*/test_results_<level>` in name order (a run whose run.json is missing or old).
pub fn find_level_dir(
    run: &Path,
    family: Option<&str>,
    model: &str,
    group: &str,
    level: &str,
) -> Option<PathBuf> {
    let name = level_dir_name(level);
    if let Some(f) = family {
        let mut d = run.join(f).join(path_safe(model));
        if !group.is_empty() {
            d = d.join(path_safe(group));
        }
        let d = d.join(&name);
        if d.is_dir() {
            return Some(d);
        }
    }
    if !group.is_empty() {
        return None;
    }
    let mut found = Vec::new();
    for fam in std::fs::read_dir(run).ok()?.flatten() {
        let Ok(models) = std::fs::read_dir(fam.path()) else {
            continue;
        };
        for md in models.flatten() {
            let d = md.path().join(&name);
            if d.is_dir() {
                found.push(d);
            }
        }
    }
    found.sort();
    found.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_studys() {
        let d = level_dir(Path::new("/r"), Api::OpenaiChat, "deepseek-r1:7b", "2.5rps");
        assert_eq!(d, Path::new("/r/openai/deepseek-r1-7b/test_results_2.5rps"));
        assert_eq!(agent_dir(&d, "agent 1"), d.join("agent-1"));
        assert_eq!(throughput_csv_name(7), "request_7_throughput.csv");
    }

    #[test]
    fn a_level_folder_is_found_without_the_family() {
        let run = tempfile::tempdir().unwrap();
        let d = level_dir(run.path(), Api::OllamaChat, "m:1", "4");
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(
            find_level_dir(run.path(), Some("ollama"), "m:1", "", "4"),
            Some(d.clone())
        );
        assert_eq!(find_level_dir(run.path(), None, "other", "", "4"), Some(d));
        assert_eq!(find_level_dir(run.path(), None, "m:1", "", "8"), None);
        let g = group_level_dir(run.path(), Api::OllamaChat, "m:1", "2-instances", "4");
        assert_eq!(g, run.path().join("ollama/m-1/2-instances/test_results_4"));
        std::fs::create_dir_all(&g).unwrap();
        assert_eq!(
            find_level_dir(run.path(), Some("ollama"), "m:1", "2-instances", "4"),
            Some(g)
        );
    }
}
