//! The study's CSV files (kept column for column, extra columns after) and `cycles.csv`.

use crate::record::{MIN_RATE_WINDOW_NS, RequestRecord};
use crate::stats::CycleSummary;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A results file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn csv_err(path: &Path) -> impl FnOnce(csv::Error) -> OutputError + '_ {
    move |source| OutputError::Csv {
        path: path.to_path_buf(),
        source,
    }
}

fn writer(path: &Path) -> Result<csv::Writer<BufWriter<File>>, OutputError> {
    let f = File::create(path).map_err(io_err(path))?;
    Ok(csv::Writer::from_writer(BufWriter::new(f)))
}

fn secs(ns: u64) -> String {
    format!("{:.6}", ns as f64 / 1e9)
}

fn opt_s(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// Columns of `request_summary.csv`: the study's eight, then tokengun's.
pub const REQUEST_SUMMARY_HEADER: &[&str] = &[
    "RequestID",
    "TTFB",
    "TotalDuration",
    "ResponseDuration",
    "WaitingTime",
    "TokenCount",
    "StatusCode",
    "Status",
    "TTFT",
    "TTFAnswer",
    "ReasoningTokens",
    "TPOT",
    "SendLag",
    "ClientQueue",
    "PromptIndex",
    "TokensPerSecond",
    "TokenSource",
    "CountedTokens",
    "PromptTokens",
    "ErrorKind",
    "Error",
    "DoneReason",
    "IntendedStart",
    "Dispatched",
    "Sent",
    "FirstByte",
    "FirstToken",
    "LastToken",
    "End",
    "ServerTotalDuration",
    "ServerLoadDuration",
    "ServerPromptEvalDuration",
    "ServerEvalDuration",
];

/// One `request_summary.csv` row, in [`REQUEST_SUMMARY_HEADER`] order.
pub fn request_summary_row(r: &RequestRecord) -> Vec<String> {
    let ns_s = |v: Option<u64>| v.map(secs).unwrap_or_default();
    vec![
        r.request_id.to_string(),
        opt_s(r.ttfb_s()),
        format!("{:.6}", r.total_s()),
        opt_s(r.response_s()),
        opt_s(r.waiting_s()),
        r.output_tokens.to_string(),
        opt(r.status_code),
        r.outcome.status_text().to_string(),
        opt_s(r.ttft_s()),
        opt_s(r.ttfa_s()),
        r.reasoning_tokens.to_string(),
        opt_s(r.tpot_s()),
        format!("{:.6}", r.send_lag_s()),
        format!("{:.6}", r.client_queue_s()),
        r.prompt_index.to_string(),
        r.tokens_per_s()
            .map(|x| format!("{x:.3}"))
            .unwrap_or_default(),
        r.token_source.as_str().to_string(),
        r.counted_tokens.to_string(),
        opt(r.prompt_tokens),
        if r.outcome.is_failure() {
            r.outcome.as_str().to_string()
        } else {
            String::new()
        },
        r.error.clone(),
        r.done_reason.clone(),
        secs(r.intended_start_ns),
        secs(r.dispatched_ns),
        secs(r.sent_ns),
        ns_s(r.first_byte_ns),
        ns_s(r.first_token_ns),
        ns_s(r.last_token_ns),
        secs(r.end_ns),
        ns_s(r.server.total_ns),
        ns_s(r.server.load_ns),
        ns_s(r.server.prompt_eval_ns),
        ns_s(r.server.eval_ns),
    ]
}

/// `request_summary.csv`, written a row at a time as requests end (completion order).
pub struct RequestSummaryCsv {
    path: PathBuf,
    w: csv::Writer<BufWriter<File>>,
}

impl RequestSummaryCsv {
    /// Creates the file and writes its header.
    pub fn create(path: &Path) -> Result<Self, OutputError> {
        let mut w = writer(path)?;
        w.write_record(REQUEST_SUMMARY_HEADER)
            .map_err(csv_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            w,
        })
    }

    /// Appends one request.
    pub fn append(&mut self, r: &RequestRecord) -> Result<(), OutputError> {
        self.w
            .write_record(request_summary_row(r))
            .map_err(csv_err(&self.path))
    }

    /// Pushes buffered rows to the file.
    pub fn flush(&mut self) -> Result<(), OutputError> {
        self.w.flush().map_err(io_err(&self.path))
    }
}

