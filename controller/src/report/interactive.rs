//! The interactive layer of report.html and compare.html: each figure's data as JSON in the
//! page, drawn by the vendored uPlot (MIT, `vendor/uPlot.LICENSE`, inlined at build time: the
//! page still fetches nothing) and `report.js`: hover for values, click a legend entry to hide
//! its series, drag to zoom (double-click resets), and a per-request timeline explorer with a
//! level picker (waiting and streaming bars, each token's arrival). The PNGs stay in report.md
//! and inside `<noscript>`.

use super::load::RunData;
use super::plot::{Line, Mark, PALETTE, Stack, XAxis};
use serde::Serialize;
use std::collections::HashMap;
use tokengun_common::RecordBody;
use tokengun_common::run_dir::RECORDS_PB;

/// uPlot 1.6.32 (npm `uplot`), its minified IIFE build and stylesheet.
const UPLOT_JS: &str = include_str!("vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("vendor/uPlot.min.css");
/// The page's own code: builds a chart for every `.ichart` from the embedded data.
const REPORT_JS: &str = include_str!("report.js");

/// Requests per level in the timeline explorer, and token arrivals kept per level.
const EXPLORER_REQUESTS: usize = super::TIMELINE_MAX_BARS;
const EXPLORER_TOKENS_MAX: usize = 100_000;

/// What one figure's interactive chart draws.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChartData {
    /// Lines over the levels or over time.
    Lines {
        title: String,
        x_title: String,
        y_title: String,
        log_x: bool,
        series: Vec<DataSeries>,
        /// Vertical markers (x, label) and a horizontal reference (y, label).
        marks: Vec<(f64, String)>,
        hline: Option<(f64, String)>,
        /// Shaded spans of x (a level's time on a time axis).
        spans: Vec<(String, f64, f64)>,
    },
    /// One stacked bar per label.
    Bars {
        title: String,
        x_title: String,
        y_title: String,
        labels: Vec<String>,
        series: Vec<DataSeries>,
    },
    /// The per-request timeline explorer: the levels to choose from and the one shown first.
    Timeline {
        levels: Vec<TimelineLevel>,
        chosen: usize,
    },
}

/// One series: its name, colour, and (x, y) points (Bars: x is the label's index).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataSeries {
    pub name: String,
    pub color: String,
    pub points: Vec<(f64, f64)>,
}

/// One level of the timeline explorer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineLevel {
    pub label: String,
    /// Requests shown (the first by intended start) out of all of the level's.
    pub total: usize,
    pub requests: Vec<TimelineRequest>,
}

/// One request's bar: seconds from the level's origin; `tokens_s` each chunk's arrival.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineRequest {
    pub id: u64,
    pub start_s: f64,
    pub first_token_s: Option<f64>,
    pub end_s: f64,
    pub failed: bool,
    pub tokens: u64,
    pub tokens_s: Vec<f64>,
}

fn hex(i: usize) -> String {
    let c = PALETTE[i % PALETTE.len()];
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// The data of a [`super::plot::line_chart`] with the same arguments.
pub fn lines(
    title: &str,
    x: &XAxis,
    y_title: &str,
    lines: &[Line],
    marks: &[Mark],
    hline: Option<(f64, &str)>,
) -> ChartData {
    let (x_title, log_x, spans) = match x {
        XAxis::Levels { title, log, .. } => (title.clone(), *log, Vec::new()),
        XAxis::Time { spans } => ("seconds since the run started".into(), false, spans.clone()),
    };
    ChartData::Lines {
        title: title.into(),
        x_title,
        y_title: y_title.into(),
        log_x,
        series: lines
            .iter()
            .map(|l| DataSeries {
                name: l.name.clone(),
                color: hex(l.color),
                points: l.points.clone(),
            })
            .collect(),
        marks: marks
            .iter()
            .map(|m| (m.x, m.label.trim().to_string()))
            .collect(),
        hline: hline.map(|(y, l)| (y, l.to_string())),
        spans,
    }
}

/// The data of a [`super::plot::stacked_bars`] with the same arguments.
pub fn bars(
    title: &str,
    x_title: &str,
    y_title: &str,
    labels: &[String],
    stacks: &[Stack],
) -> ChartData {
    ChartData::Bars {
        title: title.into(),
        x_title: x_title.into(),
        y_title: y_title.into(),
        labels: labels.to_vec(),
        series: stacks
            .iter()
            .map(|s| DataSeries {
                name: s.name.clone(),
                color: hex(s.color),
                points: s
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as f64, *v))
                    .collect(),
            })
            .collect(),
    }
}

