//! The live console's frame: pure render functions from a [`LiveState`] to a ratatui frame (a
//! header with the cycle, the monitors' figures and the throughput sparkline and level strip, the agents, the requests table, the finished
//! levels, messages and keys). Nothing here changes state or touches the terminal.

use super::state::CycleShape;
use super::state::{AgentRow, LevelRow, LiveState, MonitorSnapshot, RowStatus, TableRow};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use std::time::Instant;
use tokengun_common::Progress;

/// Shown for a figure that is not known.
pub const ABSENT: &str = "—";
/// Finished levels shown at once (the latest).
const LEVELS_SHOWN: usize = 6;
/// The keys, as the footer says them.
pub const KEYS_HELP: &str = "q stop (results kept) · p pause table · ↑↓ PgUp PgDn Home End scroll";

/// Where each part of the frame goes.
struct Areas {
    header: Rect,
    agents: Rect,
    requests: Rect,
    levels: Rect,
    footer: Rect,
}

fn areas(size: Rect, s: &LiveState) -> Areas {
    let agents = u16::try_from(s.agents.len().max(1)).unwrap_or(u16::MAX);
    let levels = u16::try_from(s.levels.len().min(LEVELS_SHOWN)).unwrap_or(0);
    let parts = Layout::vertical([
        Constraint::Length(4),
        Constraint::Length(agents.saturating_add(2)),
        Constraint::Min(3),
        Constraint::Length(if levels == 0 { 0 } else { levels + 2 }),
        Constraint::Length(2),
    ])
    .split(size);
    Areas {
        header: parts[0],
        agents: parts[1],
        requests: parts[2],
        levels: parts[3],
        footer: parts[4],
    }
}

/// Requests table rows that fit in a frame of `size` (title and column header excluded).
pub fn table_viewport(size: Rect, s: &LiveState) -> usize {
    usize::from(areas(size, s).requests.height.saturating_sub(2))
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.2}s"))
}

fn bytes_text(b: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    let b = b as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", b / MIB)
    }
}

/// The monitors' line: every figure that is known, "—" for the others.
pub fn monitor_text(m: Option<&MonitorSnapshot>) -> String {
    let Some(m) = m else {
        return format!("GPU/power {ABSENT} · server process {ABSENT} (no monitor figures)");
    };
    let fig = |v: Option<f64>, digits: usize, unit: &str| {
        v.map_or_else(|| ABSENT.to_string(), |x| format!("{x:.digits$}{unit}"))
    };
    format!(
        "GPU usage {} · power {} · clock {} │ server CPU {} · RSS {}",
        fig(m.gpu_busy_pct, 1, "%"),
        fig(m.power_w, 1, " W"),
        fig(m.gpu_freq_mhz, 0, " MHz"),
        fig(m.server_cpu_pct, 0, "%"),
        m.server_rss_bytes
            .map_or_else(|| ABSENT.to_string(), bytes_text),
    )
}

fn status_style(s: RowStatus) -> Style {
    match s {
        RowStatus::Waiting => Style::new().fg(Color::Yellow),
        RowStatus::InProgress => Style::new().fg(Color::Cyan),
        RowStatus::Ended(k) if k.is_failure() => Style::new().fg(Color::Red),
        RowStatus::Ended(_) => Style::new().fg(Color::Green),
    }
}

fn request_row(r: &TableRow) -> Row<'static> {
    Row::new(vec![
        format!("{:>6}", r.request_id),
        format!("{:>6}", r.tokens),
        format!(
            "{:>8}",
            r.tokens_per_s
                .map_or_else(|| "-".to_string(), |x| format!("{x:.2}"))
        ),
        format!("{:>7}", secs(r.ttfb_s)),
        format!("{:>8}", secs(r.waiting_s)),
        format!("{:>8}", secs(r.duration_s)),
        r.status.text().to_string(),
    ])
    .style(status_style(r.status))
}

fn agent_row(a: &AgentRow) -> Row<'static> {
    Row::new(vec![
        a.name.clone(),
        if a.connected { "yes" } else { "LOST" }.to_string(),
        format!("{:>9}", a.in_flight),
        format!("{:>8}", a.requests),
        format!("{:>9.1}", a.tokens_per_s),
        format!("{:>7}", a.dropped),
    ])
    .style(if a.connected {
        Style::new()
    } else {
        Style::new().fg(Color::Red)
    })
}

