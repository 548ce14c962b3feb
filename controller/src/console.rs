//! Plain console output: a live progress line per cycle, the study's table, and a sweep summary.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use tokengun_common::{CycleSummary, Progress, RequestRecord};

/// Where progress goes; redraws in place on a terminal, prints a heartbeat line otherwise.
pub struct Console {
    tty: bool,
    quiet: bool,
    last_line: Option<Instant>,
}

/// Between plain progress lines when stdout is not a terminal.
const HEARTBEAT: Duration = Duration::from_secs(5);

impl Console {
    /// Detects whether stdout is a terminal.
    pub fn new(quiet: bool) -> Self {
        Self {
            tty: std::io::stdout().is_terminal(),
            quiet,
            last_line: None,
        }
    }

    fn out(&self, text: &str) {
        if !self.quiet {
            write_stdout(text);
        }
    }

    /// A line of its own.
    pub fn line(&self, text: &str) {
        self.out(&format!("{text}\n"));
    }

    /// Announces a cycle.
    pub fn cycle_start(&mut self, index: usize, total: usize, level: u32, model: &str) {
        self.last_line = None;
        self.line(&format!(
            "\n▶ cycle {}/{total}: {level} concurrent request{} to {model}",
            index + 1,
            if level == 1 { "" } else { "s" }
        ));
    }

    /// Redraws the progress line (throttled to a heartbeat when not on a terminal).
    pub fn progress(&mut self, level: u32, p: &Progress) {
        let now = Instant::now();
        if !self.tty && self.last_line.is_some_and(|t| now - t < HEARTBEAT) {
            return;
        }
        self.last_line = Some(now);
        let elapsed_s = p.elapsed_ns as f64 / 1e9;
        let done = p.completed + p.failed;
        let width = 20usize;
        let filled = if level > 0 {
            (done as usize * width) / level as usize
        } else {
            0
        };
        let bar: String = "█".repeat(filled) + &"░".repeat(width - filled.min(width));
        let rate = if elapsed_s > 0.0 {
            p.tokens as f64 / elapsed_s
        } else {
            0.0
        };
        let text = format!(
            "  {bar} {done}/{level} done · {} failed · {} in flight · {} tokens · {rate:.1} tok/s · {elapsed_s:.1} s",
            p.failed, p.in_flight, p.tokens
        );
        if self.tty {
            self.out(&format!("\r\x1b[2K{text}"));
        } else {
            self.line(&text);
        }
    }

    /// Ends the progress line and prints the study's table for the cycle plus its figures.
    pub fn cycle_end(&mut self, summary: &CycleSummary, records: &[RequestRecord]) {
        if self.tty && self.last_line.is_some() {
            self.out("\n");
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

    /// The sweep's table at the end of a run (printed even when quiet).
    pub fn sweep_table(&self, summaries: &[CycleSummary]) {
        if summaries.is_empty() {
            return;
        }
        let mut t = String::from(
            "\nSweep summary\n  | LEVEL | REQS | FAILED | AGG TOK/S | REQ/S | TTFT p50 | TTFT p99 | TOK/S/REQ |\n  |-------|------|--------|-----------|-------|----------|----------|-----------|\n",
        );
        let s = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.3}s"));
        for c in summaries {
            t.push_str(&format!(
                "  | {:>5} | {:>4} | {:>6} | {:>9.1} | {:>5.2} | {:>8} | {:>8} | {:>9} |{}\n",
                c.level,
                c.requests,
                c.failed,
                c.aggregate_tokens_per_s,
                c.requests_per_s,
                s(c.ttft_p50_s),
                s(c.ttft_p99_s),
                c.mean_request_tokens_per_s
                    .map_or_else(|| "-".into(), |x| format!("{x:.1}")),
                if c.partial { " partial" } else { "" }
            ));
        }
        write_stdout(&t);
    }
}

fn write_stdout(text: &str) {
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
        p(s.ttft_p50_s),
        p(s.ttft_p90_s),
        p(s.ttft_p99_s),
        s.mean_request_tokens_per_s
            .map_or_else(|| "-".into(), |x| format!("{x:.1}")),
        s.duration_s,
        if s.partial { " · PARTIAL" } else { "" }
    )
}
