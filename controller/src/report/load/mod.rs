//! Reads a run folder back, only through `tokengun_common::run_dir`, into the tables the report is
//! built from: one module per file kind (run.json, cycles.csv, each level's request_summary.csv,
//! power.csv, processes.csv, server_metrics.csv).
//!
//! Tolerant by design: an old run, or one from before a column existed, still loads; a figure
//! that is absent stays absent, and what is missing is said in `RunData::notes`.

mod cycles;
mod manifest;
mod ollama_ps;
mod power;
mod processes;
mod requests;
mod server_metrics;

pub use requests::{max_overlap, per_target};

use super::ReportError;
use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use tokengun_common::run_dir::{self, RunStatus};
use tokengun_common::{Api, CycleSummary, LoadShape, Slo};

/// One request of a level, as far as the timeline and queueing need it (seconds from the
/// cycle's origin).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestSpan {
    pub request_id: u64,
    pub intended_s: f64,
    /// When the request was handed to the HTTP client.
    pub sent_s: f64,
    pub first_token_s: Option<f64>,
    pub end_s: f64,
    pub completed: bool,
}

/// One level of the sweep: its cycles.csv row, read back as the [`CycleSummary`] that wrote it
/// (a `LevelRow` derefs to it: `level.failed`), and what the report adds from the other files.
///
/// Figures an older cycles.csv lacks are filled in the summary from the other files where they
/// can be: the mean per-request rate from request_summary.csv, energy and GPU figures from
/// power.csv, server CPU and memory from processes.csv.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelRow {
    pub cycle: CycleSummary,
    /// The level's label, as in cycles.csv (`cycle.level`): `8`, or `2.5rps`.
    pub label: String,
    /// The x of every chart: the concurrency, or the rate (requests/s) for open loops.
    pub x: f64,
    /// 10th percentile of the per-request decode rate (the slowest tenth), tokens/s.
    pub request_tokens_per_s_p10: Option<f64>,
    /// Whole-machine CPU busy, 0..100 (processes.csv `machine` rows).
    pub machine_cpu_pct_mean: Option<f64>,
    /// The machine's logical CPUs (processes.csv `cpu_count`), when recorded.
    pub machine_cpu_count: Option<f64>,
    /// Peak machine memory used over its total, 0..1.
    pub machine_mem_used_peak_frac: Option<f64>,
    /// Most requests streaming at once (first token to end), from request_summary.csv.
    pub max_streaming: Option<u32>,
    /// Most requests the server itself said were waiting during the level (server_metrics.csv:
    /// `llamacpp:requests_deferred`, `vllm:num_requests_waiting`, ...).
    pub server_waiting_max: Option<f64>,
    /// The level's requests (empty when its request_summary.csv is missing).
    pub spans: Vec<RequestSpan>,
    /// Prompt tokens meant, counted by the server, cached; TTFT by conversation turn.
    pub prompt: crate::report::workload::PromptFigures,
    /// Several server instances: each one's part of the level (request_summary.csv's Target).
    pub per_target: Vec<TargetRow>,
    /// Ollama: the largest share of a loaded model outside GPU memory during the level, 0..1
    /// (`/api/ps` size_vram against size).
    pub cpu_share_max: Option<f64>,
    /// Ollama: models that were unloaded and loaded again during the level.
    pub reloaded_models: Vec<String>,
    /// Each watched process's mean power over the level (its energy counter's rise over the
    /// time between its first and last row), W, by `role name (pid)`: macOS `ri_energy_nj`.
    pub process_power_w: Vec<(String, f64)>,
    /// Highest thermal pressure during the level (0 nominal .. 4 sleeping; processes.csv's
    /// machine rows or powermetrics' readings).
    pub thermal_pressure_max: Option<f64>,
    /// Highest memory pressure during the level (0 normal, 1 warn, 2 critical).
    pub mem_pressure_max: Option<f64>,
    /// Swap in use at the level's peak less at its start, bytes.
    pub swap_growth_bytes: Option<f64>,
}

/// One server instance's part of a level.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRow {
    pub target: String,
    pub requests: u32,
    pub failed: u32,
    pub output_tokens: u64,
    /// Median TTFT of its completed requests, seconds.
    pub ttft_p50_s: Option<f64>,
}

