//! Plain console output: a live progress line per cycle, the study's table, and a sweep summary.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use tokengun_common::{CyclePlan, CycleSummary, LoadShape, Progress, RequestRecord};

/// Where progress goes; redraws in place on a terminal, prints a heartbeat line otherwise.
pub struct Console {
    tty: bool,
    quiet: bool,
    last_line: Option<Instant>,
}

/// Closed and open cycles with more requests than this print their figures without the table.
pub const TABLE_MAX_ROWS: usize = 64;

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
    pub fn cycle_start(&mut self, index: usize, total: usize, what: &str, model: &str) {
        self.last_line = None;
        self.line(&format!(
            "\n▶ cycle {}/{total}: {what} to {model}",
            index + 1
        ));
    }

    /// Redraws the progress line (throttled to a heartbeat when not on a terminal). Burst
    /// cycles fill the bar by requests done, timed cycles by time elapsed.
    pub fn progress(&mut self, plan: &CyclePlan, p: &Progress) {
        let now = Instant::now();
        if !self.tty && self.last_line.is_some_and(|t| now - t < HEARTBEAT) {
            return;
        }
        self.last_line = Some(now);
        let elapsed_s = p.elapsed_ns as f64 / 1e9;
        let done = p.completed + p.failed;
        let width = 20usize;
        let fraction = match plan.shape {
            LoadShape::Burst if plan.concurrency > 0 => {
                f64::from(done) / f64::from(plan.concurrency)
            }
            _ if !plan.duration.is_zero() => elapsed_s / plan.duration.as_secs_f64(),
            _ => 0.0,
        };
        let filled = ((fraction.clamp(0.0, 1.0)) * width as f64) as usize;
        let of = match plan.shape {
            LoadShape::Burst => format!("/{}", plan.concurrency),
            _ => String::new(),
        };
        let bar: String = "█".repeat(filled) + &"░".repeat(width - filled.min(width));
        let rate = if elapsed_s > 0.0 {
            p.tokens as f64 / elapsed_s
        } else {
            0.0
        };
        let text = format!(
            "  {bar} {done}{of} done · {} failed · {} in flight · {} tokens · {rate:.1} tok/s · {elapsed_s:.1} s",
            p.failed, p.in_flight, p.tokens
        );
        if self.tty {
            self.out(&format!("\r\x1b[2K{text}"));
        } else {
            self.line(&text);
        }
    }

    /// Ends the progress line and prints the study's table for the cycle (when it is short
    /// enough to read) plus its figures.
    /// `records` are the rows kept for the table (all of a burst; closed and open cycles keep a
    /// few), out of `total` requests.
    pub fn cycle_end(&mut self, summary: &CycleSummary, records: &[RequestRecord], total: usize) {
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

    /// The sweep's table at the end of a run (printed even when quiet).
    pub fn sweep_table(&self, summaries: &[CycleSummary]) {
        if summaries.is_empty() {
            return;
        }
        let mut t = String::from(
            "\nSweep summary\n  | LEVEL | REQS | FAILED | AGG TOK/S | REQ/S | TTFT p50 | TTFT p99 | ITL p50 | TOK/S/REQ | GOOD |\n  |-------|------|--------|-----------|-------|----------|----------|---------|-----------|------|\n",
        );
        let s = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.3}s"));
        for c in summaries {
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