/// Columns of `request_<id>_throughput.csv`.
pub const THROUGHPUT_HEADER: &[&str] = &[
    "Timestamp",
    "TokenCount",
    "Throughput",
    "Elapsed",
    "ChunkTokens",
];

/// RFC 3339 UTC with milliseconds for a cycle origin plus an offset.
pub fn timestamp(origin_unix_ns: i64, offset_ns: u64) -> String {
    let origin = if origin_unix_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(origin_unix_ns.unsigned_abs())
    } else {
        UNIX_EPOCH
    };
    let t: SystemTime = origin + Duration::from_nanos(offset_ns);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Writes one request's token timeline. `Throughput` is tokens after the first chunk over the time
/// since the first chunk, empty until [`MIN_RATE_WINDOW_NS`] has passed: never a division by ~0.
pub fn write_throughput(
    path: &Path,
    r: &RequestRecord,
    origin_unix_ns: i64,
) -> Result<(), OutputError> {
    let mut w = writer(path)?;
    w.write_record(THROUGHPUT_HEADER).map_err(csv_err(path))?;
    let mut cumulative = 0u64;
    let first = r.timeline.first().copied();
    for c in &r.timeline {
        cumulative += u64::from(c.tokens);
        let rate = first.and_then(|f| {
            let dt_ns = c.offset_ns.saturating_sub(f.offset_ns);
            (dt_ns >= MIN_RATE_WINDOW_NS)
                .then(|| (cumulative - u64::from(f.tokens)) as f64 / (dt_ns as f64 / 1e9))
        });
        let row = [
            timestamp(origin_unix_ns, c.offset_ns),
            cumulative.to_string(),
            rate.map(|x| format!("{x:.2}")).unwrap_or_default(),
            secs(c.offset_ns.saturating_sub(r.intended_start_ns)),
            c.tokens.to_string(),
        ];
        w.write_record(&row).map_err(csv_err(path))?;
    }
    w.flush().map_err(io_err(path))
}

/// The latency distributions in `cycles.csv`, each with these statistics.
const LATENCIES: &[&str] = &["ttft", "ttfa", "itl", "tpot", "e2e"];
const STATS: &[&str] = &["mean", "p50", "p90", "p95", "p99", "max"];

