//! The console: the live view (ratatui, in `crate::tui`) on a terminal, plain progress lines
//! otherwise (`--no-tui`, `--quiet`, stdout not a terminal): a line per cycle and a periodic
//! heartbeat, the study's table, and a sweep summary. The sweep calls the same methods either way.

use crate::tui::state::{CycleShape, LevelRow, TableRow};
use crate::tui::view::progress_text;
use crate::tui::{Event, LiveConsole, MonitorSnapshot};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use tokengun_common::{CyclePlan, CycleSummary, Progress, RequestRecord};
use tokio_util::sync::CancellationToken;

/// Where progress goes: the live console, or plain lines redrawn in place on a terminal and
/// printed as a heartbeat otherwise.
pub struct Console {
    tty: bool,
    quiet: bool,
    last_line: Option<Instant>,
    monitor: Option<MonitorSnapshot>,
    live: Live,
    /// Lines shown in the live console's message area, printed again once it is gone so the
    /// terminal's history keeps them (warnings, the warm-up's figures, why the sweep stopped).
    live_lines: Vec<String>,
    /// `--metrics-listen`: every event is told to the metrics too.
    metrics: Option<super::metrics::MetricsOut>,
}

/// At most this many lines are kept for printing after the live console.
const LIVE_LINES_MAX: usize = 200;

/// The live console's lifecycle: asked for, on screen, or not used.
enum Live {
    Off,
    /// Comes up with the first cycle (checks and their errors print as plain lines); the lines
    /// printed before it are repeated in its message area.
    Ready {
        stop: CancellationToken,
        preamble: Vec<String>,
        /// State for the console (the agents, the monitor) told before it came up.
        pending: Vec<Event>,
    },
    On(LiveConsole),
}

/// Closed and open cycles with more requests than this print their figures without the table.
pub const TABLE_MAX_ROWS: usize = 64;

/// Between plain progress lines when stdout is not a terminal.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The shape of a cycle, as its progress bar needs it.
pub fn cycle_shape(plan: &CyclePlan) -> CycleShape {
    CycleShape {
        shape: plan.shape,
        concurrency: plan.concurrency,
        duration_s: plan.duration.as_secs_f64(),
    }
}

impl Console {
    /// Plain lines; detects whether stdout is a terminal.
    pub fn new(quiet: bool) -> Self {
        Self {
            tty: std::io::stdout().is_terminal(),
            quiet,
            last_line: None,
            monitor: None,
            live: Live::Off,
            live_lines: Vec::new(),
            metrics: None,
        }
    }

    /// Tells every event to `metrics` too (`--metrics-listen`).
    pub fn with_metrics(mut self, metrics: super::metrics::MetricsOut) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The live console, which comes up with the first cycle; `q` there cancels `stop`, as
    /// Ctrl-C does. Use it only when stdout is a terminal.
    pub fn live(stop: CancellationToken) -> Self {
        Self {
            live: Live::Ready {
                stop,
                preamble: Vec::new(),
                pending: Vec::new(),
            },
            ..Self::new(false)
        }
    }

    fn out(&self, text: &str) {
        if !self.quiet {
            write_stdout(text);
        }
    }

    /// Sends to the live console when it is on screen; false when plain output is wanted. If the
    /// console thread died, says so once and goes on with plain lines.
    fn send_live(&mut self, event: impl FnOnce() -> Event) -> bool {
        let Live::On(live) = &self.live else {
            return false;
        };
        if live.send(event()) {
            return true;
        }
        // Its thread is gone (it says why): the terminal is back, plain lines from here on.
        self.finish();
        self.line("the live console stopped; plain progress lines from here on");
        false
    }

    /// Brings the live console up if it was asked for and is not yet on screen.
    fn go_live(&mut self) {
        if !matches!(self.live, Live::Ready { .. }) {
            return;
        }
        let Live::Ready {
            stop,
            preamble,
            pending,
        } = std::mem::replace(&mut self.live, Live::Off)
        else {
            return;
        };
        match LiveConsole::start(stop, preamble) {
            Ok(live) => {
                for e in pending {
                    live.send(e);
                }
                self.live = Live::On(live);
            }
            Err(e) => self.line(&format!(
                "cannot start the live console ({e}); plain progress lines instead (--no-tui)"
            )),
        }
    }

