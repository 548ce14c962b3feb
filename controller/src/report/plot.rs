//! PNG charts drawn in memory with plotters (bitmap backend) and the bundled DejaVu Sans font:
//! no system font lookup, no browser. The two kinds the report uses, a line chart and a
//! per-request timeline; each function returns the encoded PNG. Which charts a report has is
//! `charts.rs`'s list.

use super::util::fmt_num;
use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;
use std::sync::OnceLock;

/// Width and height of every chart, pixels (fits a blog column at 2x on a phone).
pub const SIZE_PX: (u32, u32) = (1000, 560);

/// DejaVu Sans (Bitstream Vera licence, `assets/fonts/DejaVuSans-LICENSE.txt`).
static FONT_TTF: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FONT: &str = "sans-serif";

/// Series colours, in order (colour-blind friendly enough, distinct in print).
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// A chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("the bundled chart font could not be loaded")]
    Font,
    #[error("drawing failed: {0}")]
    Draw(String),
    #[error("PNG encoding failed: {0}")]
    Png(String),
}

fn font_ready() -> Result<(), ChartError> {
    static READY: OnceLock<bool> = OnceLock::new();
    let ok = *READY
        .get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_TTF).is_ok());
    if ok { Ok(()) } else { Err(ChartError::Font) }
}

fn draw_err<E: std::fmt::Debug>(e: E) -> ChartError {
    ChartError::Draw(format!("{e:?}"))
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Index into [`PALETTE`].
    pub color: usize,
    /// Draw a dot at each point (level charts).
    pub dots: bool,
}

/// A vertical marker (the knee, the best level) at an x in data units.
#[derive(Debug, Clone)]
pub struct Mark {
    pub x: f64,
    pub label: String,
}

/// How the x axis is laid out.
#[derive(Debug, Clone)]
pub enum XAxis {
    /// Sweep levels (concurrency or rate): a tick at each level; `log` spaces them by log2.
    Levels {
        title: String,
        levels: Vec<f64>,
        log: bool,
    },
    /// Seconds since the run started, with shaded cycles `(label, from_s, to_s)`.
    Time { spans: Vec<(String, f64, f64)> },
}

/// Whether levels are geometric enough for a log x axis: all positive, at least three, and
/// spanning a factor of 8 or more.
pub fn wants_log(levels: &[f64]) -> bool {
    levels.len() >= 3
        && levels.iter().all(|x| *x > 0.0)
        && levels.iter().copied().fold(0.0, f64::max)
            >= 8.0 * levels.iter().copied().fold(f64::INFINITY, f64::min)
}

/// About `n` round tick values covering `lo..=hi`.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + 1e-9 && out.len() < 64 {
        out.push(v);
        v += step;
    }
    out
}

fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>, ChartError> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc
        .write_header()
        .map_err(|e| ChartError::Png(e.to_string()))?;
    wr.write_image_data(rgb)
        .map_err(|e| ChartError::Png(e.to_string()))?;
    wr.finish().map_err(|e| ChartError::Png(e.to_string()))?;
    Ok(out)
}

fn style(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

/// The canvas every chart draws on.
type Root<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// A chart's plotting area, in data units.
type Plot<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws on a blank white canvas of [`SIZE_PX`] and encodes it as PNG.
fn render(draw: impl FnOnce(&Root<'_>) -> Result<(), ChartError>) -> Result<Vec<u8>, ChartError> {
    font_ready()?;
    let mut buf = vec![255u8; (SIZE_PX.0 * SIZE_PX.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE_PX).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    encode_png(&buf, SIZE_PX)
}

/// The titled plotting area of every chart over `x` by `y`.
fn plot<'a, 'b>(
    root: &'a Root<'b>,
    title: &str,
    x: Range<f64>,
    y: Range<f64>,
) -> Result<Plot<'a, 'b>, ChartError> {
    ChartBuilder::on(root)
        .caption(title, style(26.0))
        .margin(14)
        .x_label_area_size(52)
        .y_label_area_size(78)
        .build_cartesian_2d(x, y)
        .map_err(draw_err)
}

/// The mesh every chart has: axis titles, label fonts, faint grid lines.
fn mesh<'p, 'a, 'b>(
    chart: &'p mut Plot<'a, 'b>,
    x_title: &str,
    y_title: &str,
) -> MeshStyle<'a, 'p, RangedCoordf64, RangedCoordf64, BitMapBackend<'b>> {
    let mut m = chart.configure_mesh();
    m.x_desc(x_title)
        .y_desc(y_title)
        .axis_desc_style(style(18.0))
        .label_style(style(15.0))
        .max_light_lines(1)
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(210, 210, 210));
    m
}

