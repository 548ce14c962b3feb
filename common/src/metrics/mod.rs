//! Live metrics out, for long runs: what the controller (or an agent) has seen so far, rendered
//! as Prometheus text exposition (version 0.0.4) and served by [`http`] on `--metrics-listen`.
//!
//! The figures are updated once per finished request, progress snapshot or cycle end (never per
//! token), and read once per scrape, so one short-held lock is the whole cost; the hot path of
//! the load (the agent's read loops) never touches it.
//!
//! Names, all prefixed `tokengun_`: `requests_started_total`, `requests_finished_total{outcome}`,
//! `requests_failed_total{kind}`, `output_tokens_total`, `requests_in_flight`,
//! `cycle_tokens` (tokens of the running cycle so far), `ttft_seconds`, `itl_seconds`,
//! `e2e_seconds` and `send_lag_seconds` (histograms, `level` label), `agent_connected{agent}`,
//! `agent_records_dropped_total{agent}`, `agent_last_record_age_seconds{agent}`,
//! `generator_loop_delay_p99_ms`, `generator_cpu_pct`, `generator_send_lag_p99_seconds`,
//! `generator_schedule_valid` (the last finished level's self-check), `level_info{level}`.

pub mod http;

use crate::record::RequestRecord;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

/// Histogram bucket bounds, seconds: from 1 ms (inter-token gaps) to 2 min (queued requests).
pub const BUCKETS_S: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A Prometheus histogram: cumulative-free counts per bucket (made cumulative when rendered).
#[derive(Debug, Clone, Default)]
struct Hist {
    counts: [u64; BUCKETS_S.len()],
    over: u64,
    sum: f64,
    count: u64,
}

impl Hist {
    fn observe(&mut self, v: f64) {
        if !v.is_finite() || v < 0.0 {
            return;
        }
        match BUCKETS_S.iter().position(|b| v <= *b) {
            Some(i) => self.counts[i] += 1,
            None => self.over += 1,
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Agent {
    connected: bool,
    dropped: u64,
    last_record: Option<Instant>,
}

/// Observations held until the running cycle's level is known (its first progress snapshot or
/// its end): at most this many.
const PENDING_MAX: usize = 100_000;

#[derive(Debug, Default)]
struct State {
    /// The running cycle's level label; None until known.
    level: Option<String>,
    /// Observations made before it was known.
    pending: Vec<(&'static str, f64)>,
    /// Requests started before the running cycle, and the running cycle's count so far.
    started_before: u64,
    started_cycle: u64,
    finished: BTreeMap<&'static str, u64>,
    /// Every ended request (the sum of `finished`).
    ended: u64,
    /// Failed requests by `RequestRecord::error_kind` (Ollama's full queue apart).
    failed: BTreeMap<&'static str, u64>,
    output_tokens: u64,
    in_flight: u64,
    cycle_tokens: u64,
    /// (metric, level) -> histogram.
    hists: BTreeMap<(&'static str, String), Hist>,
    agents: BTreeMap<String, Agent>,
    health: Option<Health>,
}

/// The generator's own health over the last finished level (its self-check).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Health {
    pub loop_delay_p99_ms: Option<f64>,
    pub cpu_pct: Option<f64>,
    pub send_lag_p99_s: Option<f64>,
    /// None where it is not judged (an agent: the controller judges the schedule).
    pub schedule_valid: Option<bool>,
}

/// What one process exposes; shared between the code that sees records and the HTTP server.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic while holding the lock leaves figures, not broken invariants: go on with them.
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut s)
    }

    /// A cycle begins; its level is told by [`Metrics::level`].
    pub fn cycle_start(&self) {
        self.with(|s| {
            s.started_before += s.started_cycle;
            s.started_cycle = 0;
            s.cycle_tokens = 0;
            s.in_flight = 0;
            s.level = None;
            s.pending.clear();
        });
    }

    /// The running cycle's level label (`8`, `2.5rps`, `warmup`); what was observed before it
    /// was known is filed under it now.
    pub fn level(&self, label: &str) {
        self.with(|s| {
            if s.level.as_deref() == Some(label) {
                return;
            }
            s.level = Some(label.to_string());
            for (metric, v) in std::mem::take(&mut s.pending) {
                s.hists
                    .entry((metric, label.to_string()))
                    .or_default()
                    .observe(v);
            }
        });
    }

    /// A progress snapshot of the running cycle: requests started so far in it (ended and in
    /// flight), in flight now, tokens so far.
    pub fn progress(&self, started: u64, in_flight: u64, tokens: u64) {
        self.with(|s| {
            s.started_cycle = s.started_cycle.max(started);
            s.in_flight = in_flight;
            s.cycle_tokens = s.cycle_tokens.max(tokens);
        });
    }

    /// A request of the running cycle ended. Each histogram is looked up once per record, not
    /// once per token (ITL has a sample per token).
    pub fn request_done(&self, r: &RequestRecord) {
        self.with(|s| {
            *s.finished.entry(r.outcome.as_str()).or_default() += 1;
            s.ended += 1;
            if r.outcome.is_failure() {
                *s.failed.entry(r.error_kind()).or_default() += 1;
            }
            s.output_tokens += r.output_tokens;
            let level = s.level.clone();
            let mut put = |metric, values: &mut dyn Iterator<Item = f64>| {
                let mut values = values.peekable();
                if values.peek().is_none() {
                    return;
                }
                match &level {
                    Some(l) => {
                        let h = s.hists.entry((metric, l.clone())).or_default();
                        values.for_each(|v| h.observe(v));
                    }
                    None => {
                        let room = PENDING_MAX.saturating_sub(s.pending.len());
                        s.pending.extend(values.take(room).map(|v| (metric, v)));
                    }
                }
            };
            put("send_lag_seconds", &mut std::iter::once(r.send_lag_s()));
            if !r.outcome.is_failure() {
                put("e2e_seconds", &mut std::iter::once(r.total_s()));
                put("ttft_seconds", &mut r.ttft_s().into_iter());
                put("itl_seconds", &mut r.itl_s());
            }
            // Started is never below ended (a progress snapshot may not have come yet).
            let started = s.started_before + s.started_cycle;
            if s.ended > started {
                s.started_cycle += s.ended - started;
            }
        });
    }

    /// The agents of the run, all connected.
    pub fn agents(&self, names: &[String]) {
        self.with(|s| {
            for n in names {
                s.agents.entry(n.clone()).or_default().connected = true;
            }
        });
    }

    /// Agent `name` was lost (false) or is back (true).
    pub fn agent_connected(&self, name: &str, connected: bool) {
        self.with(|s| s.agents.entry(name.to_string()).or_default().connected = connected);
    }

    /// A record of agent `name` arrived, `dropped` records after the last one seen.
    pub fn agent_record(&self, name: &str, dropped: u64) {
        self.with(|s| {
            let a = s.agents.entry(name.to_string()).or_default();
            a.dropped += dropped;
            a.last_record = Some(Instant::now());
        });
    }

    /// A level ended with this self-check.
    pub fn level_health(&self, h: Health) {
        self.with(|s| {
            s.health = Some(h);
            s.started_before += s.started_cycle;
            s.started_cycle = 0;
            s.in_flight = 0;
        });
    }

    /// The Prometheus text exposition of everything so far.
    pub fn render(&self) -> String {
        self.with(|s| render(s))
    }
}

/// A label value, escaped as the exposition format wants (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP tokengun_{name} {help}");
    let _ = writeln!(out, "# TYPE tokengun_{name} {kind}");
}