    /// Takes the live console off the screen (the terminal is back as it was); plain lines from
    /// here on. Call before printing an error.
    pub fn finish(&mut self) {
        if let Live::On(live) = std::mem::replace(&mut self.live, Live::Off) {
            let why = live.close();
            for line in std::mem::take(&mut self.live_lines) {
                self.line(&line);
            }
            if let Some(why) = why {
                self.line(&why);
            }
        }
    }

    /// A line of its own.
    pub fn line(&mut self, text: &str) {
        if self.send_live(|| Event::Message(text.to_string())) {
            if self.live_lines.len() < LIVE_LINES_MAX {
                self.live_lines.push(text.to_string());
            }
            return;
        }
        if let Live::Ready { preamble, .. } = &mut self.live {
            preamble.push(text.trim().to_string());
        }
        self.out(&format!("{text}\n"));
    }

    /// State for the live console: sent now if it is on screen, when it comes up if it is not
    /// yet, dropped if there is none.
    fn tell(&mut self, event: Event) {
        match &mut self.live {
            Live::On(_) => {
                self.send_live(|| event);
            }
            Live::Ready { pending, .. } => {
                // The latest of each kind is what counts.
                let kind = std::mem::discriminant(&event);
                pending.retain(|e| std::mem::discriminant(e) != kind);
                pending.push(event);
            }
            Live::Off => {}
        }
    }

    /// The agents of the run (one row each in the live console).
    pub fn agents(&mut self, names: Vec<String>) {
        if let Some(m) = self.metrics.as_mut() {
            m.agents(&names);
        }
        self.tell(Event::Agents(names));
    }

    /// The run is stopping (Ctrl-C, `q`): in-flight requests are being aborted.
    pub fn stopping(&mut self) {
        if !self.send_live(|| Event::Stopping) {
            self.line(&format!("\n  {}", crate::tui::state::STOPPING_TEXT));
        }
    }

    /// An agent went away during a cycle.
    pub fn agent_lost(&mut self, agent: usize) {
        if let Some(m) = &self.metrics {
            m.agent_lost(agent);
        }
        self.send_live(|| Event::AgentLost { agent });
    }

    /// A record of agent `agent` arrived, `dropped` records after the last one seen (for the
    /// metrics: its lag and its gaps).
    pub fn record_from(&mut self, agent: usize, dropped: u64) {
        if let Some(m) = &self.metrics {
            m.record_from(agent, dropped);
        }
    }

    /// An agent's stream missed `records` more records (a gap in its sequence numbers).
    pub fn dropped(&mut self, agent: usize, records: u64) {
        self.send_live(|| Event::Dropped { agent, records });
    }

    /// The monitors' latest figures (`None`: no figures). Shown in the live console's header,
    /// and on plain progress lines.
    pub fn set_monitor(&mut self, snapshot: Option<MonitorSnapshot>) {
        self.monitor = snapshot;
        self.tell(Event::Monitor(snapshot));
    }

    /// The label of the cycle that starts (its metrics' `level`): the phase's, see
    /// `run_dir::monitor_label`.
    pub fn cycle_label(&mut self, label: &str) {
        if let Some(m) = &self.metrics {
            m.cycle_start(label);
        }
    }

    /// Announces the warm-up phase.
    pub fn warmup_start(&mut self, what: &str) {
        self.last_line = None;
        let title = format!("warm-up: {what} (not counted)");
        self.go_live();
        if !self.send_live(|| Event::CycleStart {
            title: title.clone(),
        }) {
            self.line(&format!("\n▶ {title}"));
        }
    }

    /// Announces a cycle.
    pub fn cycle_start(&mut self, index: usize, total: usize, what: &str, model: &str) {
        self.last_line = None;
        let title = format!("cycle {}/{total}: {what} to {model}", index + 1);
        self.go_live();
        if !self.send_live(|| Event::CycleStart {
            title: title.clone(),
        }) {
            self.line(&format!("\n▶ {title}"));
        }
    }

