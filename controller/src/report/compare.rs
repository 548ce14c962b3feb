//! `tokengun compare`: several runs' curves overlaid with labels, and their findings side by side.
//!
//! To add a chart to the comparison: add a line to [`OVERLAYS`] (the figure per level, one line
//! per run); to add a row to the side-by-side table, a row in [`side_by_side`].

use super::doc::{Block, Doc, Figure, Table};
use super::findings::{self, Findings, Knee};
use super::load::{self, LevelRow, RunData};
use super::plot::{self, Line, XAxis};
use super::util::{fmt_num, opt_num, opt_s};
use super::{ReportError, ReportOptions, Written};
use std::path::{Path, PathBuf};

/// A chart of the comparison: one figure per level, one line per run.
struct Overlay {
    file: &'static str,
    title: &'static str,
    caption: &'static str,
    chart_title: &'static str,
    y_title: &'static str,
    value: fn(&LevelRow) -> Option<f64>,
    /// Drawn only when some run has the figure at some level (power is not always measured).
    needs_data: bool,
}

/// The comparison's charts, in order.
const OVERLAYS: &[Overlay] = &[
    Overlay {
        file: "compare_throughput.png",
        title: "Aggregate tokens/s",
        caption: "Output tokens per second of all requests together, per level, one line per run.",
        chart_title: "Aggregate output tokens/s",
        y_title: "tokens/s",
        value: |l| Some(l.aggregate_tokens_per_s),
        needs_data: false,
    },
    Overlay {
        file: "compare_per_request.png",
        title: "Per-request tokens/s",
        caption: "Mean per-request decode rate per level, one line per run.",
        chart_title: "Per-request decode rate (mean)",
        y_title: "tokens/s per request",
        value: |l| l.mean_request_tokens_per_s,
        needs_data: false,
    },
    Overlay {
        file: "compare_ttft.png",
        title: "TTFT p50",
        caption: "Median time to first token per level, one line per run.",
        chart_title: "Time to first token (p50)",
        y_title: "seconds",
        value: |l| l.ttft.p50_s,
        needs_data: false,
    },
    Overlay {
        file: "compare_ttft_p99.png",
        title: "TTFT p99",
        caption: "The slowest hundredth's time to first token per level, one line per run.",
        chart_title: "Time to first token (p99)",
        y_title: "seconds",
        value: |l| l.ttft.p99_s,
        needs_data: false,
    },
    Overlay {
        file: "compare_errors.png",
        title: "Error rate",
        caption: "Share of requests that failed per level, percent, one line per run.",
        chart_title: "Error rate",
        y_title: "% of requests failed",
        value: |l| Some(l.error_rate * 100.0),
        needs_data: false,
    },
    Overlay {
        file: "compare_efficiency.png",
        title: "Tokens per joule",
        caption: "Output tokens per joule per level, for the runs that measured power.",
        chart_title: "Tokens per joule",
        y_title: "tokens/J",
        value: LevelRow::tokens_per_joule,
        needs_data: true,
    },
];

/// Labels for the runs: the ones given, else the model, made unique with the run id.
fn labels(runs: &[RunData], given: &[String]) -> Result<Vec<String>, ReportError> {
    if !given.is_empty() {
        if given.len() != runs.len() {
            return Err(ReportError::LabelCount {
                given: given.len(),
                runs: runs.len(),
            });
        }
        return Ok(given.to_vec());
    }
    let base: Vec<String> = runs
        .iter()
        .map(|r| {
            if r.meta.model.is_empty() {
                r.meta.run_id.clone()
            } else {
                r.meta.model.clone()
            }
        })
        .collect();
    let mut out: Vec<String> = base
        .iter()
        .zip(runs)
        .map(|(b, r)| {
            if base.iter().filter(|x| *x == b).count() > 1 && *b != r.meta.run_id {
                format!("{b} ({})", r.meta.run_id)
            } else {
                b.clone()
            }
        })
        .collect();
    // Still the same (copies of one run): number them.
    for i in 0..out.len() {
        if out[..i].contains(&out[i]) {
            out[i] = format!("{} #{}", out[i], i + 1);
        }
    }
    Ok(out)
}

