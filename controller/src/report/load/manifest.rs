//! `run.json`: the run's settings, read for the report's heading (its cycles come from
//! cycles.csv); a missing or older manifest leaves them to cycles.csv and the folder's name.

use super::RunMeta;
use std::path::Path;
use tokengun_common::CycleSummary;
use tokengun_common::run_dir::{ManifestSettings, read_manifest};

/// The manifest, or `None` with a note saying why not.
pub(super) fn read(dir: &Path, notes: &mut Vec<String>) -> Option<ManifestSettings> {
    match read_manifest(dir) {
        Ok(m) => Some(m),
        Err(e) => {
            notes.push(format!("{e}; settings not shown"));
            None
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The settings: the manifest's, each falling back to the first cycles.csv row (model, shape,
/// SLO) or the folder's name (run id).
pub(super) fn meta(dir: &Path, m: Option<&ManifestSettings>, first: &CycleSummary) -> RunMeta {
    let folder = || {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    RunMeta {
        run_id: m.and_then(|m| non_empty(&m.run_id)).unwrap_or_else(folder),
        model: m
            .and_then(|m| non_empty(&m.model))
            .unwrap_or_else(|| first.model.clone()),
        target: m.map(|m| m.target.clone()).unwrap_or_default(),
        api: m.map(|m| m.api),
        shape: m.map_or_else(|| first.shape.clone(), |m| m.shape.as_str().to_string()),
        status: m.map(|m| m.status),
        started_at: m.map(|m| m.started_at.clone()).unwrap_or_default(),
        server_version: m.and_then(|m| m.server_version.clone()).unwrap_or_default(),
        slo: m.map_or(first.slo, |m| m.slo),
        stop_reason: m.and_then(|m| m.stop_reason.as_deref().and_then(non_empty)),
        workload: m.and_then(|m| m.workload.clone()),
        search: m.and_then(|m| m.search.clone()),
    }
}