/// Columns of `cycles.csv`, in order.
pub fn cycles_header() -> Vec<String> {
    let mut h: Vec<String> = [
        "model",
        "shape",
        "level",
        "concurrency",
        "rate_per_s",
        "requests",
        "completed",
        "failed",
        "error_rate",
        "duration_s",
        "output_tokens",
        "prompt_tokens",
        "aggregate_tokens_per_s",
        "total_tokens_per_s",
        "requests_per_s",
        "achieved_rate_per_s",
        "peak_concurrency",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for m in LATENCIES {
        for st in STATS {
            h.push(format!("{m}_{st}_s"));
        }
    }
    h.extend(
        [
            "mean_request_tokens_per_s",
            "goodput_requests",
            "goodput_requests_per_s",
            "slo_tokens_per_s",
            "slo_ttft_s",
            "slo_e2e_s",
            "send_lag_p99_s",
            "send_lag_max_s",
            "schedule_valid",
            "errors_by_kind",
            "partial",
            "mean_power_w",
            "peak_power_w",
            "energy_j",
            "energy_method",
            "joules_per_token",
            "tokens_per_joule",
            "baseline_power_w",
            "net_energy_j",
            "net_joules_per_token",
            "net_tokens_per_joule",
            "server_cpu_pct_mean",
            "server_cpu_pct_peak",
            "server_rss_peak_bytes",
            "gpu_busy_pct_mean",
            "gpu_freq_mhz_mean",
            "agents",
            "start_spread_s",
            "agent_cpu_s",
            "agent_cpu_pct",
            "loop_delay_p99_ms",
            "loop_delay_max_ms",
            "self_check",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    h
}

/// One `cycles.csv` row, in [`cycles_header`] order.
pub fn cycles_row(s: &CycleSummary) -> Vec<String> {
    let f3 = |x: f64| format!("{x:.3}");
    let mut row = vec![
        s.model.clone(),
        s.shape.clone(),
        s.level.clone(),
        s.concurrency.to_string(),
        s.rate_per_s.map(f3).unwrap_or_default(),
        s.requests.to_string(),
        s.completed.to_string(),
        s.failed.to_string(),
        format!("{:.4}", s.error_rate),
        format!("{:.6}", s.duration_s),
        s.output_tokens.to_string(),
        s.prompt_tokens.to_string(),
        f3(s.aggregate_tokens_per_s),
        f3(s.total_tokens_per_s),
        format!("{:.4}", s.requests_per_s),
        s.achieved_rate_per_s
            .map(|x| format!("{x:.4}"))
            .unwrap_or_default(),
        s.peak_concurrency.to_string(),
    ];
    for p in [&s.ttft, &s.ttfa, &s.itl, &s.tpot, &s.e2e] {
        for v in [p.mean_s, p.p50_s, p.p90_s, p.p95_s, p.p99_s, p.max_s] {
            row.push(opt_s(v));
        }
    }
    row.extend([
        s.mean_request_tokens_per_s.map(f3).unwrap_or_default(),
        s.goodput_requests.to_string(),
        format!("{:.4}", s.goodput_requests_per_s),
        f3(s.slo.tokens_per_s),
        opt_s(s.slo.ttft_s),
        opt_s(s.slo.e2e_s),
        opt_s(s.send_lag_p99_s),
        opt_s(s.send_lag_max_s),
        s.schedule_valid.to_string(),
        s.errors_by_kind.clone(),
        s.partial.to_string(),
    ]);
    let g = |x: Option<f64>, digits: usize| x.map(|v| format!("{v:.digits$}")).unwrap_or_default();
    let e = s.energy.as_ref();
    row.extend([
        g(e.map(|e| e.mean_power_w), 3),
        g(e.and_then(|e| e.peak_power_w), 3),
        g(e.map(|e| e.energy_j), 3),
        e.map(|e| e.method.as_str().to_string()).unwrap_or_default(),
        g(e.and_then(|e| e.joules_per_token), 6),
        g(e.and_then(|e| e.tokens_per_joule), 6),
        g(e.and_then(|e| e.baseline_power_w), 3),
        g(e.and_then(|e| e.net_energy_j), 3),
        g(e.and_then(|e| e.net_joules_per_token), 6),
        g(e.and_then(|e| e.net_tokens_per_joule), 6),
        g(s.server.as_ref().and_then(|u| u.cpu_pct_mean), 1),
        g(s.server.as_ref().and_then(|u| u.cpu_pct_peak), 1),
        s.server
            .as_ref()
            .and_then(|u| u.rss_peak_bytes)
            .map(|b| b.to_string())
            .unwrap_or_default(),
        g(s.gpu_busy_pct_mean, 1),
        g(s.gpu_freq_mhz_mean, 1),
        if s.agents.is_empty() {
            "1".to_string()
        } else {
            s.agents.len().to_string()
        },
        g(s.start_spread_s, 6),
        g(s.agent_cpu_s, 3),
        g(s.agent_cpu_pct, 1),
        g(s.loop_delay_p99_ms, 3),
        g(s.loop_delay_max_ms, 3),
        s.self_check.clone(),
    ]);
    row
}

/// `cycles.csv`, appended and flushed after every cycle so an interrupted run keeps its rows.
pub struct CyclesCsv {
    path: PathBuf,
    w: csv::Writer<BufWriter<File>>,
}

impl CyclesCsv {
    /// Creates the file and writes its header.
    pub fn create(path: &Path) -> Result<Self, OutputError> {
        let mut w = writer(path)?;
        w.write_record(cycles_header()).map_err(csv_err(path))?;
        w.flush().map_err(io_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            w,
        })
    }

    /// Opens an existing file to append cycles to it (a resumed run).
    pub fn open_append(path: &Path) -> Result<Self, OutputError> {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            w: csv::Writer::from_writer(BufWriter::new(f)),
        })
    }

    /// Appends one cycle and flushes it to disk.
    pub fn append(&mut self, s: &CycleSummary) -> Result<(), OutputError> {
        self.w
            .write_record(cycles_row(s))
            .map_err(csv_err(&self.path))?;
        self.w.flush().map_err(io_err(&self.path))?;
        self.w
            .get_ref()
            .get_ref()
            .sync_data()
            .map_err(io_err(&self.path))
    }
}