/// The legend of the series drawn with a label, in the upper right.
fn legend<'a, 'b: 'a>(chart: &mut Plot<'a, 'b>) -> Result<(), ChartError> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(style(15.0))
        .draw()
        .map_err(draw_err)
}

/// The x range a line chart shows (in transformed units), padded a little on both sides.
fn x_range(x: &XAxis, lines: &[Line], tx: impl Fn(f64) -> f64) -> (f64, f64) {
    let xs: Vec<f64> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| tx(p.0)))
        .chain(match x {
            XAxis::Levels { levels, .. } => levels.iter().map(|v| tx(*v)).collect::<Vec<_>>(),
            XAxis::Time { spans } => spans.iter().flat_map(|s| [s.1, s.2]).collect(),
        })
        .collect();
    let (mut x0, mut x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    if !x0.is_finite() || !x1.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let pad = (x1 - x0) * 0.04;
    (x0 - pad, x1 + pad)
}

/// The top of a line chart's y axis: a little above the highest point or reference line.
fn y_top(lines: &[Line], hline: Option<(f64, &str)>) -> f64 {
    let ymax = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(hline.map(|h| h.0))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    if ymax > 0.0 { ymax * 1.12 } else { 1.0 }
}

/// Where the x ticks go (transformed units) and the x axis's title.
fn x_ticks(x: &XAxis, (x0, x1): (f64, f64), tx: impl Fn(f64) -> f64) -> (Vec<f64>, String) {
    match x {
        XAxis::Levels { title, levels, .. } if levels.len() <= 16 => {
            (levels.iter().map(|v| tx(*v)).collect(), title.clone())
        }
        XAxis::Levels { title, .. } => (nice_ticks(x0, x1, 10), title.clone()),
        XAxis::Time { .. } => (
            nice_ticks(x0.max(0.0), x1, 10),
            "seconds since the run started".into(),
        ),
    }
}

/// The x ticks, drawn by hand: at each level (or round times), not where plotters would.
fn draw_x_ticks(
    root: &Root<'_>,
    chart: &mut Plot<'_, '_>,
    ticks: &[f64],
    y1: f64,
    log: bool,
) -> Result<(), ChartError> {
    chart
        .draw_series(ticks.iter().map(|t| {
            PathElement::new(
                [(*t, 0.0), (*t, y1)],
                RGBColor(225, 225, 225).stroke_width(1),
            )
        }))
        .map_err(draw_err)?;
    for t in ticks {
        let (px, py) = chart.backend_coord(&(*t, 0.0));
        let label = if log { fmt_num(t.exp2()) } else { fmt_num(*t) };
        root.draw(&Text::new(
            label,
            (px, py + 8),
            style(15.0).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(draw_err)?;
    }
    Ok(())
}

/// The cycles shaded in turn behind a time axis, each with its label.
fn shade_spans(
    chart: &mut Plot<'_, '_>,
    spans: &[(String, f64, f64)],
    y1: f64,
) -> Result<(), ChartError> {
    for (i, (label, a, b)) in spans.iter().enumerate() {
        let shade = if i % 2 == 0 {
            RGBColor(238, 243, 250)
        } else {
            RGBColor(250, 246, 236)
        };
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(*a, 0.0), (*b, y1)],
                shade.filled(),
            )))
            .map_err(draw_err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                label.clone(),
                (*a, y1 * 0.985),
                style(13.0),
            )))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// A dashed horizontal reference line across `x0..x1`, in the legend.
fn draw_hline(
    chart: &mut Plot<'_, '_>,
    (y, label): (f64, &str),
    (x0, x1): (f64, f64),
) -> Result<(), ChartError> {
    let grey = RGBColor(120, 120, 120).stroke_width(2);
    chart
        .draw_series(DashedLineSeries::new([(x0, y), (x1, y)], 8, 6, grey))
        .map_err(draw_err)?
        .label(label.to_string())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey));
    Ok(())
}

