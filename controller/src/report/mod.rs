//! `tokengun report` and `tokengun compare`: re-read a run folder's files, compute findings,
//! draw PNG charts, and write `report.md` + a self-contained `report.html` (or `compare.*`).
//!
//! Everything comes from the files (read through `load`), so any old run can be re-analysed;
//! power and process sections appear only when `power.csv` / `processes.csv` exist. Where to add
//! things: a finding in `findings/`, a chart in `charts.rs` (each opens with its checklist),
//! a chart of `compare` in `compare.rs`.

pub mod charts;
pub mod compare;
pub mod doc;
pub mod findings;
pub mod groups;
pub mod interactive;
pub mod load;
pub mod plot;
pub mod util;
pub mod workload;

use doc::{Block, Doc, Table};
use findings::{FindingOptions, Findings};
use load::{LevelRow, RunData};
use plot::ChartError;
use std::path::{Path, PathBuf};
use util::{fmt_bytes, fmt_num, opt_num, opt_s};

pub use compare::compare;

/// Most bars in the per-request timeline (the first ones by intended start).
pub const TIMELINE_MAX_BARS: usize = 200;

/// A report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "{dir} is not a tokengun run folder ({why}); pass the folder `tokengun run` printed after \"results:\""
    )]
    NotARun { dir: PathBuf, why: String },
    #[error("{0} has no finished level in cycles.csv: nothing to report")]
    NoLevels(PathBuf),
    #[error(transparent)]
    Read(#[from] tokengun_common::run_dir::ReadError),
    #[error("cannot draw a chart: {0}")]
    Chart(#[from] ChartError),
    #[error("cannot write {path}: {source}; pass --out with a writable folder")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--timeline-level {given:?} is not a level of this run; it has {have}")]
    UnknownLevel { given: String, have: String },
    #[error("{given} --label values for {runs} runs; give one per run, in the same order, or none")]
    LabelCount { given: usize, runs: usize },
    #[error(
        "cannot overlay {a} (a {ka} sweep) with {b} (a {kb} sweep); compare runs whose levels are both concurrencies or both rates"
    )]
    MixedSweeps {
        a: String,
        ka: &'static str,
        b: String,
        kb: &'static str,
    },
}

/// Settings of a report.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    pub findings: FindingOptions,
    /// Level whose requests the timeline shows [default: the first level past the knee].
    pub timeline_level: Option<String>,
}

/// What a report wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub markdown: PathBuf,
    pub html: PathBuf,
    pub charts: Vec<PathBuf>,
}

/// Writes `bytes` to `path` (through a temporary file, so a reader never sees half a file).
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let tmp = path.with_extension("tmp");
    let werr = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)
}

/// Writes the document and its charts into `out`: `<stem>.md`, `<stem>.html`, `charts/*.png`.
pub fn write_doc(doc: &Doc, out: &Path, stem: &str) -> Result<Written, ReportError> {
    let charts_dir = out.join("charts");
    std::fs::create_dir_all(&charts_dir).map_err(|source| ReportError::Write {
        path: charts_dir.clone(),
        source,
    })?;
    let mut charts = Vec::new();
    for f in doc.figures() {
        let p = charts_dir.join(&f.file);
        write_file(&p, &f.png)?;
        charts.push(p);
    }
    let markdown = out.join(format!("{stem}.md"));
    write_file(&markdown, doc.to_markdown().as_bytes())?;
    let html = out.join(format!("{stem}.html"));
    write_file(&html, doc.to_html().as_bytes())?;
    Ok(Written {
        markdown,
        html,
        charts,
    })
}

/// `tokengun report`: reads `run_dir`, writes the report into `out` (default: `run_dir`).
pub fn report(
    run_dir: &Path,
    out: Option<&Path>,
    opts: &ReportOptions,
) -> Result<Written, ReportError> {
    let data = load::load_run(run_dir)?;
    let doc = run_report(&data, opts)?;
    let out = out.unwrap_or(run_dir);
    std::fs::create_dir_all(out).map_err(|source| ReportError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    write_doc(&doc, out, "report")
}

/// The x axis's name for a run's levels.
pub fn x_title(data: &RunData) -> &'static str {
    match data.meta.shape.as_str() {
        "open" => "arrival rate (requests/s)",
        "closed" => "concurrency (requests kept in flight)",
        _ => "concurrency (requests fired together)",
    }
}

fn subtitle(data: &RunData) -> String {
    let m = &data.meta;
    let mut parts = vec![format!("run {}", m.run_id)];
    if !m.started_at.is_empty() {
        parts.push(format!("started {}", m.started_at));
    }
    if !m.target.is_empty() {
        parts.push(format!("target {}", m.target));
    }
    if let Some(api) = m.api {
        parts.push(format!("API {}", api.as_str()));
    }
    if !m.server_version.is_empty() {
        parts.push(format!("server {}", m.server_version));
    }
    parts.push(format!("{} sweep of {} levels", m.shape, data.levels.len()));
    if let Some(status) = m.status {
        parts.push(format!("status {}", status.as_str()));
    }
    parts.join(" · ")
}