fn level_row(l: &LevelRow) -> Row<'static> {
    Row::new(vec![
        format!("{:>6}", l.level),
        format!("{:>5}", l.requests),
        format!("{:>6}", l.failed),
        format!("{:>9.1}", l.aggregate_tokens_per_s),
        format!("{:>8}", secs(l.ttft_p50_s)),
        format!("{:>8}", secs(l.ttft_p99_s)),
        format!(
            "{}{}{}",
            l.errors,
            if l.errors.is_empty() || l.flag.is_empty() {
                ""
            } else {
                " "
            },
            l.flag
        ),
    ])
}

fn header_style() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

fn section(title: String) -> Block<'static> {
    Block::new()
        .borders(Borders::TOP)
        .title(title)
        .title_style(header_style())
}

/// A cycle's progress in one line: a bar (requests done for a burst, time for timed cycles),
/// counts, tokens, rate and time.
pub fn progress_text(c: &CycleShape, p: &Progress) -> String {
    let elapsed_s = p.elapsed_ns as f64 / 1e9;
    let done = p.completed + p.failed;
    let width = 20usize;
    let planned = c.shape.planned_requests(c.concurrency);
    let fraction = match planned {
        Some(n) if n > 0 => f64::from(done) / f64::from(n),
        _ if c.duration_s > 0.0 => elapsed_s / c.duration_s,
        _ => 0.0,
    };
    let filled = ((fraction.clamp(0.0, 1.0)) * width as f64) as usize;
    let of = planned.map_or_else(String::new, |n| format!("/{n}"));
    let bar: String = "█".repeat(filled) + &"░".repeat(width - filled.min(width));
    let rate = if elapsed_s > 0.0 {
        p.tokens as f64 / elapsed_s
    } else {
        0.0
    };
    format!(
        "{bar} {done}{of} done · {} failed · {} in flight · {} tokens · {rate:.1} tok/s · {elapsed_s:.1} s",
        p.failed, p.in_flight, p.tokens
    )
}

/// Draws the whole console.
pub fn render(f: &mut Frame, s: &LiveState, now: Instant) {
    let a = areas(f.area(), s);
    render_header(f, s, a.header);
    render_agents(f, s, a.agents);
    render_requests(f, s, now, a.requests);
    if !s.levels.is_empty() {
        render_levels(f, s, a.levels);
    }
    render_footer(f, s, a.footer);
}

/// The cycle and its progress, then the monitors.
fn render_header(f: &mut Frame, s: &LiveState, area: Rect) {
    let (title, progress) = match &s.cycle {
        Some(c) => (
            c.title.clone(),
            match (&c.shape, &c.progress) {
                (Some(shape), Some(p)) => progress_text(shape, p),
                _ => "starting…".to_string(),
            },
        ),
        None => ("preparing the run…".to_string(), String::new()),
    };
    let stopping = if s.stopping { "  ■ STOPPING" } else { "" };
    f.render_widget(
        Paragraph::new(vec![
            Line::styled(format!("tokengun live · {title}{stopping}"), header_style()),
            Line::raw(progress),
            Line::raw(monitor_text(s.monitor.as_ref())),
            Line::styled(
                super::spark::history_line(&s.spark, &s.levels, usize::from(area.width)),
                Style::new().fg(Color::Cyan),
            ),
        ]),
        area,
    );
}

/// One row per agent.
fn render_agents(f: &mut Frame, s: &LiveState, area: Rect) {
    let agents = Table::new(
        s.agents.iter().map(agent_row),
        [
            Constraint::Min(16),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(7),
        ],
    )
    .header(
        Row::new([
            "AGENT",
            "CONNECTED",
            "IN FLIGHT",
            "REQUESTS",
            "TOKENS/S",
            "DROPPED",
        ])
        .style(header_style()),
    )
    .block(section(" Agents ".into()));
    f.render_widget(agents, area);
}