fn kind(r: &RunData) -> &'static str {
    if r.meta.is_rate_sweep() {
        "rate"
    } else {
        "concurrency"
    }
}

/// Refuses to overlay a concurrency sweep with a rate sweep.
fn same_kind(runs: &[RunData], labels: &[String]) -> Result<(), ReportError> {
    let Some(first) = runs.first() else {
        return Ok(());
    };
    match runs
        .iter()
        .enumerate()
        .find(|(_, r)| kind(r) != kind(first))
    {
        Some((i, other)) => Err(ReportError::MixedSweeps {
            a: labels[0].clone(),
            ka: kind(first),
            b: labels[i].clone(),
            kb: kind(other),
        }),
        None => Ok(()),
    }
}

/// Reads every run, overlays their curves and writes `compare.md`, `compare.html` and
/// `charts/compare_*.png` into `out`.
pub fn compare(
    run_dirs: &[PathBuf],
    given_labels: &[String],
    out: &Path,
    opts: &ReportOptions,
) -> Result<Written, ReportError> {
    let runs: Vec<RunData> = run_dirs
        .iter()
        .map(|d| load::load_run(d))
        .collect::<Result<_, _>>()?;
    let doc = compare_doc(&runs, given_labels, opts)?;
    std::fs::create_dir_all(out).map_err(|source| ReportError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    super::write_doc(&doc, out, "compare")
}

/// Every run's levels on one axis.
fn level_axis(runs: &[RunData]) -> XAxis {
    let mut levels: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.levels.iter().map(|l| l.x))
        .collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    XAxis::Levels {
        title: runs
            .first()
            .map_or("concurrency", super::x_title)
            .to_string(),
        log: plot::wants_log(&levels),
        levels,
    }
}

/// A level's label and a figure of it, or an en dash without a level.
fn at_level(r: &RunData, i: Option<usize>, say: impl Fn(&LevelRow) -> String) -> String {
    i.map_or("–".into(), |i| say(&r.levels[i]))
}

/// The findings table: a row per figure, a column per run.
pub(super) fn side_by_side(runs: &[RunData], labels: &[String], found: &[Findings]) -> Table {
    let mut headers = vec![String::new()];
    headers.extend(labels.iter().cloned());
    let row = |name: &str, cell: &dyn Fn(&RunData, &Findings) -> String| -> Vec<String> {
        std::iter::once(name.to_string())
            .chain(runs.iter().zip(found).map(|(r, f)| cell(r, f)))
            .collect()
    };
    let rows = vec![
        row("model", &|r, _| r.meta.model.clone()),
        row("target", &|r, _| r.meta.target.clone()),
        row("shape", &|r, _| r.meta.shape.clone()),
        row("run", &|r, _| r.meta.run_id.clone()),
        row("levels", &|r, _| {
            r.levels
                .iter()
                .map(|l| l.label.as_str())
                .collect::<Vec<_>>()
                .join(",")
        }),
        row("peak aggregate tokens/s", &|r, f| {
            at_level(r, f.peak, |l| {
                format!("{} at {}", fmt_num(l.aggregate_tokens_per_s), l.label)
            })
        }),
        row("best level", &|r, f| match f.best {
            Some(b) => format!(
                "{} ({} tokens/s)",
                r.levels[b].label,
                fmt_num(r.levels[b].aggregate_tokens_per_s)
            ),
            None => "none qualifies".into(),
        }),
        row("knee", &|r, f| match &f.knee {
            Knee::At { index, .. } => r.levels[*index].label.clone(),
            Knee::StillScaling { .. } => "not reached".into(),
            Knee::TooFewLevels => "–".into(),
        }),
        row("errors begin", &|r, f| match f.errors_begin {
            Some(e) => format!(
                "{} ({}%)",
                r.levels[e].label,
                fmt_num(r.levels[e].error_rate * 100.0)
            ),
            None => "none".into(),
        }),
        row("per-request tok/s at best", &|r, f| {
            at_level(r, f.best, |l| opt_num(l.mean_request_tokens_per_s))
        }),
        row("TTFT p50 at best", &|r, f| {
            at_level(r, f.best, |l| opt_s(l.ttft.p50_s))
        }),
        row("most efficient", &|r, f| match f.most_efficient {
            Some(e) => format!(
                "{} ({} tokens/J)",
                r.levels[e].label,
                opt_num(r.levels[e].tokens_per_joule())
            ),
            None => "no power data".into(),
        }),
    ];
    Table { headers, rows }
}