impl Default for LevelRow {
    fn default() -> Self {
        Self {
            cycle: run_dir::cycles::blank_summary(),
            label: String::new(),
            x: 0.0,
            request_tokens_per_s_p10: None,
            machine_cpu_pct_mean: None,
            machine_cpu_count: None,
            machine_mem_used_peak_frac: None,
            max_streaming: None,
            server_waiting_max: None,
            spans: Vec::new(),
            prompt: Default::default(),
            per_target: Vec::new(),
            cpu_share_max: None,
            reloaded_models: Vec::new(),
            process_power_w: Vec::new(),
            thermal_pressure_max: None,
            mem_pressure_max: None,
            swap_growth_bytes: None,
        }
    }
}

impl Deref for LevelRow {
    type Target = CycleSummary;

    fn deref(&self) -> &CycleSummary {
        &self.cycle
    }
}

impl LevelRow {
    /// The key of the monitor files' rows of this level (its group's and its label's).
    pub fn key(&self) -> String {
        label_key(&run_dir::monitor_label(&self.group_label, &self.label))
    }

    /// Share of the level's requests that met the SLO (goodput / requests), 0..=1.
    pub fn good_share(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            f64::from(self.goodput_requests) / f64::from(self.requests)
        }
    }

    /// Mean power over the level, W, when it was measured.
    pub fn mean_power_w(&self) -> Option<f64> {
        self.energy.as_ref().map(|e| e.mean_power_w)
    }

    /// Output tokens per joule, when power was measured and tokens came.
    pub fn tokens_per_joule(&self) -> Option<f64> {
        self.energy.as_ref().and_then(|e| e.tokens_per_joule)
    }

    /// The server's processes' mean CPU, percent of one core.
    pub fn server_cpu_pct_mean(&self) -> Option<f64> {
        self.server.as_ref().and_then(|s| s.cpu_pct_mean)
    }

    /// The watched server processes' power over the level, summed, W (where they have energy
    /// counters).
    pub fn server_power_w(&self) -> Option<f64> {
        (!self.process_power_w.is_empty()).then(|| self.process_power_w.iter().map(|p| p.1).sum())
    }

    /// The server processes' share of the measured power (the SoC's, on a Mac), 0..1.
    pub fn server_power_share(&self) -> Option<f64> {
        let all = self.mean_power_w().filter(|w| *w > 0.0)?;
        Some(self.server_power_w()? / all)
    }

    /// The server processes' energy per output token: their power over the level's duration.
    pub fn server_joules_per_token(&self) -> Option<f64> {
        (self.output_tokens > 0)
            .then(|| {
                self.server_power_w()
                    .map(|w| w * self.duration_s / self.output_tokens as f64)
            })
            .flatten()
    }

    /// The server's processes' peak resident memory, bytes.
    pub fn server_rss_peak_bytes(&self) -> Option<f64> {
        self.server
            .as_ref()
            .and_then(|s| s.rss_peak_bytes)
            .map(|b| b as f64)
    }
}

/// A time series of one device or process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// e.g. `nvml gpu0` or `server ollama (1234)`.
    pub name: String,
    /// (elapsed_s, value).
    pub points: Vec<(f64, f64)>,
}

/// What the run's monitors recorded over time.
#[derive(Debug, Clone, Default)]
pub struct Timeseries {
    pub power_w: Vec<Series>,
    pub freq_mhz: Vec<Series>,
    pub cpu_pct: Vec<Series>,
    pub rss_bytes: Vec<Series>,
    /// The server's own gauges of requests running and waiting (server_metrics.csv).
    pub server_queue: Vec<Series>,
    /// The server's KV-cache use, percent (server_metrics.csv).
    pub server_kv_pct: Vec<Series>,
    /// Each cycle's first and last elapsed second, by label (`baseline` included).
    pub cycle_spans: Vec<(String, f64, f64)>,
}

/// The run's settings the report states: from run.json, else from cycles.csv and the folder.
#[derive(Debug, Clone, Default)]
pub struct RunMeta {
    pub run_id: String,
    pub model: String,
    pub target: String,
    pub api: Option<Api>,
    /// `burst`, `closed` or `open` (empty in the oldest runs).
    pub shape: String,
    pub status: Option<RunStatus>,
    pub started_at: String,
    pub server_version: String,
    pub slo: Slo,
    pub stop_reason: Option<String>,
    /// What the workload was (run.json's `workload`, absent in older runs).
    pub workload: Option<tokengun_common::run_dir::WorkloadInfo>,
    /// An SLO search's probes and answer (run.json's `search`).
    pub search: Option<tokengun_common::run_dir::SearchRecord>,
}