/// Dashed vertical markers with their labels.
fn draw_marks(
    chart: &mut Plot<'_, '_>,
    marks: &[Mark],
    y1: f64,
    tx: impl Fn(f64) -> f64,
) -> Result<(), ChartError> {
    for m in marks {
        let mx = tx(m.x);
        chart
            .draw_series(DashedLineSeries::new(
                [(mx, 0.0), (mx, y1)],
                5,
                5,
                RGBColor(90, 90, 90).stroke_width(1),
            ))
            .map_err(draw_err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                m.label.clone(),
                (mx, y1 * 0.93),
                style(15.0),
            )))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// The lines (and their dots), each in the legend.
fn draw_lines(
    chart: &mut Plot<'_, '_>,
    lines: &[Line],
    tx: impl Fn(f64) -> f64,
) -> Result<(), ChartError> {
    for l in lines {
        let c = PALETTE[l.color % PALETTE.len()];
        let pts: Vec<(f64, f64)> = l
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|p| (tx(p.0), p.1))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))
            .map_err(draw_err)?
            .label(l.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(3)));
        if l.dots {
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 5, c.filled())))
                .map_err(draw_err)?;
        }
    }
    Ok(())
}

/// A line chart of `lines` over `x`. `hline` draws a dashed horizontal reference (e.g. the SLO).
pub fn line_chart(
    title: &str,
    x: &XAxis,
    y_title: &str,
    lines: &[Line],
    marks: &[Mark],
    hline: Option<(f64, &str)>,
) -> Result<Vec<u8>, ChartError> {
    // The x transform: log2 for geometric levels.
    let log = matches!(x, XAxis::Levels { log: true, .. });
    let tx = |v: f64| if log { v.max(1e-12).log2() } else { v };
    let (x0, x1) = x_range(x, lines, tx);
    let y1 = y_top(lines, hline);
    let (ticks, x_title) = x_ticks(x, (x0, x1), tx);
    render(|root| {
        let mut chart = plot(root, title, x0..x1, 0.0..y1)?;
        let fmt_y = |v: &f64| fmt_num(*v);
        mesh(&mut chart, &x_title, y_title)
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&fmt_y)
            .y_labels(8)
            .draw()
            .map_err(draw_err)?;
        draw_x_ticks(root, &mut chart, &ticks, y1, log)?;
        if let XAxis::Time { spans } = x {
            shade_spans(&mut chart, spans, y1)?;
        }
        if let Some(h) = hline {
            draw_hline(&mut chart, h, (x0, x1))?;
        }
        draw_marks(&mut chart, marks, y1, tx)?;
        draw_lines(&mut chart, lines, tx)?;
        legend(&mut chart)
    })
}

/// One request in the timeline chart (seconds from the cycle's origin).
#[derive(Debug, Clone, Copy)]
pub struct Bar {
    pub start_s: f64,
    /// Where waiting ends and streaming begins; `None` when no token came.
    pub first_token_s: Option<f64>,
    pub end_s: f64,
    pub failed: bool,
}

const WAITING: RGBColor = RGBColor(255, 170, 60);
const STREAMING: RGBColor = RGBColor(31, 119, 180);
const FAILED: RGBColor = RGBColor(214, 39, 40);

/// The bars' rectangles, the first request on top: waiting then streaming, or one failed bar.
fn bar_rects(bars: &[Bar]) -> Vec<Rectangle<(f64, f64)>> {
    let gap = if bars.len() > 60 { 0.0 } else { 0.15 };
    let mut rects = Vec::with_capacity(bars.len() * 2);
    for (i, b) in bars.iter().enumerate() {
        let row = (bars.len() - 1 - i) as f64;
        let (y0, y1) = (row + gap, row + 1.0 - gap);
        if b.failed {
            rects.push(Rectangle::new(
                [(b.start_s, y0), (b.end_s, y1)],
                FAILED.filled(),
            ));
            continue;
        }
        let ft = b.first_token_s.unwrap_or(b.end_s);
        rects.push(Rectangle::new(
            [(b.start_s, y0), (ft, y1)],
            WAITING.filled(),
        ));
        rects.push(Rectangle::new(
            [(ft, y0), (b.end_s, y1)],
            STREAMING.filled(),
        ));
    }
    rects
}

