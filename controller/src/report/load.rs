//! Reads a run folder back (run.json, cycles.csv, each level's request_summary.csv, and
//! power.csv / processes.csv when present) into the tables the report is built from.
//!
//! Tolerant by design: an old run, or one from before a column existed, still loads; a column
//! that is absent or empty becomes `None`, and what is missing is said in `RunData::notes`.

use super::ReportError;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tokengun_common::path_safe;

/// Latency percentiles of one level, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pct {
    pub p50_s: Option<f64>,
    pub p90_s: Option<f64>,
    pub p99_s: Option<f64>,
}

/// Power and energy of one level (from cycles.csv, or integrated from power.csv).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LevelPower {
    pub mean_power_w: Option<f64>,
    pub energy_j: Option<f64>,
    pub joules_per_token: Option<f64>,
    pub tokens_per_joule: Option<f64>,
    pub baseline_power_w: Option<f64>,
    pub net_tokens_per_joule: Option<f64>,
    /// `counter`, `integrated`, or `power.csv mean` when the report computed it itself.
    pub method: Option<String>,
}

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

/// One level of the sweep: a row of cycles.csv with what the report adds from other files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LevelRow {
    /// As in cycles.csv: `8`, or `2.5rps`.
    pub label: String,
    /// The x of every chart: the concurrency, or the rate (requests/s) for open loops.
    pub x: f64,
    pub requests: u32,
    pub completed: u32,
    pub failed: u32,
    /// 0..=1.
    pub error_rate: f64,
    pub duration_s: f64,
    pub output_tokens: u64,
    pub aggregate_tokens_per_s: f64,
    pub requests_per_s: f64,
    /// Most requests in flight at once.
    pub peak_concurrency: Option<u32>,
    /// Mean per-request decode rate, tokens/s.
    pub request_tokens_per_s_mean: Option<f64>,
    /// 10th percentile of the per-request decode rate (the slowest tenth), tokens/s.
    pub request_tokens_per_s_p10: Option<f64>,
    pub ttft: Pct,
    pub e2e: Pct,
    pub goodput_requests: u32,
    pub goodput_requests_per_s: f64,
    pub errors_by_kind: String,
    pub partial: bool,
    pub schedule_valid: bool,
    pub power: LevelPower,
    /// Server (and runner) process CPU, percent of one core.
    pub server_cpu_pct_mean: Option<f64>,
    pub server_cpu_pct_peak: Option<f64>,
    pub server_rss_peak_bytes: Option<f64>,
    /// Whole-machine CPU busy, 0..100 (processes.csv `machine` rows).
    pub machine_cpu_pct_mean: Option<f64>,
    /// The machine's logical CPUs (processes.csv `cpu_count`), when recorded.
    pub machine_cpu_count: Option<f64>,
    /// Peak machine memory used over its total, 0..1.
    pub machine_mem_used_peak_frac: Option<f64>,
    pub gpu_busy_pct_mean: Option<f64>,
    pub gpu_freq_mhz_mean: Option<f64>,
    /// Most requests streaming at once (first token to end), from request_summary.csv.
    pub max_streaming: Option<u32>,
    /// The level's requests (empty when its request_summary.csv is missing).
    pub spans: Vec<RequestSpan>,
}

impl LevelRow {
    /// Share of the level's requests that met the SLO (goodput / requests), 0..=1.
    pub fn good_share(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            f64::from(self.goodput_requests) / f64::from(self.requests)
        }
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
    /// Each cycle's first and last elapsed second, by label (`baseline` included).
    pub cycle_spans: Vec<(String, f64, f64)>,
}

/// The run's settings the report states.
#[derive(Debug, Clone, Default)]
pub struct RunMeta {
    pub run_id: String,
    pub model: String,
    pub target: String,
    pub api: String,
    pub shape: String,
    pub status: String,
    pub started_at: String,
    pub server_version: String,
    pub slo_tokens_per_s: Option<f64>,
    pub slo_ttft_s: Option<f64>,
    pub slo_e2e_s: Option<f64>,
    pub stop_reason: Option<String>,
}

