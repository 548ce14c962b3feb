//! The report's charts: one function per chart, registered in [`CHARTS`] in the order the report
//! shows them. Each draws from the run's tables through `plot.rs`, or says it has nothing to draw.
//!
//! To add a chart:
//! 1. write a `fn(&ChartCtx) -> Result<Drawn, ReportError>` in this file: its file under
//!    `charts/`, a title, a caption saying what it shows, and its PNG from [`plot::line_chart`]
//!    (or [`plot::timeline_chart`]); [`Drawn::Skipped`] when the run lacks its data (or
//!    [`Drawn::Omitted`] with a note the report lists). A chart of a monitor series over time
//!    is an `OverTime` const instead, registered as `|c| over_time(c, &IT)`;
//! 2. add it to [`CHARTS`] where the report should show it;
//! 3. add its file to the chart lists of `tests/tests/report.rs`.
//!
//! A chart of `tokengun compare` is a line of `compare.rs`'s `OVERLAYS` instead.

use super::doc::Figure;
use super::findings::{Findings, Knee};
use super::interactive::{self, ChartData};
use super::load::{self, LevelRow, RunData, Series, Timeseries};
use super::plot::{self, Bar, Line, Mark, Stack, XAxis};
use super::{ReportError, ReportOptions, TIMELINE_MAX_BARS};
use tokengun_common::run_dir::REQUEST_SUMMARY_CSV;

/// What a chart function made of the run.
#[derive(Debug)]
pub enum Drawn {
    Figure(Figure),
    /// No data for it: left out without a word (charts that exist only with their files).
    Skipped,
    /// No data for it: left out, and the note says so in the report.
    Omitted(String),
}

/// A chart of the report.
pub type Chart = fn(&ChartCtx<'_>) -> Result<Drawn, ReportError>;

/// Every chart, in the order the report shows them.
pub const CHARTS: &[Chart] = &[
    throughput,
    per_request,
    ttft,
    breakdown,
    errors,
    efficiency,
    |c| over_time(c, &POWER),
    |c| over_time(c, &FREQUENCY),
    |c| over_time(c, &SERVER_CPU),
    |c| over_time(c, &SERVER_MEMORY),
    |c| over_time(c, &SERVER_QUEUE),
    |c| over_time(c, &SERVER_KV),
    timeline,
];

/// What every chart reads.
pub struct ChartCtx<'a> {
    pub data: &'a RunData,
    pub f: &'a Findings,
    pub opts: &'a ReportOptions,
    /// The levels' axis.
    pub axis: XAxis,
    /// Seconds since the run started, the cycles shaded.
    pub time_axis: XAxis,
}

impl<'a> ChartCtx<'a> {
    pub fn new(data: &'a RunData, f: &'a Findings, opts: &'a ReportOptions) -> Self {
        let levels: Vec<f64> = data.levels.iter().map(|l| l.x).collect();
        Self {
            data,
            f,
            opts,
            axis: XAxis::Levels {
                title: super::x_title(data).into(),
                log: plot::wants_log(&levels),
                levels,
            },
            time_axis: XAxis::Time {
                spans: data.series.cycle_spans.clone(),
            },
        }
    }

    fn levels(&self) -> &'a [LevelRow] {
        &self.data.levels
    }

    /// The knee and the best level, marked on the throughput chart (one mark when they are
    /// the same level).
    fn marks(&self) -> Vec<Mark> {
        let levels = self.levels();
        let mut marks = Vec::new();
        if let Knee::At { index, .. } = self.f.knee {
            marks.push(Mark {
                x: levels[index].x,
                label: " knee".into(),
            });
        }
        if let Some(b) = self.f.best {
            marks.push(Mark {
                x: levels[b].x,
                label: if matches!(self.f.knee, Knee::At { index, .. } if index == b) {
                    " knee = best".into()
                } else {
                    " best".into()
                },
            });
            if marks.len() == 2 && marks[0].x == marks[1].x {
                marks.remove(0);
            }
        }
        marks
    }
}

/// Draws every registered chart; the notes of those omitted go to `notes`.
pub fn draw_all(ctx: &ChartCtx<'_>, notes: &mut Vec<String>) -> Result<Vec<Figure>, ReportError> {
    let mut figs = Vec::new();
    for chart in CHARTS {
        match chart(ctx)? {
            Drawn::Figure(f) => figs.push(f),
            Drawn::Skipped => {}
            Drawn::Omitted(note) => notes.push(note),
        }
    }
    Ok(figs)
}