/// The SLO in words.
pub fn slo_words(data: &RunData) -> String {
    let m = &data.meta;
    let mut s = vec![format!(
        "at least {} tokens/s per request",
        fmt_num(m.slo.tokens_per_s)
    )];
    if let Some(t) = m.slo.ttft_s {
        s.push(format!("TTFT at most {}", util::fmt_s(t)));
    }
    if let Some(t) = m.slo.e2e_s {
        s.push(format!("end-to-end at most {}", util::fmt_s(t)));
    }
    s.join(", ")
}

/// The summary table, one row per level; power and process columns only when measured.
pub fn level_table(levels: &[LevelRow]) -> Table {
    let power = levels.iter().any(|l| l.mean_power_w().is_some());
    let procs = levels
        .iter()
        .any(|l| l.server_cpu_pct_mean().is_some() || l.server_rss_peak_bytes().is_some());
    let mut headers: Vec<String> = [
        "level",
        "requests",
        "errors",
        "aggregate tok/s",
        "per-request tok/s (mean)",
        "per-request tok/s (p10)",
        "TTFT p50",
        "TTFT p90",
        "TTFT p99",
        "E2E p50",
        "E2E p99",
        "goodput",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if power {
        headers.extend(["mean W", "J/token", "tokens/J"].map(String::from));
    }
    if procs {
        headers.extend(["server CPU %", "server RSS peak"].map(String::from));
    }
    let rows = levels
        .iter()
        .map(|l| {
            let mut r = vec![
                format!(
                    "{}{}{}",
                    l.label,
                    if l.partial {
                        " (partial)"
                    } else if !l.schedule_valid {
                        " (invalid)"
                    } else {
                        ""
                    },
                    pressure_marks(l)
                ),
                l.requests.to_string(),
                format!("{} ({}%)", l.failed, fmt_num(l.error_rate * 100.0)),
                fmt_num(l.aggregate_tokens_per_s),
                opt_num(l.mean_request_tokens_per_s),
                opt_num(l.request_tokens_per_s_p10),
                opt_s(l.ttft.p50_s),
                opt_s(l.ttft.p90_s),
                opt_s(l.ttft.p99_s),
                opt_s(l.e2e.p50_s),
                opt_s(l.e2e.p99_s),
                format!(
                    "{}/{} ({} req/s)",
                    l.goodput_requests,
                    l.requests,
                    fmt_num(l.goodput_requests_per_s)
                ),
            ];
            if power {
                r.push(opt_num(l.mean_power_w()));
                r.push(opt_num(l.energy.as_ref().and_then(|e| e.joules_per_token)));
                r.push(opt_num(l.tokens_per_joule()));
            }
            if procs {
                r.push(opt_num(l.server_cpu_pct_mean()));
                r.push(l.server_rss_peak_bytes().map_or("–".into(), fmt_bytes));
            }
            r
        })
        .collect();
    Table { headers, rows }
}

/// ` (throttled)`, ` (swapping)`, both or nothing: how the level table marks a level that ran
/// under thermal or memory pressure.
fn pressure_marks(l: &LevelRow) -> String {
    let mut m = String::new();
    if findings::pressure::throttled(l) {
        m.push_str(" (throttled)");
    }
    if findings::pressure::swapping(l) {
        m.push_str(" (swapping)");
    }
    m
}

/// The energy of the server's own processes and the machine's pressure per level, when any was
/// recorded (per-process energy is macOS's; pressure is read on macOS and Linux).
pub fn energy_pressure_table(levels: &[LevelRow]) -> Option<Table> {
    let procs = levels.iter().any(|l| !l.process_power_w.is_empty());
    let press = levels.iter().any(|l| {
        l.thermal_pressure_max.is_some()
            || l.mem_pressure_max.is_some()
            || l.swap_growth_bytes.is_some()
    });
    if !procs && !press {
        return None;
    }
    let mut headers = vec!["level".to_string()];
    if procs {
        headers.extend(
            [
                "measured W",
                "server W",
                "server share",
                "server J/token",
                "by process",
            ]
            .map(String::from),
        );
    }
    if press {
        headers.extend(["thermal pressure", "memory pressure", "swap growth"].map(String::from));
    }
    let name = |v: Option<f64>, f: fn(u8) -> &'static str| {
        v.map_or("–".into(), |v| {
            f(v.round().clamp(0.0, 255.0) as u8).to_string()
        })
    };
    let rows = levels
        .iter()
        .map(|l| {
            let mut r = vec![format!("{}{}", l.label, pressure_marks(l))];
            if procs {
                r.push(opt_num(l.mean_power_w()));
                r.push(opt_num(l.server_power_w()));
                r.push(
                    l.server_power_share()
                        .map_or("–".into(), |s| format!("{}%", fmt_num(100.0 * s))),
                );
                r.push(opt_num(l.server_joules_per_token()));
                r.push(
                    l.process_power_w
                        .iter()
                        .map(|(n, w)| format!("{n}: {} W", fmt_num(*w)))
                        .collect::<Vec<_>>()
                        .join("; "),
                );
            }
            if press {
                use tokengun_common::monitor::pressure::{mem_name, thermal_name};
                r.push(name(l.thermal_pressure_max, thermal_name));
                r.push(name(l.mem_pressure_max, mem_name));
                r.push(l.swap_growth_bytes.map_or("–".into(), fmt_bytes));
            }
            r
        })
        .collect();
    Some(Table { headers, rows })
}