/// One horizontal bar per request: waiting (intended start to first token) then streaming
/// (first token to end); failed requests in red.
pub fn timeline_chart(title: &str, bars: &[Bar]) -> Result<Vec<u8>, ChartError> {
    // Room on the right for the legend.
    let t1 = bars.iter().map(|b| b.end_s).fold(0.0, f64::max).max(1e-3) * 1.3;
    let t0 = bars.iter().map(|b| b.start_s).fold(0.0, f64::min);
    let n = bars.len().max(1) as f64;
    render(|root| {
        let mut chart = plot(root, title, t0..t1, 0.0..n)?;
        let fmt_x = |v: &f64| fmt_num(*v);
        let fmt_y = |v: &f64| format!("{}", bars.len().saturating_sub(*v as usize));
        mesh(
            &mut chart,
            "seconds from the level's start",
            "requests (first on top)",
        )
        .x_label_formatter(&fmt_x)
        .y_label_formatter(&fmt_y)
        .disable_y_mesh()
        .draw()
        .map_err(draw_err)?;
        chart.draw_series(bar_rects(bars)).map_err(draw_err)?;
        for (name, c) in [
            ("waiting (to first token)", WAITING),
            ("streaming", STREAMING),
            ("failed", FAILED),
        ] {
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(draw_err)?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], c.filled()));
        }
        legend(&mut chart)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(
            nice_ticks(0.0, 10.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        assert!(wants_log(&[1.0, 2.0, 4.0, 8.0]));
        assert!(!wants_log(&[1.0, 2.0, 3.0]));
    }

    #[test]
    fn a_chart_is_a_png_with_ink() {
        let png_bytes = line_chart(
            "tokens/s",
            &XAxis::Levels {
                title: "concurrency".into(),
                levels: vec![1.0, 2.0, 4.0, 8.0],
                log: true,
            },
            "tokens/s",
            &[Line {
                name: "aggregate".into(),
                points: vec![(1.0, 80.0), (2.0, 160.0), (4.0, 320.0), (8.0, 330.0)],
                color: 0,
                dots: true,
            }],
            &[Mark {
                x: 4.0,
                label: "knee".into(),
            }],
            Some((100.0, "SLO")),
        )
        .unwrap();
        assert_eq!(&png_bytes[1..4], b"PNG");
        let dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = dec.read_info().unwrap();
        let mut px = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut px).unwrap();
        let blue = px
            .chunks(3)
            .filter(|p| p[0] == 31 && p[1] == 119 && p[2] == 180)
            .count();
        assert!(blue > 500, "the line is drawn ({blue} px)");
        let dark = px
            .chunks(3)
            .filter(|p| p[0] < 60 && p[1] < 60 && p[2] < 60)
            .count();
        assert!(dark > 500, "text and axes are drawn ({dark} px)");
    }
}

/// One layer of a stacked bar chart: a value per category (0 where absent).
#[derive(Debug, Clone)]
pub struct Stack {
    pub name: String,
    pub values: Vec<f64>,
    /// Index into [`PALETTE`].
    pub color: usize,
}

/// One bar per category (`labels`, in order), its layers stacked bottom-up in `stacks` order.
pub fn stacked_bars(
    title: &str,
    x_title: &str,
    y_title: &str,
    labels: &[String],
    stacks: &[Stack],
) -> Result<Vec<u8>, ChartError> {
    let n = labels.len().max(1);
    let top = (0..n)
        .map(|i| stacks.iter().filter_map(|s| s.values.get(i)).sum::<f64>())
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.35; // room for the legend
    render(|root| {
        let mut chart = plot(root, title, -0.5..n as f64 - 0.5, 0.0..top)?;
        let fmt_x = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        let fmt_y = |v: &f64| fmt_num(*v);
        mesh(&mut chart, x_title, y_title)
            .x_labels(n)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .disable_x_mesh()
            .draw()
            .map_err(draw_err)?;
        let mut base = vec![0.0; n];
        for s in stacks {
            let c = PALETTE[s.color % PALETTE.len()];
            let rects: Vec<Rectangle<(f64, f64)>> = (0..n)
                .filter_map(|i| {
                    let v = s.values.get(i).copied().filter(|v| *v > 0.0)?;
                    let (x, y0) = (i as f64, base[i]);
                    base[i] += v;
                    Some(Rectangle::new(
                        [(x - 0.35, y0), (x + 0.35, y0 + v)],
                        c.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(rects)
                .map_err(draw_err)?
                .label(s.name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], c.filled()));
        }
        legend(&mut chart)
    })
}
