//! The live console's state: what the orchestrator reports (cycles, progress with the agent's
//! live rows, finished requests, level summaries, monitor figures, agents) applied as cheap
//! events on the console's own thread, plus what the keys change (pause, scroll). The view only
//! reads it.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use tokengun_common::record::MIN_RATE_WINDOW_NS;
use tokengun_common::{
    CycleSummary, LivePhase, LiveRequest, LoadShape, OutcomeKind, Progress, RequestRecord,
};

/// Live figures of the machine and the server process, as the monitors last saw them; every
/// figure is optional (no power source, no process matched): the view shows "—" for those.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MonitorSnapshot {
    /// System power, W (sum over sources and devices).
    pub power_w: Option<f64>,
    /// GPU busy, 0..100 %.
    pub gpu_busy_pct: Option<f64>,
    /// GPU (SM) clock, MHz.
    pub gpu_freq_mhz: Option<f64>,
    /// The server process's CPU, % of one core (200 = two cores).
    pub server_cpu_pct: Option<f64>,
    /// The server process's resident memory, bytes.
    pub server_rss_bytes: Option<u64>,
}

/// Said when a stop is asked for.
pub const STOPPING_TEXT: &str =
    "stopping: aborting in-flight requests and keeping what was measured…";

/// Finished rows kept for the table of one cycle; older ones are counted, not kept.
pub const FINISHED_ROWS_MAX: usize = 100_000;
/// Messages kept (the view shows the last few).
const MESSAGES_MAX: usize = 50;
/// Live durations are extrapolated from the last snapshot for at most this long, so a silent
/// agent does not make its requests look ever longer.
const EXTRAPOLATE_MAX: Duration = Duration::from_secs(1);

/// A row's STATUS column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStatus {
    /// No token yet (queued, prefilling).
    Waiting,
    /// Tokens are streaming.
    InProgress,
    /// Ended: completed, failed (with its kind) or aborted.
    Ended(OutcomeKind),
}

impl RowStatus {
    /// The column text: Waiting, In Progress, Completed, Failed: <kind>, Aborted.
    pub fn text(self) -> &'static str {
        match self {
            RowStatus::Waiting => "Waiting",
            RowStatus::InProgress => "In Progress",
            RowStatus::Ended(k) => k.status_text(),
        }
    }
}

/// One line of the requests table, in the study's columns; times in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableRow {
    pub request_id: u32,
    pub tokens: u64,
    pub tokens_per_s: Option<f64>,
    /// Sent -> first byte.
    pub ttfb_s: Option<f64>,
    /// Intended start -> first byte (still counting while waiting).
    pub waiting_s: Option<f64>,
    /// First token -> last token (still counting while streaming).
    pub duration_s: Option<f64>,
    pub status: RowStatus,
}

fn span_s(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e9
}

impl TableRow {
    /// The row of a request that ended.
    pub fn finished(r: &RequestRecord) -> Self {
        Self {
            request_id: r.request_id,
            tokens: r.output_tokens,
            tokens_per_s: r.tokens_per_s(),
            ttfb_s: r.ttfb_s(),
            waiting_s: r.waiting_s(),
            duration_s: r.response_s(),
            status: RowStatus::Ended(r.outcome),
        }
    }

    /// The row of an in-flight request: rates as of the snapshot (`snapshot_ns`), running times
    /// as of `now_ns` (both from the cycle origin).
    pub fn live(r: &LiveRequest, snapshot_ns: u64, now_ns: u64) -> Self {
        let tokens_per_s = r.first_token_ns.and_then(|t| {
            let window = snapshot_ns.saturating_sub(t);
            (window >= MIN_RATE_WINDOW_NS).then(|| r.tokens as f64 / (window as f64 / 1e9))
        });
        Self {
            request_id: r.request_id,
            tokens: r.tokens,
            tokens_per_s,
            ttfb_s: r
                .first_byte_ns
                .map(|b| span_s(r.sent_ns.unwrap_or(r.dispatched_ns), b)),
            waiting_s: Some(span_s(
                r.intended_start_ns,
                r.first_byte_ns.unwrap_or(now_ns),
            )),
            duration_s: r.first_token_ns.map(|t| span_s(t, now_ns)),
            status: match r.phase {
                LivePhase::Waiting => RowStatus::Waiting,
                LivePhase::InProgress => RowStatus::InProgress,
            },
        }
    }
}