/// The findings, the SLO and definitions they used, the bottleneck hints and the cautions.
fn findings_blocks(data: &RunData, f: &Findings, o: &FindingOptions) -> Vec<Block> {
    let mut blocks = vec![
        Block::Heading("Findings".into()),
        Block::List(f.statements.clone()),
        Block::Para(format!(
            "SLO of this run: {}. Definitions: a level qualifies with error rate ≤ {}% and ≥ {}% of requests meeting the SLO; the best level is the lowest qualifying level within {}% of the highest qualifying throughput; the knee is the last level before the first step whose gain per unit of {} falls below {}% of the first level's tokens/s per unit.",
            slo_words(data),
            fmt_num(o.max_error_rate * 100.0),
            fmt_num(o.min_good_share * 100.0),
            fmt_num(o.best_tolerance * 100.0),
            if data.meta.is_rate_sweep() {
                "rate"
            } else {
                "concurrency"
            },
            fmt_num(o.knee_fraction * 100.0),
        )),
        Block::Heading("Bottleneck hints".into()),
    ];
    if f.hints.is_empty() {
        blocks.push(Block::Para(
            "None: the data hold no evidence of queueing, shared decode, CPU, GPU, power or memory limits.".into(),
        ));
    } else {
        blocks.push(Block::List(f.hints.clone()));
    }
    if !f.cautions.is_empty() {
        blocks.push(Block::Heading("Cautions".into()));
        blocks.push(Block::List(f.cautions.clone()));
    }
    blocks
}

/// Builds the report document of one run: findings, the table, and every chart the data allow.
pub fn run_report(data: &RunData, opts: &ReportOptions) -> Result<Doc, ReportError> {
    let groups = groups::split(data);
    if groups.len() > 1 {
        return groups::groups_doc(data, &groups, opts);
    }
    let f = findings::compute(&data.levels, &opts.findings, data.meta.is_rate_sweep());
    let mut blocks = findings_blocks(data, &f, &opts.findings);
    blocks.push(Block::Heading("Levels".into()));
    blocks.push(Block::Table(level_table(&data.levels)));
    if let Some(t) = groups::instance_table(&data.levels) {
        blocks.push(Block::Heading("Instances".into()));
        blocks.push(Block::Table(t));
    }
    if let Some(t) = energy_pressure_table(&data.levels) {
        blocks.push(Block::Heading("Server energy and machine pressure".into()));
        blocks.push(Block::Para(
            "Server W: the watched processes' own energy counters (macOS ri_energy_nj) over the level; share: of the measured power (the SoC's on a Mac); J/token: server W × the level's duration / its output tokens. Pressure: the highest level read during the level (macOS thermal and memory pressure; Linux memory pressure from PSI); swap growth: swap in use at the level's peak less at its start.".into(),
        ));
        blocks.push(Block::Table(t));
    }
    blocks.extend(workload::search_blocks(data));
    blocks.extend(workload::blocks(data));
    blocks.push(Block::Heading("Charts".into()));
    let mut notes = data.notes.clone();
    let figures = charts::draw_all(&charts::ChartCtx::new(data, &f, opts), &mut notes)?;
    blocks.extend(figures.into_iter().map(Block::Figure));
    if !notes.is_empty() {
        blocks.push(Block::Heading("Notes".into()));
        blocks.push(Block::List(notes));
    }
    blocks.push(Block::Para(
        "Metric definitions: tokengun's README (request_summary.csv, cycles.csv, report). Generated by tokengun from the run folder's files.".into(),
    ));
    Ok(Doc {
        title: format!(
            "tokengun report: {}",
            if data.meta.model.is_empty() {
                data.meta.run_id.as_str()
            } else {
                data.meta.model.as_str()
            }
        ),
        subtitle: subtitle(data),
        blocks,
    })
}