fn render(s: &State) -> String {
    let mut o = String::new();
    head(
        &mut o,
        "requests_started_total",
        "counter",
        "Requests started.",
    );
    let _ = writeln!(
        o,
        "tokengun_requests_started_total {}",
        s.started_before + s.started_cycle
    );
    head(
        &mut o,
        "requests_finished_total",
        "counter",
        "Requests ended, by outcome.",
    );
    for (k, n) in &s.finished {
        let _ = writeln!(o, "tokengun_requests_finished_total{{outcome=\"{k}\"}} {n}");
    }
    head(
        &mut o,
        "requests_failed_total",
        "counter",
        "Requests that failed, by kind.",
    );
    for (k, n) in &s.failed {
        let _ = writeln!(o, "tokengun_requests_failed_total{{kind=\"{k}\"}} {n}");
    }
    head(
        &mut o,
        "output_tokens_total",
        "counter",
        "Output tokens of ended requests.",
    );
    let _ = writeln!(o, "tokengun_output_tokens_total {}", s.output_tokens);
    head(
        &mut o,
        "requests_in_flight",
        "gauge",
        "Requests in flight now.",
    );
    let _ = writeln!(o, "tokengun_requests_in_flight {}", s.in_flight);
    head(
        &mut o,
        "cycle_tokens",
        "gauge",
        "Tokens of the running cycle so far.",
    );
    let _ = writeln!(o, "tokengun_cycle_tokens {}", s.cycle_tokens);
    head(
        &mut o,
        "level_info",
        "gauge",
        "The level running now (1), by label.",
    );
    if let Some(l) = &s.level {
        let _ = writeln!(o, "tokengun_level_info{{level=\"{}\"}} 1", label(l));
    }
    render_hists(&mut o, s);
    render_agents(&mut o, s);
    render_health(&mut o, s.health.as_ref());
    o
}