/// Every overlay the runs have data for; `stem` starts each file's name (`compare_ttft.png`).
pub(super) fn overlays(
    runs: &[RunData],
    labels: &[String],
    stem: &str,
) -> Result<Vec<Figure>, ReportError> {
    let axis = level_axis(runs);
    let mut figs = Vec::new();
    for o in OVERLAYS {
        let has = |r: &RunData| r.levels.iter().any(|l| (o.value)(l).is_some());
        if o.needs_data && !runs.iter().any(has) {
            continue;
        }
        let lines: Vec<Line> = runs
            .iter()
            .zip(labels)
            .enumerate()
            .map(|(i, (r, label))| Line {
                name: label.clone(),
                points: r
                    .levels
                    .iter()
                    .filter_map(|l| (o.value)(l).map(|y| (l.x, y)))
                    .collect(),
                color: i,
                dots: true,
            })
            .collect();
        let (png, data) =
            super::charts::line_chart(o.chart_title, &axis, o.y_title, &lines, &[], None)?;
        figs.push(Figure {
            file: o.file.replacen("compare", stem, 1),
            title: o.title.into(),
            caption: o.caption.into(),
            png,
            data: Some(Box::new(data)),
        });
    }
    Ok(figs)
}

/// The comparison document of loaded runs.
pub fn compare_doc(
    runs: &[RunData],
    given_labels: &[String],
    opts: &ReportOptions,
) -> Result<Doc, ReportError> {
    let labels = labels(runs, given_labels)?;
    same_kind(runs, &labels)?;
    let rate = runs.first().is_some_and(|r| r.meta.is_rate_sweep());
    let found: Vec<Findings> = runs
        .iter()
        .map(|r| findings::compute(&r.levels, &opts.findings, rate))
        .collect();
    let mut blocks = vec![
        Block::Heading("Findings side by side".into()),
        Block::Table(side_by_side(runs, &labels, &found)),
    ];
    for ((r, label), f) in runs.iter().zip(&labels).zip(&found) {
        blocks.push(Block::Heading(label.clone()));
        let mut items = f.statements.clone();
        items.extend(f.hints.iter().cloned());
        items.extend(f.cautions.iter().cloned());
        items.push(format!("Folder: {}", r.dir.display()));
        blocks.push(Block::List(items));
    }
    blocks.push(Block::Heading("Charts".into()));
    blocks.extend(
        overlays(runs, &labels, "compare")?
            .into_iter()
            .map(Block::Figure),
    );
    Ok(Doc {
        title: format!("tokengun compare: {}", labels.join(" vs ")),
        subtitle: format!(
            "{} runs · x: {}",
            runs.len(),
            runs.first().map_or("levels", super::x_title)
        ),
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(model: &str, run_id: &str, shape: &str) -> RunData {
        let mut r = RunData::default();
        r.meta.model = model.into();
        r.meta.run_id = run_id.into();
        r.meta.shape = shape.into();
        r
    }

    #[test]
    fn labels_are_unique_and_given_labels_must_match() {
        let runs = [
            run("qwen3:0.6b", "r1", "burst"),
            run("qwen3:0.6b", "r2", "burst"),
            run("llama3", "r3", "burst"),
            run("qwen3:0.6b", "r1", "burst"),
        ];
        assert_eq!(
            labels(&runs, &[]).unwrap(),
            [
                "qwen3:0.6b (r1)",
                "qwen3:0.6b (r2)",
                "llama3",
                "qwen3:0.6b (r1) #4"
            ]
        );
        assert!(matches!(
            labels(&runs, &["a".into()]),
            Err(ReportError::LabelCount { given: 1, runs: 4 })
        ));
        let mixed = [run("a", "1", "burst"), run("b", "2", "open")];
        let e = compare_doc(&mixed, &[], &ReportOptions::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot overlay a (a concurrency sweep) with b (a rate sweep)"),
            "{e}"
        );
    }
}