/// Writes bytes to `path` through a temporary file and a rename, so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_data().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{OutcomeKind, ServerTimings, TokenChunk, TokenSource};

    fn record() -> RequestRecord {
        RequestRecord {
            cycle_id: 1,
            request_id: 7,
            prompt_index: 0,
            intended_start_ns: 0,
            dispatched_ns: 0,
            sent_ns: 0,
            first_byte_ns: Some(2_000_000_000),
            first_token_ns: Some(2_000_000_000),
            first_answer_ns: Some(2_000_000_000),
            last_token_ns: Some(2_200_000_000),
            end_ns: 2_300_000_000,
            status_code: Some(200),
            outcome: OutcomeKind::Completed,
            error: String::new(),
            output_tokens: 3,
            token_source: TokenSource::Server,
            counted_tokens: 3,
            reasoning_tokens: 0,
            prompt_tokens: Some(12),
            server: ServerTimings::default(),
            done_reason: "stop".into(),
            timeline: vec![
                TokenChunk {
                    offset_ns: 2_000_000_000,
                    tokens: 1,
                },
                TokenChunk {
                    offset_ns: 2_000_016_000,
                    tokens: 1,
                },
                TokenChunk {
                    offset_ns: 2_200_000_000,
                    tokens: 1,
                },
            ],
        }
    }

    #[test]
    fn throughput_rows_are_finite_and_the_first_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        write_throughput(&p, &record(), 1_700_000_000_000_000_000).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(
            rows[0],
            "Timestamp,TokenCount,Throughput,Elapsed,ChunkTokens"
        );
        assert_eq!(rows[1], "2023-11-14T22:13:22.000Z,1,,2.000000,1");
        // 16 us after the first chunk: no rate rather than 62500 tokens/s.
        assert_eq!(rows[2], "2023-11-14T22:13:22.000Z,2,,2.000016,1");
        assert_eq!(rows[3], "2023-11-14T22:13:22.200Z,3,10.00,2.200000,1");
    }

    #[test]
    fn cycle_rows_match_the_header() {
        let s = crate::stats::CycleSummary::from_records(
            &crate::stats::CycleInfo {
                model: "m".into(),
                shape: "burst".into(),
                level: "1".into(),
                concurrency: 1,
                rate_per_s: None,
                expected_requests: 1,
                window_ns: None,
            },
            &[record()],
            &crate::stats::Slo::default(),
            false,
        );
        assert_eq!(cycles_header().len(), cycles_row(&s).len());
    }

    #[test]
    fn summary_keeps_the_study_columns_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        let mut w = RequestSummaryCsv::create(&p).unwrap();
        w.append(&record()).unwrap();
        w.flush().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with(
            "RequestID,TTFB,TotalDuration,ResponseDuration,WaitingTime,TokenCount,StatusCode,Status,"
        ));
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("7,2.000000,2.300000,0.200000,2.000000,3,200,Completed,")
        );
    }
}