/// What a cycle's progress bar measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CycleShape {
    pub shape: LoadShape,
    /// Burst: requests in the cycle.
    pub concurrency: u32,
    /// Closed/open: how long requests keep starting.
    pub duration_s: f64,
}

/// The finished levels' running summary: one row per level.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelRow {
    pub level: String,
    pub requests: u32,
    pub failed: u32,
    pub aggregate_tokens_per_s: f64,
    pub ttft_p50_s: Option<f64>,
    pub ttft_p99_s: Option<f64>,
    /// `errors_by_kind` (e.g. `timeout=2`), empty without errors.
    pub errors: String,
    /// `partial` / `INVALID` / empty.
    pub flag: &'static str,
}

impl From<&CycleSummary> for LevelRow {
    fn from(s: &CycleSummary) -> Self {
        Self {
            level: s.level.clone(),
            requests: s.requests,
            failed: s.failed,
            aggregate_tokens_per_s: s.aggregate_tokens_per_s,
            ttft_p50_s: s.ttft.p50_s,
            ttft_p99_s: s.ttft.p99_s,
            errors: s.errors_by_kind.clone(),
            flag: match (s.partial, s.schedule_valid) {
                (true, _) => "partial",
                (false, false) => "INVALID",
                _ if s.self_check != "ok" => "self-check",
                _ => "",
            },
        }
    }
}

/// One agent's line.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    pub name: String,
    pub connected: bool,
    /// Requests of the running cycle started so far.
    pub requests: u64,
    pub in_flight: u32,
    /// Tokens/s of the running cycle so far.
    pub tokens_per_s: f64,
    /// Records missing from its stream (sequence gaps) over the run.
    pub dropped: u64,
}

/// What the orchestrator tells the console.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A line for the message area.
    Message(String),
    /// A cycle (or the warm-up) begins.
    CycleStart { title: String },
    /// An agent's progress report of the running cycle.
    Progress {
        agent: usize,
        shape: CycleShape,
        progress: Progress,
    },
    /// A request of the running cycle ended.
    Finished(TableRow),
    /// A level ended (not sent for the warm-up).
    CycleEnd(LevelRow),
    /// The monitors' latest figures (`None`: none at all).
    Monitor(Option<MonitorSnapshot>),
    /// The agents of the run, by name.
    Agents(Vec<String>),
    /// An agent went away.
    AgentLost { agent: usize },
    /// An agent's stream missed `records` more records (a sequence gap).
    Dropped { agent: usize, records: u64 },
    /// The run is stopping (q or Ctrl-C): in-flight requests are being aborted.
    Stopping,
}

/// The requests table of the running cycle: the agent's latest live rows and the finished ones.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub live: Vec<LiveRequest>,
    /// In flight but not in `live` (beyond the agent's cap).
    pub live_omitted: u32,
    /// When the live rows were taken, ns from the cycle origin, and when they arrived here.
    pub snapshot_ns: u64,
    pub received: Option<Instant>,
    pub finished: BTreeMap<u32, TableRow>,
    /// Finished rows beyond [`FINISHED_ROWS_MAX`], not kept.
    pub finished_omitted: u64,
    /// Bursts list by request id; timed loops list the in-flight first, then the latest ended.
    pub by_id: bool,
    /// The cycle these rows belong to.
    pub cycle_title: String,
}

impl Table {
    fn live_rows(&self) -> impl Iterator<Item = &LiveRequest> {
        // A request whose record arrived after the snapshot is shown as ended.
        self.live
            .iter()
            .filter(|r| !self.finished.contains_key(&r.request_id))
    }

    /// Rows the table has.
    pub fn len(&self) -> usize {
        self.live_rows().count() + self.finished.len()
    }

    /// True without any row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `offset..offset + count` in display order, running times as of `now`.
    pub fn window(&self, offset: usize, count: usize, now: Instant) -> Vec<TableRow> {
        let ahead = self.received.map_or(Duration::ZERO, |t| {
            now.saturating_duration_since(t).min(EXTRAPOLATE_MAX)
        });
        let now_ns = self
            .snapshot_ns
            .saturating_add(u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX));
        let live = self
            .live_rows()
            .map(|r| TableRow::live(r, self.snapshot_ns, now_ns));
        if self.by_id {
            let mut live = live.peekable();
            let mut ended = self.finished.values().copied().peekable();
            std::iter::from_fn(|| match (live.peek(), ended.peek()) {
                (Some(a), Some(b)) if a.request_id < b.request_id => live.next(),
                (Some(_), Some(_)) | (None, Some(_)) => ended.next(),
                (Some(_), None) => live.next(),
                (None, None) => None,
            })
            .skip(offset)
            .take(count)
            .collect()
        } else {
            live.chain(self.finished.values().rev().copied())
                .skip(offset)
                .take(count)
                .collect()
        }
    }
}