fn render_hists(o: &mut String, s: &State) {
    const HELP: [(&str, &str); 4] = [
        (
            "ttft_seconds",
            "Intended start to first token, completed requests.",
        ),
        (
            "itl_seconds",
            "Inter-token latency, per token, completed requests.",
        ),
        ("e2e_seconds", "Intended start to end, completed requests."),
        (
            "send_lag_seconds",
            "Intended start to dispatched: how late tokengun itself was.",
        ),
    ];
    for (metric, help) in HELP {
        head(o, metric, "histogram", help);
        for ((_, level), h) in s.hists.iter().filter(|((m, _), _)| *m == metric) {
            let l = label(level);
            let mut cumulative = 0u64;
            for (b, c) in BUCKETS_S.iter().zip(h.counts) {
                cumulative += c;
                let _ = writeln!(
                    o,
                    "tokengun_{metric}_bucket{{level=\"{l}\",le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                o,
                "tokengun_{metric}_bucket{{level=\"{l}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(o, "tokengun_{metric}_sum{{level=\"{l}\"}} {}", h.sum);
            let _ = writeln!(o, "tokengun_{metric}_count{{level=\"{l}\"}} {}", h.count);
        }
    }
}

fn render_agents(o: &mut String, s: &State) {
    head(
        o,
        "agent_connected",
        "gauge",
        "1 while the agent is connected.",
    );
    for (n, a) in &s.agents {
        let _ = writeln!(
            o,
            "tokengun_agent_connected{{agent=\"{}\"}} {}",
            label(n),
            u8::from(a.connected)
        );
    }
    head(
        o,
        "agent_records_dropped_total",
        "counter",
        "Records missing from the agent's stream (gaps in its sequence).",
    );
    for (n, a) in &s.agents {
        let _ = writeln!(
            o,
            "tokengun_agent_records_dropped_total{{agent=\"{}\"}} {}",
            label(n),
            a.dropped
        );
    }
    head(
        o,
        "agent_last_record_age_seconds",
        "gauge",
        "Seconds since the agent's last record (its lag; progress comes every 250 ms in a cycle).",
    );
    for (n, a) in &s.agents {
        if let Some(t) = a.last_record {
            let _ = writeln!(
                o,
                "tokengun_agent_last_record_age_seconds{{agent=\"{}\"}} {}",
                label(n),
                t.elapsed().as_secs_f64()
            );
        }
    }
}

fn render_health(o: &mut String, h: Option<&Health>) {
    let figures = [
        (
            "generator_loop_delay_p99_ms",
            "p99 lateness of a 10 ms timer on the generator's runtime, last level, ms.",
            h.and_then(|h| h.loop_delay_p99_ms),
        ),
        (
            "generator_cpu_pct",
            "The generator's CPU over the last level, % of its cores.",
            h.and_then(|h| h.cpu_pct),
        ),
        (
            "generator_send_lag_p99_seconds",
            "p99 send lag of the last level (above 10 ms: the schedule was not kept).",
            h.and_then(|h| h.send_lag_p99_s),
        ),
        (
            "generator_schedule_valid",
            "1 when the last level kept its schedule.",
            h.and_then(|h| h.schedule_valid)
                .map(|v| f64::from(u8::from(v))),
        ),
    ];
    for (name, help, v) in figures {
        head(o, name, "gauge", help);
        if let Some(v) = v {
            let _ = writeln!(o, "tokengun_{name} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::OutcomeKind;

    #[test]
    fn counts_and_histograms_follow_the_records() {
        let m = Metrics::new();
        m.cycle_start();
        m.progress(4, 3, 20);
        let mut r = crate::stats::test_util::done(1, 0, 100, 5, 10);
        m.request_done(&r);
        // Observed before the level was known, filed under it once it is.
        assert!(!m.render().contains("level=\"4\""));
        m.level("4");
        r.outcome = OutcomeKind::Timeout;
        m.request_done(&r);
        let text = m.render();
        assert!(
            text.contains("tokengun_requests_started_total 4\n"),
            "{text}"
        );
        assert!(text.contains("tokengun_requests_finished_total{outcome=\"completed\"} 1\n"));
        assert!(text.contains("tokengun_requests_failed_total{kind=\"timeout\"} 1\n"));
        assert!(text.contains("tokengun_requests_in_flight 3\n"));
        // TTFT 0.1 s: in the 0.1 bucket and above, not below.
        assert!(text.contains("tokengun_ttft_seconds_bucket{level=\"4\",le=\"0.05\"} 0\n"));
        assert!(text.contains("tokengun_ttft_seconds_bucket{level=\"4\",le=\"0.1\"} 1\n"));
        assert!(text.contains("tokengun_itl_seconds_count{level=\"4\"} 4\n"));
        // Ended never exceeds started.
        m.request_done(&r);
        m.request_done(&r);
        m.request_done(&r);
        assert!(m.render().contains("tokengun_requests_started_total 5\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