impl RunMeta {
    /// True for open loops, whose levels are rates.
    pub fn is_rate_sweep(&self) -> bool {
        self.shape == LoadShape::Open.as_str()
    }
}

/// Everything the report reads from a run folder.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    pub dir: PathBuf,
    pub meta: RunMeta,
    pub levels: Vec<LevelRow>,
    pub series: Timeseries,
    /// What was missing or skipped, said in the report.
    pub notes: Vec<String>,
}

/// The numeric part of a level label, so `0.5rps`, `0.5/s` and `0.5` name the same level (in
/// a run of several groups, after the group's name: `g|0.5`).
pub fn label_key(label: &str) -> String {
    if let Some((group, level)) = label.split_once('|') {
        return format!("{group}|{}", label_key(level));
    }
    let t = label.trim();
    let t = t
        .strip_suffix("rps")
        .or_else(|| t.strip_suffix("/s"))
        .unwrap_or(t);
    match t.parse::<f64>() {
        Ok(v) => tokengun_common::plan::format_rate(v),
        Err(_) => t.to_string(),
    }
}

/// Widens a cycle's `[first, last]` elapsed seconds to take in `t` (rows between phases, with
/// no cycle, are not spans).
fn widen_span(spans: &mut BTreeMap<String, (f64, f64)>, cycle: &str, t: f64) {
    if cycle.is_empty() {
        return;
    }
    let s = spans.entry(cycle.to_string()).or_insert((t, t));
    s.0 = s.0.min(t);
    s.1 = s.1.max(t);
}

/// Adds one file's cycle spans to the run's, merging a label both files have.
fn merge_spans(into: &mut Vec<(String, f64, f64)>, spans: BTreeMap<String, (f64, f64)>) {
    for (label, (a, b)) in spans {
        match into.iter_mut().find(|(l, _, _)| *l == label) {
            Some(s) => {
                s.1 = s.1.min(a);
                s.2 = s.2.max(b);
            }
            None => into.push((label, a, b)),
        }
    }
    into.sort_by(|a, b| a.1.total_cmp(&b.1));
}

/// `" @<agent>"` when a row names its agent.
fn at_agent(agent: &str) -> String {
    if agent.is_empty() {
        String::new()
    } else {
        format!(" @{agent}")
    }
}

/// Series by name, in name order.
fn series(by_name: BTreeMap<String, Vec<(f64, f64)>>) -> Vec<Series> {
    by_name
        .into_iter()
        .map(|(name, points)| Series { name, points })
        .collect()
}

/// Loads a run folder. Fails only when there is nothing to report on (no cycles.csv, or no level
/// in it); every other absence is a note.
pub fn load_run(dir: &Path) -> Result<RunData, ReportError> {
    if !dir.is_dir() {
        return Err(ReportError::NotARun {
            dir: dir.to_path_buf(),
            why: "no such folder".into(),
        });
    }
    let mut data = RunData {
        dir: dir.to_path_buf(),
        ..RunData::default()
    };
    let manifest = manifest::read(dir, &mut data.notes);
    let summaries = cycles::read(dir)?;
    let first = summaries
        .first()
        .ok_or_else(|| ReportError::NoLevels(dir.to_path_buf()))?;
    data.meta = manifest::meta(dir, manifest.as_ref(), first);
    data.levels = cycles::levels(summaries, data.meta.is_rate_sweep(), &mut data.notes);
    if data.levels.is_empty() {
        return Err(ReportError::NoLevels(dir.to_path_buf()));
    }
    let family = manifest.as_ref().map(|m| m.api.family());
    requests::add(
        dir,
        family,
        &data.meta.model,
        &mut data.levels,
        &mut data.notes,
    )?;
    power::add(dir, &mut data)?;
    processes::add(dir, &mut data)?;
    server_metrics::add(dir, &mut data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_labels_of_rates_match_across_files() {
        assert_eq!(label_key("0.5rps"), "0.5");
        assert_eq!(label_key("0.5/s"), "0.5");
        assert_eq!(label_key("8"), "8");
        assert_eq!(label_key("baseline"), "baseline");
    }
}