/// One value per level, at the level's x (levels without it are left out).
fn points(levels: &[LevelRow], f: impl Fn(&LevelRow) -> Option<f64>) -> Vec<(f64, f64)> {
    levels
        .iter()
        .filter_map(|l| f(l).map(|y| (l.x, y)))
        .collect()
}

/// A line over the levels, with a dot at each.
fn line(name: &str, points: Vec<(f64, f64)>, color: usize) -> Line {
    Line {
        name: name.into(),
        points,
        color,
        dots: true,
    }
}

fn figure(file: &str, title: &str, caption: &str, (png, data): (Vec<u8>, ChartData)) -> Drawn {
    Drawn::Figure(Figure {
        file: file.into(),
        title: title.into(),
        caption: caption.into(),
        png,
        data: Some(Box::new(data)),
    })
}

/// A line chart drawn twice: the PNG, and its data for the page's interactive chart.
pub(super) fn line_chart(
    title: &str,
    x: &XAxis,
    y_title: &str,
    lines: &[Line],
    marks: &[Mark],
    hline: Option<(f64, &str)>,
) -> Result<(Vec<u8>, ChartData), ReportError> {
    Ok((
        plot::line_chart(title, x, y_title, lines, marks, hline)?,
        interactive::lines(title, x, y_title, lines, marks, hline),
    ))
}

/// Stacked bars drawn twice: the PNG, and its data for the page's interactive chart.
fn stacked_bars(
    title: &str,
    x_title: &str,
    y_title: &str,
    labels: &[String],
    stacks: &[Stack],
) -> Result<(Vec<u8>, ChartData), ReportError> {
    Ok((
        plot::stacked_bars(title, x_title, y_title, labels, stacks)?,
        interactive::bars(title, x_title, y_title, labels, stacks),
    ))
}

fn throughput(c: &ChartCtx<'_>) -> Result<Drawn, ReportError> {
    let png = line_chart(
        "Aggregate output tokens/s",
        &c.axis,
        "tokens/s",
        &[line(
            "aggregate",
            points(c.levels(), |l| Some(l.aggregate_tokens_per_s)),
            0,
        )],
        &c.marks(),
        None,
    )?;
    Ok(figure(
        "throughput.png",
        "Aggregate tokens/s",
        "Output tokens per second of all requests together, per level; the knee and the best level are marked.",
        png,
    ))
}

fn per_request(c: &ChartCtx<'_>) -> Result<Drawn, ReportError> {
    let png = line_chart(
        "Per-request decode rate",
        &c.axis,
        "tokens/s per request",
        &[
            line(
                "mean",
                points(c.levels(), |l| l.mean_request_tokens_per_s),
                0,
            ),
            line(
                "p10 (slowest tenth)",
                points(c.levels(), |l| l.request_tokens_per_s_p10),
                3,
            ),
        ],
        &[],
        Some((c.data.meta.slo.tokens_per_s, "SLO")),
    )?;
    Ok(figure(
        "per_request.png",
        "Per-request tokens/s",
        "Each request's decode rate (tokens after the first ÷ streaming time): the mean, and the 10th percentile (the slowest tenth of requests stream slower); dashed: the SLO.",
        png,
    ))
}