impl RunMeta {
    /// True for open loops, whose levels are rates.
    pub fn is_rate_sweep(&self) -> bool {
        self.shape == "open"
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

type Row = HashMap<String, String>;

fn read_rows(path: &Path) -> Result<Vec<Row>, ReportError> {
    let bad = |e: csv::Error| ReportError::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut r = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(bad)?;
    let headers = r.headers().map_err(bad)?.clone();
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(bad)?;
        rows.push(
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.trim().to_string(), v.trim().to_string()))
                .collect(),
        );
    }
    Ok(rows)
}

/// A number cell: `None` when the column is absent, empty or not a finite number.
fn num(row: &Row, col: &str) -> Option<f64> {
    row.get(col)
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

fn text(row: &Row, col: &str) -> String {
    row.get(col).cloned().unwrap_or_default()
}

fn count(row: &Row, col: &str) -> u32 {
    num(row, col).map_or(0, |v| v.max(0.0).round() as u32)
}

fn pct(row: &Row, name: &str) -> Pct {
    Pct {
        p50_s: num(row, &format!("{name}_p50_s")),
        p90_s: num(row, &format!("{name}_p90_s")),
        p99_s: num(row, &format!("{name}_p99_s")),
    }
}

/// The numeric part of a level label, so `0.5rps`, `0.5/s` and `0.5` name the same level.
pub fn label_key(label: &str) -> String {
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

fn json_str(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
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
    let manifest: Option<serde_json::Value> = match std::fs::read(dir.join("run.json")) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                data.notes.push(format!(
                    "run.json is not valid JSON ({e}); settings not shown"
                ));
                None
            }
        },
        Err(_) => {
            data.notes
                .push("run.json is missing; settings not shown".into());
            None
        }
    };
    let cycles_path = dir.join("cycles.csv");
    if !cycles_path.is_file() {
        return Err(ReportError::NotARun {
            dir: dir.to_path_buf(),
            why: "it has no cycles.csv".into(),
        });
    }
    let rows = read_rows(&cycles_path)?;
    for col in ["level", "requests", "aggregate_tokens_per_s"] {
        if rows.first().is_some_and(|r| !r.contains_key(col)) {
            return Err(ReportError::Csv {
                path: cycles_path.clone(),
                message: format!("column {col:?} is missing; is this a tokengun cycles.csv?"),
            });
        }
    }
    if rows.is_empty() {
        return Err(ReportError::NoLevels(dir.to_path_buf()));
    }
    let m = manifest.unwrap_or(serde_json::Value::Null);
    let first = &rows[0];
    let slo = m.get("slo");
    data.meta = RunMeta {
        run_id: Some(json_str(&m, "run_id"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }),
        model: Some(json_str(&m, "model"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| text(first, "model")),
        target: json_str(&m, "target"),
        api: json_str(&m, "api"),
        shape: Some(json_str(&m, "shape"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| text(first, "shape")),
        status: json_str(&m, "status"),
        started_at: json_str(&m, "started_at"),
        server_version: json_str(&m, "server_version"),
        slo_tokens_per_s: slo
            .and_then(|s| s.get("tokens_per_s"))
            .and_then(serde_json::Value::as_f64)
            .or_else(|| num(first, "slo_tokens_per_s")),
        slo_ttft_s: slo
            .and_then(|s| s.get("ttft_s"))
            .and_then(serde_json::Value::as_f64)
            .or_else(|| num(first, "slo_ttft_s")),
        slo_e2e_s: slo
            .and_then(|s| s.get("e2e_s"))
            .and_then(serde_json::Value::as_f64)
            .or_else(|| num(first, "slo_e2e_s")),
        stop_reason: Some(json_str(&m, "stop_reason")).filter(|s| !s.is_empty()),
    };
    let rate_sweep = data.meta.is_rate_sweep();
    for row in &rows {
        let label = text(row, "level");
        let x = if rate_sweep {
            num(row, "rate_per_s").or_else(|| label_key(&label).parse().ok())
        } else {
            num(row, "concurrency").or_else(|| label.parse().ok())
        };
        let Some(x) = x.filter(|x| *x > 0.0) else {
            data.notes.push(format!(
                "cycles.csv level {label:?} has no usable concurrency or rate; left out"
            ));
            continue;
        };
        let requests = count(row, "requests");
        data.levels.push(LevelRow {
            label: label.clone(),
            x,
            requests,
            completed: count(row, "completed"),
            failed: count(row, "failed"),
            error_rate: num(row, "error_rate").unwrap_or(0.0),
            duration_s: num(row, "duration_s").unwrap_or(0.0),
            output_tokens: num(row, "output_tokens").map_or(0, |v| v.max(0.0) as u64),
            aggregate_tokens_per_s: num(row, "aggregate_tokens_per_s").unwrap_or(0.0),
            requests_per_s: num(row, "requests_per_s").unwrap_or(0.0),
            peak_concurrency: num(row, "peak_concurrency").map(|v| v.max(0.0) as u32),
            request_tokens_per_s_mean: num(row, "mean_request_tokens_per_s"),
            request_tokens_per_s_p10: None,
            ttft: pct(row, "ttft"),
            e2e: pct(row, "e2e"),
            goodput_requests: count(row, "goodput_requests"),
            goodput_requests_per_s: num(row, "goodput_requests_per_s").unwrap_or(0.0),
            errors_by_kind: text(row, "errors_by_kind"),
            partial: text(row, "partial") == "true",
            schedule_valid: text(row, "schedule_valid") != "false",
            power: LevelPower {
                mean_power_w: num(row, "mean_power_w"),
                energy_j: num(row, "energy_j"),
                joules_per_token: num(row, "joules_per_token"),
                tokens_per_joule: num(row, "tokens_per_joule"),
                baseline_power_w: num(row, "baseline_power_w"),
                net_tokens_per_joule: num(row, "net_tokens_per_joule"),
                method: Some(text(row, "energy_method")).filter(|s| !s.is_empty()),
            },
            server_cpu_pct_mean: num(row, "server_cpu_pct_mean"),
            server_cpu_pct_peak: num(row, "server_cpu_pct_peak"),
            server_rss_peak_bytes: num(row, "server_rss_peak_bytes"),
            machine_cpu_pct_mean: None,
            machine_cpu_count: None,
            machine_mem_used_peak_frac: None,
            gpu_busy_pct_mean: num(row, "gpu_busy_pct_mean"),
            gpu_freq_mhz_mean: num(row, "gpu_freq_mhz_mean"),
            max_streaming: None,
            spans: Vec::new(),
        });
    }
    if data.levels.is_empty() {
        return Err(ReportError::NoLevels(dir.to_path_buf()));
    }
    let family_model = (
        m.get("api")
            .and_then(serde_json::Value::as_str)
            .and_then(|a| a.split('-').next())
            .map(str::to_string),
        path_safe(&data.meta.model),
    );
    let mut missing = Vec::new();
    for level in &mut data.levels {
        match find_level_dir(dir, &family_model, &level.label) {
            Some(ld) => {
                load_requests(&ld.join("request_summary.csv"), level)?;
            }
            None => missing.push(level.label.clone()),
        }
    }
    if !missing.is_empty() {
        data.notes.push(format!(
            "no request_summary.csv for level(s) {}: their per-request figures are left out",
            missing.join(", ")
        ));
    }
    load_power(dir, &mut data)?;
    load_processes(dir, &mut data)?;
    Ok(data)
}

/// `<run>/<family>/<model>/test_results_<label>`, or any `<run>/*/*/test_results_<label>`.
fn find_level_dir(
    run: &Path,
    (family, model): &(Option<String>, String),
    label: &str,
) -> Option<PathBuf> {
    let name = format!("test_results_{label}");
    if let Some(f) = family {
        let d = run.join(f).join(model).join(&name);
        if d.is_dir() {
            return Some(d);
        }
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

fn load_requests(path: &Path, level: &mut LevelRow) -> Result<(), ReportError> {
    if !path.is_file() {
        return Ok(());
    }
    let rows = read_rows(path)?;
    let mut rates = Vec::new();
    for row in &rows {
        let completed = text(row, "Status") == "Completed";
        if completed {
            if let Some(r) = num(row, "TokensPerSecond") {
                rates.push(r);
            }
        }
        let (Some(intended_s), Some(end_s)) = (num(row, "IntendedStart"), num(row, "End")) else {
            continue;
        };
        level.spans.push(RequestSpan {
            request_id: num(row, "RequestID").map_or(0, |v| v.max(0.0) as u64),
            intended_s,
            sent_s: num(row, "Sent").unwrap_or(intended_s),
            first_token_s: num(row, "FirstToken"),
            end_s,
            completed,
        });
    }
    // By intended start, then by first token: a burst's queue shows as a staircase.
    level.spans.sort_by(|a, b| {
        a.intended_s
            .total_cmp(&b.intended_s)
            .then(
                a.first_token_s
                    .unwrap_or(a.end_s)
                    .total_cmp(&b.first_token_s.unwrap_or(b.end_s)),
            )
            .then(a.request_id.cmp(&b.request_id))
    });
    if !rates.is_empty() {
        rates.sort_by(f64::total_cmp);
        // Nearest rank: the value below which a tenth of the requests fall.
        let idx = ((rates.len() as f64 * 0.1).ceil() as usize).clamp(1, rates.len()) - 1;
        level.request_tokens_per_s_p10 = Some(rates[idx]);
        if level.request_tokens_per_s_mean.is_none() {
            level.request_tokens_per_s_mean = Some(rates.iter().sum::<f64>() / rates.len() as f64);
        }
    }
    level.max_streaming = max_overlap(
        level
            .spans
            .iter()
            .filter_map(|s| s.first_token_s.map(|f| (f, s.end_s))),
    );
    Ok(())
}

/// Most intervals open at once (an end at the same instant as a start does not overlap it).
pub fn max_overlap(intervals: impl Iterator<Item = (f64, f64)>) -> Option<u32> {
    let mut events: Vec<(f64, i32)> = Vec::new();
    for (a, b) in intervals {
        events.push((a, 1));
        events.push((b.max(a), -1));
    }
    if events.is_empty() {
        return None;
    }
    // Ends sort before starts at the same instant.
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut open, mut most) = (0i32, 0i32);
    for (_, d) in events {
        open += d;
        most = most.max(open);
    }
    u32::try_from(most).ok()
}

/// Per-level and over-time figures from `power.csv` (optional).
fn load_power(dir: &Path, data: &mut RunData) -> Result<(), ReportError> {
    let path = dir.join("power.csv");
    if !path.is_file() {
        data.notes
            .push("no power.csv: power and energy are not reported".into());
        return Ok(());
    }
    let rows = read_rows(&path)?;
    // (source device) -> points, per metric.
    let mut power: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut freq: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    // Per cycle key and device: sums and counts of power_w, busy_pct, freq_mhz.
    let mut per_cycle: HashMap<(String, &'static str, String), (f64, u32)> = HashMap::new();
    let mut spans: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for row in &rows {
        let (Some(t), Some(v)) = (num(row, "elapsed_s"), num(row, "value")) else {
            continue;
        };
        let device = format!(
            "{} {}{}",
            text(row, "source"),
            text(row, "device"),
            match text(row, "agent") {
                a if a.is_empty() => String::new(),
                a => format!(" @{a}"),
            }
        );
        let cycle = text(row, "cycle");
        if !cycle.is_empty() {
            let s = spans.entry(cycle.clone()).or_insert((t, t));
            s.0 = s.0.min(t);
            s.1 = s.1.max(t);
        }
        let metric: &'static str = match text(row, "metric").as_str() {
            "power_w" => "power_w",
            "freq_mhz" => "freq_mhz",
            "busy_pct" => "busy_pct",
            _ => continue,
        };
        match metric {
            "power_w" => power.entry(device.clone()).or_default().push((t, v)),
            "freq_mhz" => freq.entry(device.clone()).or_default().push((t, v)),
            _ => {}
        }
        if !cycle.is_empty() {
            let e = per_cycle
                .entry((label_key(&cycle), metric, device))
                .or_insert((0.0, 0));
            e.0 += v;
            e.1 += 1;
        }
    }
    // The sum over devices of each device's mean, for one cycle and metric.
    let cycle_sum = |key: &str, metric: &str, mean_of_devices: bool| -> Option<f64> {
        let vals: Vec<f64> = per_cycle
            .iter()
            .filter(|((c, m, _), _)| c == key && *m == metric)
            .map(|(_, (s, n))| s / f64::from(*n))
            .collect();
        if vals.is_empty() {
            None
        } else if mean_of_devices {
            Some(vals.iter().sum::<f64>() / vals.len() as f64)
        } else {
            Some(vals.iter().sum())
        }
    };
    let baseline = cycle_sum("baseline", "power_w", false);
    let mut filled = false;
    for level in &mut data.levels {
        let key = label_key(&level.label);
        if level.power.mean_power_w.is_none() {
            if let Some(w) = cycle_sum(&key, "power_w", false) {
                filled = true;
                let energy_j = w * level.duration_s;
                level.power.mean_power_w = Some(w);
                level.power.energy_j = Some(energy_j);
                level.power.method = Some("power.csv mean".into());
                if level.output_tokens > 0 && energy_j > 0.0 {
                    level.power.joules_per_token = Some(energy_j / level.output_tokens as f64);
                    level.power.tokens_per_joule = Some(level.output_tokens as f64 / energy_j);
                }
                if let Some(b) = baseline {
                    level.power.baseline_power_w = Some(b);
                    let net_j = (w - b) * level.duration_s;
                    if net_j > 0.0 && level.output_tokens > 0 {
                        level.power.net_tokens_per_joule = Some(level.output_tokens as f64 / net_j);
                    }
                }
            }
        }
        if level.gpu_busy_pct_mean.is_none() {
            level.gpu_busy_pct_mean = cycle_sum(&key, "busy_pct", true);
        }
        if level.gpu_freq_mhz_mean.is_none() {
            level.gpu_freq_mhz_mean = cycle_sum(&key, "freq_mhz", true);
        }
    }
    if filled {
        data.notes.push(
            "cycles.csv has no power columns: mean power per level is the mean of power.csv's readings during it, energy = mean power × duration".into(),
        );
    }
    data.series.power_w = power
        .into_iter()
        .map(|(name, points)| Series { name, points })
        .collect();
    data.series.freq_mhz = freq
        .into_iter()
        .map(|(name, points)| Series { name, points })
        .collect();
    merge_spans(&mut data.series.cycle_spans, spans);
    if data.series.power_w.is_empty() {
        data.notes
            .push("power.csv has no power_w readings: power is not reported".into());
    }
    Ok(())
}

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

/// Per-level and over-time figures from `processes.csv` (optional).
fn load_processes(dir: &Path, data: &mut RunData) -> Result<(), ReportError> {
    let path = dir.join("processes.csv");
    if !path.is_file() {
        data.notes
            .push("no processes.csv: server CPU and memory are not reported".into());
        return Ok(());
    }
    let rows = read_rows(&path)?;
    let mut cpu: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut rss: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    // Per cycle key: server cpu (sum, n, peak) per process, server rss peak per process,
    // machine cpu (sum, n), machine mem frac peak.
    let mut server_cpu: HashMap<(String, String), (f64, u32, f64)> = HashMap::new();
    let mut server_rss: HashMap<(String, String), f64> = HashMap::new();
    let mut machine_cpu: HashMap<String, (f64, u32)> = HashMap::new();
    let mut machine_cores: std::collections::HashMap<String, f64> = Default::default();
    let mut machine_mem: HashMap<String, f64> = HashMap::new();
    let mut spans: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for row in &rows {
        let Some(t) = num(row, "elapsed_s") else {
            continue;
        };
        let role = text(row, "role");
        let name = match role.as_str() {
            "machine" => format!(
                "machine{}",
                match text(row, "agent") {
                    a if a.is_empty() => String::new(),
                    a => format!(" @{a}"),
                }
            ),
            _ => format!("{role} {} ({})", text(row, "name"), text(row, "pid")),
        };
        let cycle = text(row, "cycle");
        let key = label_key(&cycle);
        if !cycle.is_empty() {
            let s = spans.entry(cycle.clone()).or_insert((t, t));
            s.0 = s.0.min(t);
            s.1 = s.1.max(t);
        }
        if role == "machine" && !cycle.is_empty() {
            if let Some(n) = num(row, "cpu_count").filter(|n| *n > 0.0) {
                machine_cores.insert(key.clone(), n);
            }
        }
        if let Some(c) = num(row, "cpu_pct") {
            cpu.entry(name.clone()).or_default().push((t, c));
            if !cycle.is_empty() {
                if role == "machine" {
                    let e = machine_cpu.entry(key.clone()).or_insert((0.0, 0));
                    e.0 += c;
                    e.1 += 1;
                } else {
                    let e = server_cpu
                        .entry((key.clone(), name.clone()))
                        .or_insert((0.0, 0, 0.0));
                    e.0 += c;
                    e.1 += 1;
                    e.2 = e.2.max(c);
                }
            }
        }
        if let Some(r) = num(row, "rss_bytes") {
            rss.entry(name.clone()).or_default().push((t, r));
            if !cycle.is_empty() {
                if role == "machine" {
                    if let Some(total) = num(row, "mem_total_bytes").filter(|t| *t > 0.0) {
                        let e = machine_mem.entry(key.clone()).or_insert(0.0);
                        *e = e.max(r / total);
                    }
                } else {
                    let e = server_rss.entry((key.clone(), name.clone())).or_insert(0.0);
                    *e = e.max(r);
                }
            }
        }
    }
    for level in &mut data.levels {
        let key = label_key(&level.label);
        let mine = || server_cpu.iter().filter(|((c, _), _)| *c == key);
        if level.server_cpu_pct_mean.is_none() && mine().next().is_some() {
            level.server_cpu_pct_mean =
                Some(mine().map(|(_, (s, n, _))| s / f64::from(*n)).sum::<f64>());
            level.server_cpu_pct_peak = Some(mine().map(|(_, (_, _, p))| *p).sum::<f64>());
        }
        if level.server_rss_peak_bytes.is_none() {
            let peaks: Vec<f64> = server_rss
                .iter()
                .filter(|((c, _), _)| *c == key)
                .map(|(_, v)| *v)
                .collect();
            if !peaks.is_empty() {
                level.server_rss_peak_bytes = Some(peaks.iter().sum());
            }
        }
        level.machine_cpu_pct_mean = machine_cpu.get(&key).map(|(s, n)| s / f64::from(*n));
        level.machine_cpu_count = machine_cores.get(&key).copied();
        level.machine_mem_used_peak_frac = machine_mem.get(&key).copied();
    }
    data.series.cpu_pct = cpu
        .into_iter()
        .map(|(name, points)| Series { name, points })
        .collect();
    data.series.rss_bytes = rss
        .into_iter()
        .map(|(name, points)| Series { name, points })
        .collect();
    merge_spans(&mut data.series.cycle_spans, spans);
    Ok(())
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

    #[test]
    fn overlap_counts_streams_at_once() {
        let v = [(0.0, 1.0), (0.5, 2.0), (1.0, 3.0), (2.5, 4.0)];
        assert_eq!(max_overlap(v.into_iter()), Some(2));
        assert_eq!(max_overlap(std::iter::empty()), None);
    }
}
