//! `tokengun compare`: several runs' curves overlaid with labels, and their findings side by side.

use super::charts::{self, Line, XAxis};
use super::doc::{Block, Doc, Figure, Table};
use super::findings::{self, Knee};
use super::load::{self, LevelRow, RunData};
use super::util::{fmt_num, opt_num};
use super::{ReportError, ReportOptions, Written};
use std::path::{Path, PathBuf};

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

/// The comparison document of loaded runs.
pub fn compare_doc(
    runs: &[RunData],
    given_labels: &[String],
    opts: &ReportOptions,
) -> Result<Doc, ReportError> {
    let labels = labels(runs, given_labels)?;
    if let Some(first) = runs.first() {
        if let Some((i, other)) = runs
            .iter()
            .enumerate()
            .find(|(_, r)| kind(r) != kind(first))
        {
            return Err(ReportError::MixedSweeps {
                a: labels[0].clone(),
                ka: kind(first),
                b: labels[i].clone(),
                kb: kind(other),
            });
        }
    }
    let rate = runs.first().is_some_and(|r| r.meta.is_rate_sweep());
    let all_levels: Vec<f64> = {
        let mut v: Vec<f64> = runs
            .iter()
            .flat_map(|r| r.levels.iter().map(|l| l.x))
            .collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    };
    let axis = XAxis::Levels {
        title: runs
            .first()
            .map_or("concurrency", super::x_title)
            .to_string(),
        log: charts::wants_log(&all_levels),
        levels: all_levels,
    };
    let found: Vec<findings::Findings> = runs
        .iter()
        .map(|r| findings::compute(&r.levels, &opts.findings, rate))
        .collect();

    let level_name = |r: &RunData, i: Option<usize>| -> String {
        i.map_or("–".into(), |i| r.levels[i].label.clone())
    };
    let mut headers = vec![String::new()];
    headers.extend(labels.iter().cloned());
    let row = |name: &str, cell: &dyn Fn(usize) -> String| -> Vec<String> {
        std::iter::once(name.to_string())
            .chain((0..runs.len()).map(cell))
            .collect()
    };
    let rows = vec![
        row("model", &|i| runs[i].meta.model.clone()),
        row("target", &|i| runs[i].meta.target.clone()),
        row("shape", &|i| runs[i].meta.shape.clone()),
        row("run", &|i| runs[i].meta.run_id.clone()),
        row("levels", &|i| {
            runs[i]
                .levels
                .iter()
                .map(|l| l.label.as_str())
                .collect::<Vec<_>>()
                .join(",")
        }),
        row("peak aggregate tokens/s", &|i| {
            found[i].peak.map_or("–".into(), |p| {
                format!(
                    "{} at {}",
                    fmt_num(runs[i].levels[p].aggregate_tokens_per_s),
                    runs[i].levels[p].label
                )
            })
        }),
        row("best level", &|i| {
            found[i].best.map_or("none qualifies".into(), |b| {
                format!(
                    "{} ({} tokens/s)",
                    runs[i].levels[b].label,
                    fmt_num(runs[i].levels[b].aggregate_tokens_per_s)
                )
            })
        }),
        row("knee", &|i| match &found[i].knee {
            Knee::At { index, .. } => runs[i].levels[*index].label.clone(),
            Knee::StillScaling { .. } => "not reached".into(),
            Knee::TooFewLevels => "–".into(),
        }),
        row("errors begin", &|i| {
            found[i].errors_begin.map_or("none".into(), |e| {
                format!(
                    "{} ({}%)",
                    runs[i].levels[e].label,
                    fmt_num(runs[i].levels[e].error_rate * 100.0)
                )
            })
        }),
        row("per-request tok/s at best", &|i| {
            found[i].best.map_or("–".into(), |b| {
                opt_num(runs[i].levels[b].mean_request_tokens_per_s)
            })
        }),
        row("TTFT p50 at best", &|i| {
            found[i].best.map_or("–".into(), |b| {
                super::util::opt_s(runs[i].levels[b].ttft.p50_s)
            })
        }),
        row("most efficient", &|i| {
            found[i].most_efficient.map_or("no power data".into(), |e| {
                format!(
                    "{} ({} tokens/J)",
                    level_name(&runs[i], Some(e)),
                    opt_num(runs[i].levels[e].tokens_per_joule())
                )
            })
        }),
    ];

    let overlay = |f: &dyn Fn(&LevelRow) -> Option<f64>| -> Vec<Line> {
        runs.iter()
            .zip(&labels)
            .enumerate()
            .map(|(i, (r, label))| Line {
                name: label.clone(),
                points: r
                    .levels
                    .iter()
                    .filter_map(|l| f(l).map(|y| (l.x, y)))
                    .collect(),
                color: i,
                dots: true,
            })
            .collect()
    };
    let mut figs = vec![
        Figure {
            file: "compare_throughput.png".into(),
            title: "Aggregate tokens/s".into(),
            caption:
                "Output tokens per second of all requests together, per level, one line per run."
                    .into(),
            png: charts::line_chart(
                "Aggregate output tokens/s",
                &axis,
                "tokens/s",
                &overlay(&|l| Some(l.aggregate_tokens_per_s)),
                &[],
                None,
            )?,
        },
        Figure {
            file: "compare_per_request.png".into(),
            title: "Per-request tokens/s".into(),
            caption: "Mean per-request decode rate per level, one line per run.".into(),
            png: charts::line_chart(
                "Per-request decode rate (mean)",
                &axis,
                "tokens/s per request",
                &overlay(&|l| l.mean_request_tokens_per_s),
                &[],
                None,
            )?,
        },
        Figure {
            file: "compare_ttft.png".into(),
            title: "TTFT p50".into(),
            caption: "Median time to first token per level, one line per run.".into(),
            png: charts::line_chart(
                "Time to first token (p50)",
                &axis,
                "seconds",
                &overlay(&|l| l.ttft.p50_s),
                &[],
                None,
            )?,
        },
        Figure {
            file: "compare_errors.png".into(),
            title: "Error rate".into(),
            caption: "Share of requests that failed per level, percent, one line per run.".into(),
            png: charts::line_chart(
                "Error rate",
                &axis,
                "% of requests failed",
                &overlay(&|l| Some(l.error_rate * 100.0)),
                &[],
                None,
            )?,
        },
    ];
    if runs
        .iter()
        .any(|r| r.levels.iter().any(|l| l.tokens_per_joule().is_some()))
    {
        figs.push(Figure {
            file: "compare_efficiency.png".into(),
            title: "Tokens per joule".into(),
            caption: "Output tokens per joule per level, for the runs that measured power.".into(),
            png: charts::line_chart(
                "Tokens per joule",
                &axis,
                "tokens/J",
                &overlay(&|l| l.tokens_per_joule()),
                &[],
                None,
            )?,
        });
    }

    let mut blocks = vec![
        Block::Heading("Findings side by side".into()),
        Block::Table(Table { headers, rows }),
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
    blocks.extend(figs.into_iter().map(Block::Figure));
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