/// Where a request's time went per level, by the server's own timings (mean seconds).
fn breakdown(c: &ChartCtx<'_>) -> Result<Drawn, ReportError> {
    let rows: Vec<(&LevelRow, &tokengun_common::stats::ServerAccount)> = c
        .levels()
        .iter()
        .filter_map(|l| {
            l.server_account
                .as_ref()
                .filter(|a| a.breakdown_requests > 0)
                .map(|a| (l, a))
        })
        .collect();
    if rows.is_empty() {
        return Ok(Drawn::Skipped);
    }
    let labels: Vec<String> = rows.iter().map(|(l, _)| l.label.clone()).collect();
    type Part = fn(&tokengun_common::stats::ServerAccount) -> Option<f64>;
    let parts: [(&str, Part, usize); 5] = [
        ("queue (before the server started)", |a| a.queue_s_mean, 3),
        ("model load", |a| a.load_s_mean, 4),
        ("prefill", |a| a.prefill_s_mean, 1),
        ("decode", |a| a.decode_s_mean, 0),
        ("client (network, parse)", |a| a.client_s_mean, 7),
    ];
    let stacks: Vec<Stack> = parts
        .iter()
        .map(|(name, get, color)| Stack {
            name: (*name).into(),
            values: rows.iter().map(|(_, a)| get(a).unwrap_or(0.0)).collect(),
            color: *color,
        })
        .collect();
    let png = stacked_bars(
        "Where a request's time went (server timings)",
        super::x_title(c.data),
        "mean seconds per request",
        &labels,
        &stacks,
    )?;
    Ok(figure(
        "breakdown.png",
        "Time breakdown per level",
        "Mean per completed request, from its intended start to its end: queue (TTFT minus the server's load and prefill: connect and waiting for a slot), model load, prefill and decode as the server timed them, and the client's remainder (network, parsing, the stream's end). The bottom three make up TTFT.",
        png,
    ))
}

fn ttft(c: &ChartCtx<'_>) -> Result<Drawn, ReportError> {
    let png = line_chart(
        "Time to first token",
        &c.axis,
        "seconds",
        &[
            line("p50", points(c.levels(), |l| l.ttft.p50_s), 0),
            line("p90", points(c.levels(), |l| l.ttft.p90_s), 3),
            line("p99", points(c.levels(), |l| l.ttft.p99_s), 1),
        ],
        &[],
        c.data.meta.slo.ttft_s.map(|s| (s, "TTFT SLO")),
    )?;
    Ok(figure(
        "ttft.png",
        "Time to first token",
        "TTFT percentiles per level, from each request's intended start (queueing included).",
        png,
    ))
}

fn errors(c: &ChartCtx<'_>) -> Result<Drawn, ReportError> {
    let png = line_chart(
        "Error rate",
        &c.axis,
        "% of requests failed",
        &[line(
            "error rate",
            points(c.levels(), |l| Some(l.error_rate * 100.0)),
            1,
        )],
        &[],
        Some((c.opts.findings.max_error_rate * 100.0, "limit")),
    )?;
    Ok(figure(
        "errors.png",
        "Error rate",
        "Share of each level's requests that failed (any kind), percent.",
        png,
    ))
}

fn efficiency(c: &ChartCtx<'_>) -> Result<Drawn, ReportError> {
    let levels = c.levels();
    if levels.iter().all(|l| l.tokens_per_joule().is_none()) {
        return Ok(Drawn::Omitted(
            "no energy per level: the tokens-per-joule chart is omitted".into(),
        ));
    }
    let net = |l: &LevelRow| l.energy.as_ref().and_then(|e| e.net_tokens_per_joule);
    let mut lines = vec![line(
        "tokens/J",
        points(levels, LevelRow::tokens_per_joule),
        2,
    )];
    if levels.iter().any(|l| net(l).is_some()) {
        lines.push(line("tokens/J above idle", points(levels, net), 4));
    }
    let png = line_chart("Tokens per joule", &c.axis, "tokens/J", &lines, &[], None)?;
    Ok(figure(
        "efficiency.png",
        "Tokens per joule",
        "Output tokens per joule of measured energy per level (and above the idle baseline when one was measured).",
        png,
    ))
}

/// A chart over time of one kind of the monitors' series (a line each), scaled by `scale`;
/// skipped when the run has none.
struct OverTime {
    file: &'static str,
    title: &'static str,
    caption: &'static str,
    chart_title: &'static str,
    y_title: &'static str,
    series: fn(&Timeseries) -> &[Series],
    scale: f64,
}

const POWER: OverTime = OverTime {
    file: "power.png",
    title: "Power over time",
    caption: "Power readings per device (power.csv), with the levels shaded.",
    chart_title: "Power",
    y_title: "watts",
    series: |s| &s.power_w,
    scale: 1.0,
};

const FREQUENCY: OverTime = OverTime {
    file: "frequency.png",
    title: "Clock frequency over time",
    caption: "GPU/SM clock per device (power.csv freq_mhz), with the levels shaded.",
    chart_title: "Clock frequency",
    y_title: "MHz",
    series: |s| &s.freq_mhz,
    scale: 1.0,
};