/// The timeline explorer over every level; `chosen` is the level the PNG shows. Token arrivals come from records.pb when the run has it.
pub fn timeline(data: &RunData, chosen: usize) -> ChartData {
    let tokens = token_arrivals(data);
    let levels: Vec<TimelineLevel> = data
        .levels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut spans = l.spans.clone();
            spans.sort_by(|a, b| a.intended_s.total_cmp(&b.intended_s));
            let mut budget = EXPLORER_TOKENS_MAX;
            let requests = spans
                .iter()
                .take(EXPLORER_REQUESTS)
                .map(|s| {
                    let mut arrivals: Vec<f64> =
                        tokens.get(&(i, s.request_id)).cloned().unwrap_or_default();
                    arrivals.truncate(budget);
                    budget -= arrivals.len();
                    TimelineRequest {
                        id: s.request_id,
                        start_s: s.intended_s,
                        first_token_s: s.first_token_s,
                        end_s: s.end_s,
                        failed: !s.completed,
                        tokens: arrivals.len() as u64,
                        tokens_s: arrivals,
                    }
                })
                .collect();
            TimelineLevel {
                label: l.label.clone(),
                total: l.spans.len(),
                requests,
            }
        })
        .collect();
    ChartData::Timeline { levels, chosen }
}

/// (level index, request id) -> each chunk's arrival, seconds from the cycle's origin (a token
/// per entry; the first agent's when several agents share ids). Empty without records.pb.
fn token_arrivals(data: &RunData) -> HashMap<(usize, u64), Vec<f64>> {
    let mut out: HashMap<(usize, u64), Vec<f64>> = HashMap::new();
    let Ok(stored) = tokengun_proto::stored::read_all(&data.dir.join(RECORDS_PB)) else {
        return out;
    };
    let level_of: HashMap<u32, usize> =
        tokengun_common::run_dir::cycle_ids(data.levels.iter().map(|l| l.cycle.cycle_id))
            .into_iter()
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
    for (_, rec) in stored {
        let RecordBody::Request(r) = rec.body else {
            continue;
        };
        let Some(&i) = level_of.get(&r.cycle_id) else {
            continue;
        };
        out.entry((i, u64::from(r.request_id))).or_insert_with(|| {
            r.timeline
                .iter()
                .flat_map(|c| {
                    std::iter::repeat_n(c.offset_ns as f64 / 1e9, c.tokens.max(1) as usize)
                })
                .collect()
        });
    }
    out
}

/// JSON safe inside a `<script>` element: no `<`, `>`, `&` or line separators left as such, so
/// no text in the data (a model name, an error) can close the element or start a comment.
pub fn script_json(v: &impl Serialize) -> String {
    let json = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The stylesheet the interactive charts need (uPlot's and the page's own).
pub fn style() -> String {
    format!(
        "<style>\n{UPLOT_CSS}\n.ichart {{ min-height: 300px; max-width: 100%; overflow-x: hidden; }}\n.ichart .uplot {{ width: auto; max-width: 100%; }}\n.ichart .u-legend, .ichart .u-legend tbody {{ display: block; max-width: 100%; white-space: normal; }}\n.ichart .u-title {{ font-size: 1rem; }}\n.tg-pick {{ margin: 4px 0 8px; font-size: 0.95rem; }}\n.tg-info {{ color: #333; font-size: 0.9rem; min-height: 1.4em; font-variant-numeric: tabular-nums; }}\n.tg-key span {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: -1px; }}\n</style>\n"
    )
}

/// The scripts at the end of the page: the figures' data, uPlot, and the page's code.
pub fn scripts(data: &[Option<&ChartData>]) -> String {
    format!(
        "<script type=\"application/json\" id=\"tg-data\">{}</script>\n<script>\n{UPLOT_JS}\n</script>\n<script>\n{REPORT_JS}\n</script>\n",
        script_json(&data)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_json_cannot_close_its_script() {
        let nasty = vec![
            "</script><script>alert(1)</script><!--",
            "a & b",
            "\u{2028}",
        ];
        let s = script_json(&nasty);
        assert!(
            !s.contains('<') && !s.contains('>') && !s.contains('&'),
            "{s}"
        );
        let back: Vec<String> = serde_json::from_str(&s).unwrap_or_default();
        assert_eq!(back, nasty);
    }

    #[test]
    fn the_vendored_library_is_whole_and_fetches_nothing() {
        assert!(UPLOT_JS.contains("uPlot") && UPLOT_JS.len() > 40_000);
        for code in [UPLOT_JS, REPORT_JS] {
            assert!(
                !code.contains("</script"),
                "a script must not close its element"
            );
            assert!(!code.contains("fetch(") && !code.contains("XMLHttpRequest"));
        }
    }
}
