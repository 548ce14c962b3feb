//! `tokengun report` and `tokengun compare`: re-read a run folder's files, compute findings,
//! draw PNG charts, and write `report.md` + a self-contained `report.html` (or `compare.*`).
//!
//! Everything comes from the files, so any old run can be re-analysed; power and process
//! sections appear only when `power.csv` / `processes.csv` exist. To add a chart: draw it in
//! `charts.rs`, push a `Figure` in `run_report` (or `compare`), say what it shows in its caption.

pub mod charts;
pub mod compare;
pub mod doc;
pub mod findings;
pub mod load;
pub mod util;

use charts::{Bar, ChartError, Line, Mark, XAxis};
use doc::{Block, Doc, Figure, Table};
use findings::{FindingOptions, Findings, Knee};
use load::{LevelRow, RunData};
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

fn level_axis(data: &RunData) -> XAxis {
    let levels: Vec<f64> = data.levels.iter().map(|l| l.x).collect();
    XAxis::Levels {
        title: x_title(data).into(),
        log: charts::wants_log(&levels),
        levels,
    }
}

fn points(levels: &[LevelRow], f: impl Fn(&LevelRow) -> Option<f64>) -> Vec<(f64, f64)> {
    levels
        .iter()
        .filter_map(|l| f(l).map(|y| (l.x, y)))
        .collect()
}