/// The requests of the running cycle.
fn render_requests(f: &mut Frame, s: &LiveState, now: Instant, area: Rect) {
    let (table, at) = s.shown_table(now);
    let total = table.len();
    let shown = table_viewport(f.area(), s);
    let first = s.scroll.min(total.saturating_sub(1));
    let rows = table.window(first, shown, at);
    let mut title = format!(" Requests of {} · {total} rows", table.cycle_title);
    if total > rows.len() {
        title.push_str(&format!(" · {}-{} shown", first + 1, first + rows.len()));
    }
    if table.live_omitted > 0 {
        title.push_str(&format!(
            " · {} more in flight not listed",
            table.live_omitted
        ));
    }
    if table.finished_omitted > 0 {
        title.push_str(&format!(
            " · {} older ended rows dropped",
            table.finished_omitted
        ));
    }
    if s.paused() {
        title.push_str(" · PAUSED (p resumes)");
    }
    title.push(' ');
    let requests = Table::new(
        rows.iter().map(request_row),
        [
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Min(12),
        ],
    )
    .header(
        Row::new([
            "REQ ID", "TOKENS", "TOKENS/S", "TTFB", "WAITING", "DURATION", "STATUS",
        ])
        .style(header_style()),
    )
    .block(section(title));
    f.render_widget(requests, area);
}

/// The finished levels, latest last.
fn render_levels(f: &mut Frame, s: &LiveState, area: Rect) {
    let skip = s.levels.len().saturating_sub(LEVELS_SHOWN);
    let levels = Table::new(
        s.levels.iter().skip(skip).map(level_row),
        [
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Min(8),
        ],
    )
    .header(
        Row::new([
            "LEVEL",
            "REQS",
            "FAILED",
            "AGG TOK/S",
            "TTFT p50",
            "TTFT p99",
            "ERRORS",
        ])
        .style(header_style()),
    )
    .block(section(format!(" Finished levels ({}) ", s.levels.len())));
    f.render_widget(levels, area);
}