/// The running cycle's head: its title and latest totals (over all agents).
#[derive(Debug, Clone, Default)]
pub struct CycleView {
    pub title: String,
    pub shape: Option<CycleShape>,
    pub progress: Option<Progress>,
}

/// Everything the live console shows.
#[derive(Debug, Clone)]
pub struct LiveState {
    pub messages: VecDeque<String>,
    pub monitor: Option<MonitorSnapshot>,
    pub cycle: Option<CycleView>,
    pub levels: Vec<LevelRow>,
    pub agents: Vec<AgentRow>,
    pub table: Table,
    /// The table as it was when `p` froze it, and the instant it froze.
    pub frozen: Option<(Table, Instant)>,
    /// First table row on screen.
    pub scroll: usize,
    /// Table rows that fit on screen (set by the console thread from the terminal's size).
    pub viewport_rows: usize,
    pub stopping: bool,
    /// The table still holds the previous cycle's rows.
    pub table_is_old: bool,
    /// Events the console could not take (its queue was full): counted, never waited for.
    pub events_dropped: u64,
    /// The running cycle's tokens/s over time.
    pub spark: super::spark::Spark,
}

impl Default for LiveState {
    fn default() -> Self {
        Self::new()
    }
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop the run cleanly (results kept).
    Stop,
    /// A second Ctrl-C: leave at once.
    ForceQuit,
    TogglePause,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
}

impl LiveState {
    /// An empty console.
    pub fn new() -> Self {
        Self {
            messages: VecDeque::new(),
            monitor: None,
            cycle: None,
            levels: Vec::new(),
            agents: Vec::new(),
            table: Table::default(),
            frozen: None,
            scroll: 0,
            viewport_rows: 10,
            stopping: false,
            table_is_old: false,
            events_dropped: 0,
            spark: super::spark::Spark::default(),
        }
    }

    /// The table on screen: the frozen one while paused.
    pub fn shown_table(&self, now: Instant) -> (&Table, Instant) {
        match &self.frozen {
            Some((t, at)) => (t, *at),
            None => (&self.table, now),
        }
    }