/// The level whose requests the timeline shows.
fn timeline_index(
    data: &RunData,
    f: &Findings,
    opts: &ReportOptions,
) -> Result<Option<usize>, ReportError> {
    if let Some(given) = &opts.timeline_level {
        let key = load::label_key(given);
        return match data
            .levels
            .iter()
            .position(|l| load::label_key(&l.label) == key)
        {
            Some(i) => Ok(Some(i)),
            None => Err(ReportError::UnknownLevel {
                given: given.clone(),
                have: data
                    .levels
                    .iter()
                    .map(|l| l.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        };
    }
    let with_spans = |i: &usize| !data.levels[*i].spans.is_empty();
    let after_knee = match f.knee {
        Knee::At { index, .. } => (index + 1..data.levels.len()).find(with_spans),
        _ => None,
    };
    Ok(after_knee.or_else(|| (0..data.levels.len()).rev().find(with_spans)))
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
                    "{}{}",
                    l.label,
                    if l.partial {
                        " (partial)"
                    } else if !l.schedule_valid {
                        " (invalid)"
                    } else {
                        ""
                    }
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

/// Builds the report document of one run: findings, the table, and every chart the data allow.
pub fn run_report(data: &RunData, opts: &ReportOptions) -> Result<Doc, ReportError> {
    let rate = data.meta.is_rate_sweep();
    let f = findings::compute(&data.levels, &opts.findings, rate);
    let axis = level_axis(data);
    let levels = &data.levels;
    let mut blocks = vec![
        Block::Heading("Findings".into()),
        Block::List(f.statements.clone()),
    ];
    blocks.push(Block::Para(format!(
        "SLO of this run: {}. Definitions: a level qualifies with error rate ≤ {}% and ≥ {}% of requests meeting the SLO; the best level is the lowest qualifying level within {}% of the highest qualifying throughput; the knee is the last level before the first step whose gain per unit of {} falls below {}% of the first level's tokens/s per unit.",
        slo_words(data),
        fmt_num(opts.findings.max_error_rate * 100.0),
        fmt_num(opts.findings.min_good_share * 100.0),
        fmt_num(opts.findings.best_tolerance * 100.0),
        if rate { "rate" } else { "concurrency" },
        fmt_num(opts.findings.knee_fraction * 100.0),
    )));
    blocks.push(Block::Heading("Bottleneck hints".into()));
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
    blocks.push(Block::Heading("Levels".into()));
    blocks.push(Block::Table(level_table(levels)));

    blocks.push(Block::Heading("Charts".into()));
    let mut marks = Vec::new();
    if let Knee::At { index, .. } = f.knee {
        marks.push(Mark {
            x: levels[index].x,
            label: " knee".into(),
        });
    }
    if let Some(b) = f.best {
        marks.push(Mark {
            x: levels[b].x,
            label: if matches!(f.knee, Knee::At { index, .. } if index == b) {
                " knee = best".into()
            } else {
                " best".into()
            },
        });
        if marks.len() == 2 && marks[0].x == marks[1].x {
            marks.remove(0);
        }
    }
    let line = |name: &str, pts: Vec<(f64, f64)>, color: usize| Line {
        name: name.into(),
        points: pts,
        color,
        dots: true,
    };
    let mut figs = vec![Figure {
        file: "throughput.png".into(),
        title: "Aggregate tokens/s".into(),
        caption: "Output tokens per second of all requests together, per level; the knee and the best level are marked.".into(),
        png: charts::line_chart(
            "Aggregate output tokens/s",
            &axis,
            "tokens/s",
            &[line("aggregate", points(levels, |l| Some(l.aggregate_tokens_per_s)), 0)],
            &marks,
            None,
        )?,
    }];
    let slo = Some(data.meta.slo.tokens_per_s);
    figs.push(Figure {
        file: "per_request.png".into(),
        title: "Per-request tokens/s".into(),
        caption: "Each request's decode rate (tokens after the first ÷ streaming time): the mean, and the 10th percentile (the slowest tenth of requests stream slower); dashed: the SLO.".into(),
        png: charts::line_chart(
            "Per-request decode rate",
            &axis,
            "tokens/s per request",
            &[
                line("mean", points(levels, |l| l.mean_request_tokens_per_s), 0),
                line("p10 (slowest tenth)", points(levels, |l| l.request_tokens_per_s_p10), 3),
            ],
            &[],
            slo.map(|s| (s, "SLO")),
        )?,
    });
    figs.push(Figure {
        file: "ttft.png".into(),
        title: "Time to first token".into(),
        caption:
            "TTFT percentiles per level, from each request's intended start (queueing included)."
                .into(),
        png: charts::line_chart(
            "Time to first token",
            &axis,
            "seconds",
            &[
                line("p50", points(levels, |l| l.ttft.p50_s), 0),
                line("p90", points(levels, |l| l.ttft.p90_s), 3),
                line("p99", points(levels, |l| l.ttft.p99_s), 1),
            ],
            &[],
            data.meta.slo.ttft_s.map(|s| (s, "TTFT SLO")),
        )?,
    });
    figs.push(Figure {
        file: "errors.png".into(),
        title: "Error rate".into(),
        caption: "Share of each level's requests that failed (any kind), percent.".into(),
        png: charts::line_chart(
            "Error rate",
            &axis,
            "% of requests failed",
            &[line(
                "error rate",
                points(levels, |l| Some(l.error_rate * 100.0)),
                1,
            )],
            &[],
            Some((opts.findings.max_error_rate * 100.0, "limit")),
        )?,
    });
    let mut notes = data.notes.clone();
    if levels.iter().any(|l| l.tokens_per_joule().is_some()) {
        let mut lines = vec![line(
            "tokens/J",
            points(levels, |l| l.tokens_per_joule()),
            2,
        )];
        if levels.iter().any(|l| {
            l.energy
                .as_ref()
                .and_then(|e| e.net_tokens_per_joule)
                .is_some()
        }) {
            lines.push(line(
                "tokens/J above idle",
                points(levels, |l| {
                    l.energy.as_ref().and_then(|e| e.net_tokens_per_joule)
                }),
                4,
            ));
        }
        figs.push(Figure {
            file: "efficiency.png".into(),
            title: "Tokens per joule".into(),
            caption: "Output tokens per joule of measured energy per level (and above the idle baseline when one was measured).".into(),
            png: charts::line_chart("Tokens per joule", &axis, "tokens/J", &lines, &[], None)?,
        });
    } else {
        notes.push("no energy per level: the tokens-per-joule chart is omitted".into());
    }
    let time_axis = XAxis::Time {
        spans: data.series.cycle_spans.clone(),
    };
    let series_lines = |s: &[load::Series], scale: f64| -> Vec<Line> {
        s.iter()
            .enumerate()
            .map(|(i, s)| Line {
                name: s.name.clone(),
                points: s.points.iter().map(|p| (p.0, p.1 * scale)).collect(),
                color: i,
                dots: false,
            })
            .collect()
    };
    if !data.series.power_w.is_empty() {
        figs.push(Figure {
            file: "power.png".into(),
            title: "Power over time".into(),
            caption: "Power readings per device (power.csv), with the levels shaded.".into(),
            png: charts::line_chart(
                "Power",
                &time_axis,
                "watts",
                &series_lines(&data.series.power_w, 1.0),
                &[],
                None,
            )?,
        });
    }
    if !data.series.freq_mhz.is_empty() {
        figs.push(Figure {
            file: "frequency.png".into(),
            title: "Clock frequency over time".into(),
            caption: "GPU/SM clock per device (power.csv freq_mhz), with the levels shaded.".into(),
            png: charts::line_chart(
                "Clock frequency",
                &time_axis,
                "MHz",
                &series_lines(&data.series.freq_mhz, 1.0),
                &[],
                None,
            )?,
        });
    }
    if !data.series.cpu_pct.is_empty() {
        figs.push(Figure {
            file: "server_cpu.png".into(),
            title: "Server CPU over time".into(),
            caption: "CPU of the server's processes (percent of one core) and of the whole machine (percent of all cores), from processes.csv.".into(),
            png: charts::line_chart(
                "Server and machine CPU",
                &time_axis,
                "CPU %",
                &series_lines(&data.series.cpu_pct, 1.0),
                &[],
                None,
            )?,
        });
    }
    if !data.series.rss_bytes.is_empty() {
        figs.push(Figure {
            file: "server_memory.png".into(),
            title: "Server memory over time".into(),
            caption: "Resident memory of the server's processes and memory used on the machine, GiB, from processes.csv.".into(),
            png: charts::line_chart(
                "Server and machine memory",
                &time_axis,
                "GiB",
                &series_lines(&data.series.rss_bytes, 1.0 / (1024.0 * 1024.0 * 1024.0)),
                &[],
                None,
            )?,
        });
    }
    if let Some(i) = timeline_index(data, &f, opts)? {
        let l = &levels[i];
        let shown = l.spans.len().min(TIMELINE_MAX_BARS);
        let bars: Vec<Bar> = l.spans[..shown]
            .iter()
            .map(|s| Bar {
                start_s: s.intended_s,
                first_token_s: s.first_token_s,
                end_s: s.end_s,
                failed: !s.completed,
            })
            .collect();
        figs.push(Figure {
            file: "timeline.png".into(),
            title: format!("Requests of level {}", l.label),
            caption: format!(
                "One bar per request of level {}{}: waiting from its intended start to its first token (queueing and prefill), then streaming to its end. Requests that wait while others stream show the server's queue.",
                l.label,
                if shown < l.spans.len() {
                    format!(" (the first {shown} of {} by intended start)", l.spans.len())
                } else {
                    String::new()
                }
            ),
            png: charts::timeline_chart(&format!("Requests of level {}", l.label), &bars)?,
        });
    } else {
        notes.push("no request_summary.csv: the per-request timeline is omitted".into());
    }
    blocks.extend(figs.into_iter().map(Block::Figure));
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