    /// A progress report of the running cycle: the live console's header, agent row and live
    /// rows; or the plain progress line (throttled to a heartbeat when not on a terminal).
    pub fn progress(&mut self, plan: &CyclePlan, p: &Progress) {
        if let Some(m) = &self.metrics {
            m.progress(p);
        }
        let shape = cycle_shape(plan);
        if self.send_live(|| Event::Progress {
            agent: 0,
            shape,
            progress: p.clone(),
        }) {
            return;
        }
        let now = Instant::now();
        if !self.tty && self.last_line.is_some_and(|t| now - t < HEARTBEAT) {
            return;
        }
        self.last_line = Some(now);
        let mut text = format!("  {}", progress_text(&shape, p));
        if let Some(m) = &self.monitor {
            text.push_str(&format!(" · {}", crate::tui::view::monitor_text(Some(m))));
        }
        if self.tty {
            self.out(&format!("\r\x1b[2K{text}"));
        } else {
            self.line(&text);
        }
    }

    /// A request of the running cycle ended (a row of the live console's table).
    pub fn request_done(&mut self, r: &RequestRecord) {
        if let Some(m) = &self.metrics {
            m.request_done(r);
        }
        self.send_live(|| Event::Finished(TableRow::finished(r)));
    }

    /// Ends the progress line and prints the study's table for the cycle (when it is short
    /// enough to read) plus its figures.
    /// `records` are the rows kept for the table (all of a burst; closed and open cycles keep a
    /// few), out of `total` requests.
    pub fn cycle_end(&mut self, summary: &CycleSummary, records: &[RequestRecord], total: usize) {
        if let Some(m) = &self.metrics {
            m.cycle_end(summary);
        }
        if self.send_live(|| Event::CycleEnd(LevelRow::from(summary))) {
            return;
        }
        if self.tty && self.last_line.is_some() {
            self.out("\n");
        }
        if records.len() < total {
            self.out(&format!(
                "  {total} requests (table omitted; every row is in request_summary.csv)\n  {}\n",
                summary_line(summary)
            ));
            return;
        }
        let mut t = String::new();
        t.push_str("  | REQ ID | TOKENS | TOKENS/S |    TTFB |  WAITING | DURATION | STATUS\n");
        t.push_str(
            "  |--------|--------|----------|---------|----------|----------|------------------\n",
        );
        let mut rows: Vec<&RequestRecord> = records.iter().collect();
        rows.sort_by_key(|r| r.request_id);
        let s = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.2}s"));
        for r in rows {
            t.push_str(&format!(
                "  | {:>6} | {:>6} | {:>8} | {:>7} | {:>8} | {:>8} | {}{}\n",
                r.request_id,
                r.output_tokens,
                r.tokens_per_s()
                    .map_or_else(|| "-".into(), |x| format!("{x:.2}")),
                s(r.ttfb_s()),
                s(r.waiting_s()),
                s(r.response_s()),
                r.outcome.status_text(),
                if r.error.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", r.error.chars().take(80).collect::<String>())
                }
            ));
        }
        t.push_str(&format!("  {}\n", summary_line(summary)));
        self.out(&t);
    }

    /// The sweep's table at the end of a run (printed even when quiet), after the live console
    /// has given the terminal back.
    pub fn sweep_table(&mut self, summaries: &[CycleSummary]) {
        self.finish();
        if summaries.is_empty() {
            return;
        }
        let mut t = String::from(
            "\nSweep summary\n  | LEVEL | REQS | FAILED | AGG TOK/S | REQ/S | TTFT p50 | TTFT p99 | ITL p50 | TOK/S/REQ | GOOD |\n  |-------|------|--------|-----------|-------|----------|----------|---------|-----------|------|\n",
        );
        let s = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.3}s"));
        let mut group: Option<&str> = None;
        for c in summaries {
            // A run of several groups: each group's rows under its name.
            if !c.group_label.is_empty() && group != Some(c.group_label.as_str()) {
                group = Some(c.group_label.as_str());
                t.push_str(&format!("  ▸ {}\n", c.group_label));
            }
            t.push_str(&format!(
                "  | {:>5} | {:>4} | {:>6} | {:>9.1} | {:>5.2} | {:>8} | {:>8} | {:>7} | {:>9} | {:>4} |{}{}\n",
                c.level,
                c.requests,
                c.failed,
                c.aggregate_tokens_per_s,
                c.requests_per_s,
                s(c.ttft.p50_s),
                s(c.ttft.p99_s),
                s(c.itl.p50_s),
                c.mean_request_tokens_per_s
                    .map_or_else(|| "-".into(), |x| format!("{x:.1}")),
                c.goodput_requests,
                if c.partial { " partial" } else { "" },
                if c.schedule_valid { "" } else { " INVALID: tokengun fell behind its schedule" }
            ));
        }
        write_stdout(&t);
    }
}