    /// True while `p` holds the table.
    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    fn message(&mut self, text: String) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if self.messages.len() == MESSAGES_MAX {
                self.messages.pop_front();
            }
            self.messages.push_back(line.trim_end().to_string());
        }
    }

    fn agent(&mut self, index: usize) -> &mut AgentRow {
        while self.agents.len() <= index {
            let n = self.agents.len();
            self.agents.push(AgentRow {
                name: format!("agent {}", n + 1),
                connected: true,
                requests: 0,
                in_flight: 0,
                tokens_per_s: 0.0,
                dropped: 0,
            });
        }
        &mut self.agents[index]
    }

    /// Starts the running cycle's table if it still shows the previous one's.
    fn fresh_table(&mut self) {
        if std::mem::take(&mut self.table_is_old) {
            self.table = Table {
                cycle_title: self
                    .cycle
                    .as_ref()
                    .map(|c| c.title.clone())
                    .unwrap_or_default(),
                ..Table::default()
            };
            self.scroll = 0;
        }
    }

    /// Applies one event (cheap: no drawing, no sorting of the whole table).
    pub fn apply(&mut self, event: Event, now: Instant) {
        match event {
            Event::Message(text) => self.message(text),
            Event::CycleStart { title } => {
                self.message(format!("▶ {title}"));
                self.cycle = Some(CycleView {
                    title,
                    shape: None,
                    progress: None,
                });
                // The last cycle's rows stay until this one reports: a burst's requests end
                // together, and its table would otherwise vanish before a frame shows it.
                self.table_is_old = true;
                self.spark.reset();
                for a in &mut self.agents {
                    a.requests = 0;
                    a.in_flight = 0;
                    a.tokens_per_s = 0.0;
                }
            }
            Event::Progress {
                agent,
                shape,
                mut progress,
            } => {
                self.fresh_table();
                self.spark.sample(progress.elapsed_ns, progress.tokens);
                let elapsed_s = progress.elapsed_ns as f64 / 1e9;
                let row = self.agent(agent);
                row.connected = true;
                row.in_flight = progress.in_flight;
                row.requests = u64::from(progress.completed)
                    + u64::from(progress.failed)
                    + u64::from(progress.in_flight);
                row.tokens_per_s = if elapsed_s > 0.0 {
                    progress.tokens as f64 / elapsed_s
                } else {
                    0.0
                };
                self.table.live = std::mem::take(&mut progress.live);
                self.table.live_omitted = progress.live_omitted;
                self.table.snapshot_ns = progress.elapsed_ns;
                self.table.received = Some(now);
                self.table.by_id = shape.shape.planned_requests(shape.concurrency).is_some();
                let cycle = self.cycle.get_or_insert_with(CycleView::default);
                cycle.shape = Some(shape);
                cycle.progress = Some(progress);
            }
            Event::Finished(row) => {
                self.fresh_table();
                let t = &mut self.table;
                t.finished.insert(row.request_id, row);
                if t.finished.len() > FINISHED_ROWS_MAX {
                    t.finished.pop_first();
                    t.finished_omitted += 1;
                }
            }
            Event::CycleEnd(level) => self.levels.push(level),
            Event::Monitor(m) => self.monitor = m,
            Event::Agents(names) => {
                for (i, name) in names.into_iter().enumerate() {
                    self.agent(i).name = name;
                }
            }
            Event::AgentLost { agent } => self.agent(agent).connected = false,
            Event::Dropped { agent, records } => self.agent(agent).dropped += records,
            Event::Stopping => {
                if !self.stopping {
                    self.stopping = true;
                    self.message(STOPPING_TEXT.into());
                }
            }
        }
    }

    /// Pause and scroll keys (stop keys are the console thread's).
    pub fn act(&mut self, action: Action, now: Instant) {
        let rows = self.shown_table(now).0.len();
        let page = self.viewport_rows.max(1);
        let last = rows.saturating_sub(page);
        self.scroll = match action {
            Action::TogglePause => {
                self.frozen = match self.frozen.take() {
                    Some(_) => None,
                    None => Some((self.table.clone(), now)),
                };
                self.scroll
            }
            Action::Up => self.scroll.saturating_sub(1),
            Action::Down => self.scroll + 1,
            Action::PageUp => self.scroll.saturating_sub(page),
            Action::PageDown => self.scroll + page,
            Action::Home => 0,
            Action::End => last,
            Action::Stop | Action::ForceQuit => self.scroll,
        }
        .min(last);
    }
}