/// The latest message and the keys.
fn render_footer(f: &mut Frame, s: &LiveState, area: Rect) {
    let mut keys = KEYS_HELP.to_string();
    if s.events_dropped > 0 {
        keys.push_str(&format!(
            " · {} console updates skipped (busy)",
            s.events_dropped
        ));
    }
    f.render_widget(
        Paragraph::new(vec![
            Line::raw(s.messages.back().cloned().unwrap_or_default()),
            Line::styled(keys, Style::new().fg(Color::DarkGray)),
        ]),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::super::state::{Action, CycleShape, Event, ended_row};
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use tokengun_common::{LivePhase, LiveRequest, LoadShape, OutcomeKind, Progress};

    fn screen(s: &LiveState, width: u16, height: u16) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
        let now = Instant::now();
        t.draw(|f| render(f, s, now)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect()
    }

    fn has(lines: &[String], needle: &str) -> bool {
        lines.iter().any(|l| l.contains(needle))
    }

    fn row_of(lines: &[String], id: u32) -> Option<&String> {
        let cell = format!("{id:>6} ");
        lines.iter().find(|l| l.starts_with(&cell))
    }

    fn burst(requests: u32) -> LiveState {
        let mut s = LiveState::new();
        let now = Instant::now();
        s.apply(Event::Agents(vec!["127.0.0.1:7411".into()]), now);
        s.apply(
            Event::CycleStart {
                title: format!("cycle 2/4: {requests} concurrent requests to m"),
            },
            now,
        );
        let live = (1..=requests)
            .filter(|id| id % 3 != 0)
            .map(|id| LiveRequest {
                request_id: id,
                phase: if id % 2 == 0 {
                    LivePhase::InProgress
                } else {
                    LivePhase::Waiting
                },
                tokens: if id % 2 == 0 { 52 } else { 0 },
                intended_start_ns: 0,
                dispatched_ns: 0,
                sent_ns: Some(0),
                first_byte_ns: (id % 2 == 0).then_some(2_570_000_000),
                first_token_ns: (id % 2 == 0).then_some(2_570_000_000),
            })
            .collect();
        s.apply(
            Event::Progress {
                agent: 0,
                shape: CycleShape {
                    shape: LoadShape::Burst,
                    concurrency: requests,
                    duration_s: 0.0,
                },
                progress: Progress {
                    cycle_id: 2,
                    in_flight: requests - requests / 3,
                    completed: requests / 3,
                    tokens: 1000,
                    elapsed_ns: 7_000_000_000,
                    live,
                    ..Progress::default()
                },
            },
            now,
        );
        for id in (1..=requests).filter(|id| id % 3 == 0) {
            s.apply(
                Event::Finished(TableRow {
                    request_id: id,
                    tokens: 100,
                    tokens_per_s: Some(12.5),
                    ttfb_s: Some(0.4),
                    waiting_s: Some(0.4),
                    duration_s: Some(8.0),
                    status: RowStatus::Ended(if id == 6 {
                        OutcomeKind::Timeout
                    } else {
                        OutcomeKind::Completed
                    }),
                }),
                now,
            );
        }
        s
    }

    #[test]
    fn the_study_table_with_every_status() {
        let s = burst(9);
        let lines = screen(&s, 110, 30);
        assert!(has(
            &lines,
            "REQ ID TOKENS TOKENS/S TTFB    WAITING  DURATION STATUS"
        ));
        let r1 = row_of(&lines, 1).expect("row 1");
        assert!(r1.contains("Waiting") && r1.contains("7.00s"), "{r1}");
        let r2 = row_of(&lines, 2).expect("row 2");
        assert!(
            r2.contains("52") && r2.contains("11.74") && r2.contains("2.57s"),
            "{r2}"
        );
        assert!(r2.contains("4.43s") && r2.contains("In Progress"), "{r2}");
        assert!(row_of(&lines, 3).unwrap().contains("Completed"));
        assert!(row_of(&lines, 6).unwrap().contains("Failed: timeout"));
        assert!(has(
            &lines,
            "Requests of cycle 2/4: 9 concurrent requests to m · 9 rows"
        ));
        // Header: the cycle and its progress.
        assert!(has(
            &lines,
            "tokengun live · cycle 2/4: 9 concurrent requests to m"
        ));
        assert!(has(&lines, "3/9 done"));
        // The agent's row.
        assert!(has(&lines, "AGENT"));
        let agent = lines
            .iter()
            .find(|l| l.starts_with("127.0.0.1:7411"))
            .unwrap();
        assert!(agent.contains("yes") && agent.contains("9"), "{agent}");
        assert!(has(&lines, KEYS_HELP));
    }

    #[test]
    fn tiny_terminals_draw_without_panicking() {
        let s = burst(30);
        for (w, h) in [(1, 1), (20, 5), (40, 12)] {
            let lines = screen(&s, w, h);
            assert_eq!(lines.len(), usize::from(h));
            assert!(table_viewport(Rect::new(0, 0, w, h), &s) <= usize::from(h));
        }
    }

    #[test]
    fn monitor_figures_when_present_and_dashes_when_absent() {
        let mut s = burst(3);
        let lines = screen(&s, 110, 20);
        assert!(has(&lines, "no monitor figures"));
        assert!(!has(&lines, " W ·"));
        s.apply(
            Event::Monitor(Some(MonitorSnapshot {
                power_w: Some(21.2),
                gpu_busy_pct: Some(100.0),
                gpu_freq_mhz: Some(1396.0),
                server_cpu_pct: Some(312.0),
                server_rss_bytes: Some(5 * 1024 * 1024 * 1024 + 100 * 1024 * 1024),
            })),
            Instant::now(),
        );
        let lines = screen(&s, 110, 20);
        assert!(has(
            &lines,
            "GPU usage 100.0% · power 21.2 W · clock 1396 MHz │ server CPU 312% · RSS 5.1 GiB"
        ));
        // A source without a GPU: power only.
        s.apply(
            Event::Monitor(Some(MonitorSnapshot {
                power_w: Some(9.5),
                ..MonitorSnapshot::default()
            })),
            Instant::now(),
        );
        let lines = screen(&s, 110, 20);
        assert!(has(
            &lines,
            "GPU usage — · power 9.5 W · clock — │ server CPU — · RSS —"
        ));
    }

    #[test]
    fn a_tall_table_scrolls_and_pause_holds_it() {
        let mut s = burst(60);
        let (w, h) = (100, 24);
        s.viewport_rows = table_viewport(Rect::new(0, 0, w, h), &s);
        assert!(s.viewport_rows < 60);
        let lines = screen(&s, w, h);
        assert!(row_of(&lines, 1).is_some());
        assert!(row_of(&lines, 60).is_none(), "row 60 is below the screen");
        assert!(has(&lines, &format!("1-{} shown", s.viewport_rows)));

        let now = Instant::now();
        s.act(Action::End, now);
        let lines = screen(&s, w, h);
        assert!(row_of(&lines, 60).is_some(), "End shows the last row");
        assert!(row_of(&lines, 1).is_none());
        s.act(Action::Home, now);
        s.act(Action::Down, now);
        let lines = screen(&s, w, h);
        assert!(row_of(&lines, 1).is_none() && row_of(&lines, 2).is_some());

        // Paused: a request that ends meanwhile is not shown until resumed.
        s.act(Action::Home, now);
        s.act(Action::TogglePause, now);
        s.apply(Event::Finished(ended_row(1, OutcomeKind::Completed)), now);
        let lines = screen(&s, w, h);
        assert!(has(&lines, "PAUSED"));
        assert!(row_of(&lines, 1).unwrap().contains("Waiting"));
        s.act(Action::TogglePause, now);
        let lines = screen(&s, w, h);
        assert!(!has(&lines, "PAUSED"));
        assert!(row_of(&lines, 1).unwrap().contains("Completed"));
    }

    #[test]
    fn the_header_draws_the_throughput_sparkline_and_the_level_strip() {
        let mut s = burst(3);
        let lines = screen(&s, 100, 30);
        assert!(!has(&lines, "tok/s now"), "no rate before two snapshots");
        s.spark.reset();
        for (i, tokens) in [0u64, 50, 150].iter().enumerate() {
            s.spark.sample(i as u64 * 250_000_000, *tokens);
        }
        s.levels.push(LevelRow {
            level: "4".into(),
            requests: 4,
            failed: 0,
            aggregate_tokens_per_s: 380.0,
            ttft_p50_s: None,
            ttft_p99_s: None,
            errors: String::new(),
            flag: "",
        });
        let lines = screen(&s, 100, 30);
        assert!(
            has(&lines, "tok/s ▅█ 400 tok/s now · levels 4█"),
            "{lines:#?}"
        );
    }

    #[test]
    fn finished_levels_and_lost_agents_and_omitted_rows() {
        let mut s = burst(3);
        let now = Instant::now();
        s.table.live_omitted = 44;
        s.apply(
            Event::CycleEnd(LevelRow {
                level: "8".into(),
                requests: 8,
                failed: 2,
                aggregate_tokens_per_s: 210.5,
                ttft_p50_s: Some(0.25),
                ttft_p99_s: Some(1.5),
                errors: "timeout=2".into(),
                flag: "partial",
            }),
            now,
        );
        s.apply(Event::AgentLost { agent: 0 }, now);
        s.apply(
            Event::Dropped {
                agent: 0,
                records: 2,
            },
            now,
        );
        s.apply(
            Event::Dropped {
                agent: 0,
                records: 1,
            },
            now,
        );
        s.apply(Event::Stopping, now);
        let lines = screen(&s, 110, 24);
        assert!(has(&lines, "Finished levels (1)"));
        assert!(has(
            &lines,
            "LEVEL  REQS  FAILED AGG TOK/S TTFT p50 TTFT p99 ERRORS"
        ));
        let level = lines.iter().find(|l| l.starts_with("     8")).unwrap();
        assert!(
            level.contains("210.5")
                && level.contains("0.25s")
                && level.contains("1.50s")
                && level.contains("timeout=2 partial"),
            "{level}"
        );
        let agent = lines
            .iter()
            .find(|l| l.starts_with("127.0.0.1:7411"))
            .unwrap();
        assert!(
            agent.contains("LOST") && agent.trim_end().ends_with('3'),
            "{agent}"
        );
        assert!(has(&lines, "44 more in flight not listed"));
        assert!(has(&lines, "STOPPING"));
        assert!(has(&lines, "stopping: aborting in-flight requests"));
    }
}