/// Writes to stdout, ignoring a closed pipe (`| head`): the results files are what matter.
pub fn write_stdout(text: &str) {
    let mut o = std::io::stdout().lock();
    // A closed stdout (a pipe to `head`) must not stop the run: the files are what matter.
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

/// One line of a cycle's figures.
pub fn summary_line(s: &CycleSummary) -> String {
    let p = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.3}s"));
    format!(
        "level {}: {}/{} completed, {:.1}% errors{} · {:.1} tok/s aggregate · {:.2} req/s · TTFT p50 {} p90 {} p99 {} · {} tok/s per request · {:.2} s{}",
        s.level,
        s.completed,
        s.requests,
        s.error_rate * 100.0,
        if s.errors_by_kind.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.errors_by_kind)
        },
        s.aggregate_tokens_per_s,
        s.requests_per_s,
        p(s.ttft.p50_s),
        p(s.ttft.p90_s),
        p(s.ttft.p99_s),
        s.mean_request_tokens_per_s
            .map_or_else(|| "-".into(), |x| format!("{x:.1}")),
        s.duration_s,
        match (s.partial, s.schedule_valid) {
            (true, _) => " · PARTIAL",
            (false, false) => " · INVALID (send lag p99 above 10 ms)",
            _ => "",
        }
    )
}

/// tokengun's check on itself for the cycle: its CPU, event-loop delay and verdict, when an agent
/// measured them.
pub fn self_check_line(s: &CycleSummary) -> Option<String> {
    let cpu_s = s.agent_cpu_s?;
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.1} ms"));
    let figures = format!(
        "tokengun CPU {cpu_s:.2} s ({}% of the agent's cores) · event-loop delay p99 {} max {} · start lag p99 {}",
        s.agent_cpu_pct
            .map_or_else(|| "-".to_string(), |p| format!("{p:.0}")),
        ms(s.loop_delay_p99_ms),
        ms(s.loop_delay_max_ms),
        ms(s.send_lag_p99_s.map(|l| l * 1e3)),
    );
    Some(if s.self_check == "ok" {
        format!("  self-check ok: {figures}")
    } else {
        format!(
            "  SELF-CHECK: tokengun may have been the bottleneck ({}); {figures}",
            s.self_check
        )
    })
}

/// The cycle's power and server figures in one line, when there are any.
pub fn monitor_line(s: &CycleSummary) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(e) = &s.energy {
        let mut p = format!("power {:.1} W mean", e.mean_power_w);
        if let Some(peak) = e.peak_power_w {
            p.push_str(&format!(", {peak:.1} W peak"));
        }
        p.push_str(&format!(" · {:.1} J ({})", e.energy_j, e.method.as_str()));
        if let (Some(jpt), Some(tpj)) = (e.joules_per_token, e.tokens_per_joule) {
            p.push_str(&format!(" · {jpt:.3} J/token · {tpj:.2} tokens/J"));
        }
        if let Some(net) = e.net_joules_per_token {
            p.push_str(&format!(" · {net:.3} J/token above idle"));
        }
        parts.push(p);
    }
    if let Some(busy) = s.gpu_busy_pct_mean {
        let mut p = format!("GPU {busy:.0}% busy");
        if let Some(f) = s.gpu_freq_mhz_mean {
            p.push_str(&format!(" at {f:.0} MHz"));
        }
        parts.push(p);
    }
    if let Some(u) = &s.server {
        let mut p = String::from("server");
        if let (Some(mean), Some(peak)) = (u.cpu_pct_mean, u.cpu_pct_peak) {
            p.push_str(&format!(" CPU {mean:.0}% mean / {peak:.0}% peak"));
        }
        if let Some(rss) = u.rss_peak_bytes {
            p.push_str(&format!(
                " · RSS {:.2} GiB peak",
                rss as f64 / (1u64 << 30) as f64
            ));
        }
        if let Some(t) = u.threads_peak {
            p.push_str(&format!(" · {t} threads"));
        }
        if let Some(f) = u.open_fds_peak {
            p.push_str(&format!(" · {f} open files"));
        }
        parts.push(p);
    }
    (!parts.is_empty()).then(|| format!("  {}", parts.join(" · ")))
}