/// A finished row with no figures but its id and outcome (tests).
#[cfg(test)]
pub(crate) fn ended_row(request_id: u32, outcome: OutcomeKind) -> TableRow {
    TableRow {
        request_id,
        tokens: 0,
        tokens_per_s: None,
        ttfb_s: None,
        waiting_s: None,
        duration_s: None,
        status: RowStatus::Ended(outcome),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(id: u32, tokens: u64, first_token_ns: Option<u64>) -> LiveRequest {
        LiveRequest {
            request_id: id,
            phase: if first_token_ns.is_some() {
                LivePhase::InProgress
            } else {
                LivePhase::Waiting
            },
            tokens,
            intended_start_ns: 0,
            dispatched_ns: 0,
            sent_ns: Some(0),
            first_byte_ns: first_token_ns,
            first_token_ns,
        }
    }

    #[test]
    fn live_rows_count_time_from_the_snapshot_and_rates_need_a_window() {
        // 52 tokens since 2.57 s, snapshot at 7 s: the study's In Progress row.
        let r = live(2, 52, Some(2_570_000_000));
        let row = TableRow::live(&r, 7_000_000_000, 7_000_000_000);
        assert_eq!(row.status, RowStatus::InProgress);
        assert!((row.tokens_per_s.unwrap() - 52.0 / 4.43).abs() < 1e-9);
        assert_eq!(row.ttfb_s, Some(2.57));
        assert_eq!(row.waiting_s, Some(2.57));
        assert!((row.duration_s.unwrap() - 4.43).abs() < 1e-9);
        // Waiting: the wait still counts, nothing else is known.
        let row = TableRow::live(&live(1, 0, None), 7_000_000_000, 7_000_000_000);
        assert_eq!(row.status, RowStatus::Waiting);
        assert_eq!(row.waiting_s, Some(7.0));
        assert_eq!(
            (row.ttfb_s, row.duration_s, row.tokens_per_s),
            (None, None, None)
        );
        // A first token 10 ms before the snapshot gives no rate (no division by almost zero).
        let row = TableRow::live(&live(3, 2, Some(990_000_000)), 1_000_000_000, 1_000_000_000);
        assert_eq!(row.tokens_per_s, None);
    }

    #[test]
    fn bursts_list_by_id_and_ended_rows_replace_live_ones() {
        let mut s = LiveState::new();
        let now = Instant::now();
        s.apply(Event::CycleStart { title: "t".into() }, now);
        s.apply(
            Event::Progress {
                agent: 0,
                shape: CycleShape {
                    shape: LoadShape::Burst,
                    concurrency: 4,
                    duration_s: 0.0,
                },
                progress: Progress {
                    cycle_id: 1,
                    in_flight: 3,
                    completed: 1,
                    elapsed_ns: 1_000_000_000,
                    live: vec![
                        live(1, 0, None),
                        live(3, 5, Some(500_000_000)),
                        live(4, 0, None),
                    ],
                    ..Progress::default()
                },
            },
            now,
        );
        s.apply(Event::Finished(ended_row(2, OutcomeKind::Completed)), now);
        s.apply(Event::Finished(ended_row(3, OutcomeKind::Timeout)), now);
        let rows = s.table.window(0, 10, now);
        let view: Vec<(u32, &str)> = rows
            .iter()
            .map(|r| (r.request_id, r.status.text()))
            .collect();
        assert_eq!(
            view,
            [
                (1, "Waiting"),
                (2, "Completed"),
                (3, "Failed: timeout"),
                (4, "Waiting")
            ]
        );
        assert_eq!(s.table.len(), 4);
        assert_eq!(s.agents[0].requests, 4);
        assert_eq!(s.table.window(1, 2, now)[0].request_id, 2);

        // The next cycle: its rows replace these only once it reports.
        s.apply(Event::CycleStart { title: "u".into() }, now);
        assert_eq!(s.table.len(), 4, "the last cycle's rows stay on screen");
        assert_eq!(s.table.cycle_title, "t");
        s.apply(Event::Finished(ended_row(1, OutcomeKind::Completed)), now);
        assert_eq!(s.table.len(), 1);
        assert_eq!(s.table.cycle_title, "u");
    }

    #[test]
    fn timed_loops_list_in_flight_first_then_the_latest_ended() {
        let mut t = Table {
            live: vec![live(7, 1, Some(0)), live(8, 0, None)],
            by_id: false,
            ..Table::default()
        };
        for id in 1..=6 {
            t.finished.insert(id, ended_row(id, OutcomeKind::Completed));
        }
        let ids: Vec<u32> = t
            .window(0, 5, Instant::now())
            .iter()
            .map(|r| r.request_id)
            .collect();
        assert_eq!(ids, [7, 8, 6, 5, 4]);
    }

    #[test]
    fn scrolling_is_clamped_and_pause_freezes_the_table() {
        let mut s = LiveState::new();
        let now = Instant::now();
        s.viewport_rows = 3;
        for id in 1..=10 {
            s.apply(Event::Finished(ended_row(id, OutcomeKind::Completed)), now);
        }
        s.act(Action::PageDown, now);
        assert_eq!(s.scroll, 3);
        s.act(Action::End, now);
        assert_eq!(s.scroll, 7);
        s.act(Action::PageDown, now);
        assert_eq!(s.scroll, 7, "no scrolling past the last page");
        s.act(Action::Up, now);
        assert_eq!(s.scroll, 6);
        s.act(Action::Home, now);
        assert_eq!(s.scroll, 0);

        s.act(Action::TogglePause, now);
        assert!(s.paused());
        s.apply(Event::Finished(ended_row(11, OutcomeKind::Completed)), now);
        assert_eq!(s.shown_table(now).0.len(), 10, "frozen while paused");
        assert_eq!(s.table.len(), 11, "still kept up to date underneath");
        s.act(Action::TogglePause, now);
        assert_eq!(s.shown_table(now).0.len(), 11);
    }

    #[test]
    fn finished_rows_are_capped_and_counted() {
        let mut s = LiveState::new();
        let now = Instant::now();
        let row = |id| ended_row(id, OutcomeKind::Completed);
        for id in 0..(FINISHED_ROWS_MAX as u32 + 5) {
            s.apply(Event::Finished(row(id)), now);
        }
        assert_eq!(s.table.finished.len(), FINISHED_ROWS_MAX);
        assert_eq!(s.table.finished_omitted, 5);
        assert_eq!(s.table.finished.keys().next(), Some(&5));
    }
}