const SERVER_CPU: OverTime = OverTime {
    file: "server_cpu.png",
    title: "Server CPU over time",
    caption: "CPU of the server's processes (percent of one core) and of the whole machine (percent of all cores), from processes.csv.",
    chart_title: "Server and machine CPU",
    y_title: "CPU %",
    series: |s| &s.cpu_pct,
    scale: 1.0,
};

const SERVER_QUEUE: OverTime = OverTime {
    file: "server_queue.png",
    title: "The server's queue over time",
    caption: "Requests the server itself said it was running and holding back (its Prometheus metrics, server_metrics.csv), with the levels shaded.",
    chart_title: "Server requests running and waiting",
    y_title: "requests",
    series: |s| &s.server_queue,
    scale: 1.0,
};

const SERVER_KV: OverTime = OverTime {
    file: "server_kv.png",
    title: "The server's KV cache over time",
    caption: "KV-cache use the server reported (its Prometheus metrics, server_metrics.csv), percent of the cache.",
    chart_title: "Server KV-cache use",
    y_title: "% of the KV cache",
    series: |s| &s.server_kv_pct,
    scale: 1.0,
};

const SERVER_MEMORY: OverTime = OverTime {
    file: "server_memory.png",
    title: "Server memory over time",
    caption: "Resident memory of the server's processes and memory used on the machine, GiB, from processes.csv.",
    chart_title: "Server and machine memory",
    y_title: "GiB",
    series: |s| &s.rss_bytes,
    scale: 1.0 / (1024.0 * 1024.0 * 1024.0),
};

fn over_time(c: &ChartCtx<'_>, t: &OverTime) -> Result<Drawn, ReportError> {
    let series = (t.series)(&c.data.series);
    if series.is_empty() {
        return Ok(Drawn::Skipped);
    }
    let lines: Vec<Line> = series
        .iter()
        .enumerate()
        .map(|(i, s)| Line {
            name: s.name.clone(),
            points: s.points.iter().map(|p| (p.0, p.1 * t.scale)).collect(),
            color: i,
            dots: false,
        })
        .collect();
    let png = line_chart(t.chart_title, &c.time_axis, t.y_title, &lines, &[], None)?;
    Ok(figure(t.file, t.title, t.caption, png))
}

/// The level whose requests the timeline shows: the one asked for, else the first past the knee
/// with requests, else the last with requests.
fn timeline_index(c: &ChartCtx<'_>) -> Result<Option<usize>, ReportError> {
    let levels = c.levels();
    if let Some(given) = &c.opts.timeline_level {
        let key = load::label_key(given);
        return match levels.iter().position(|l| load::label_key(&l.label) == key) {
            Some(i) => Ok(Some(i)),
            None => Err(ReportError::UnknownLevel {
                given: given.clone(),
                have: levels
                    .iter()
                    .map(|l| l.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        };
    }
    let with_spans = |i: &usize| !levels[*i].spans.is_empty();
    let after_knee = match c.f.knee {
        Knee::At { index, .. } => (index + 1..levels.len()).find(with_spans),
        _ => None,
    };
    Ok(after_knee.or_else(|| (0..levels.len()).rev().find(with_spans)))
}

fn timeline(c: &ChartCtx<'_>) -> Result<Drawn, ReportError> {
    let Some(i) = timeline_index(c)? else {
        return Ok(Drawn::Omitted(format!(
            "no {REQUEST_SUMMARY_CSV}: the per-request timeline is omitted"
        )));
    };
    let l = &c.levels()[i];
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
    let title = format!("Requests of level {}", l.label);
    let caption = format!(
        "One bar per request of level {}{}: waiting from its intended start to its first token (queueing and prefill), then streaming to its end. Requests that wait while others stream show the server's queue.",
        l.label,
        if shown < l.spans.len() {
            format!(
                " (the first {shown} of {} by intended start)",
                l.spans.len()
            )
        } else {
            String::new()
        }
    );
    let png = plot::timeline_chart(&title, &bars)?;
    Ok(Drawn::Figure(Figure {
        file: "timeline.png".into(),
        title,
        caption: format!(
            "{caption} In the page: pick another level, hover a bar for its request, drag to zoom; ticks mark each token's arrival."
        ),
        png,
        data: Some(Box::new(interactive::timeline(c.data, i))),
    }))
}
