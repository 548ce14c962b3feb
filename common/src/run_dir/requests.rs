//! A level's per-request files: `request_summary.csv` (the study's eight columns, then
//! tokengun's) and `request_<id>_throughput.csv` (one request's token timeline), their writers,
//! and the reader of `request_summary.csv`.

use super::csv_file::{CsvTable, csv_err, io_err, writer};
use super::{OutputError, REQUEST_SUMMARY_CSV, ReadError};
use crate::record::{OutcomeKind, RequestRecord, rate_measurable};
use crate::stats::{breakdown, token_agreement};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Column names of `request_summary.csv` (seconds unless said; instants from the cycle's origin).
pub mod col {
    pub const REQUEST_ID: &str = "RequestID";
    pub const TTFB: &str = "TTFB";
    pub const TOTAL_DURATION: &str = "TotalDuration";
    pub const RESPONSE_DURATION: &str = "ResponseDuration";
    pub const WAITING_TIME: &str = "WaitingTime";
    pub const TOKEN_COUNT: &str = "TokenCount";
    pub const STATUS_CODE: &str = "StatusCode";
    /// `Completed`, `Failed: <kind>` or `Aborted`.
    pub const STATUS: &str = "Status";
    pub const TTFT: &str = "TTFT";
    pub const TTF_ANSWER: &str = "TTFAnswer";
    pub const REASONING_TOKENS: &str = "ReasoningTokens";
    pub const TPOT: &str = "TPOT";
    pub const SEND_LAG: &str = "SendLag";
    pub const CLIENT_QUEUE: &str = "ClientQueue";
    pub const PROMPT_INDEX: &str = "PromptIndex";
    /// The request's decode rate, tokens/s.
    pub const TOKENS_PER_SECOND: &str = "TokensPerSecond";
    pub const TOKEN_SOURCE: &str = "TokenSource";
    pub const COUNTED_TOKENS: &str = "CountedTokens";
    pub const PROMPT_TOKENS: &str = "PromptTokens";
    pub const ERROR_KIND: &str = "ErrorKind";
    pub const ERROR: &str = "Error";
    pub const DONE_REASON: &str = "DoneReason";
    pub const INTENDED_START: &str = "IntendedStart";
    pub const DISPATCHED: &str = "Dispatched";
    pub const SENT: &str = "Sent";
    pub const FIRST_BYTE: &str = "FirstByte";
    pub const FIRST_TOKEN: &str = "FirstToken";
    pub const LAST_TOKEN: &str = "LastToken";
    pub const END: &str = "End";
    pub const SERVER_TOTAL_DURATION: &str = "ServerTotalDuration";
    pub const SERVER_LOAD_DURATION: &str = "ServerLoadDuration";
    pub const SERVER_PROMPT_EVAL_DURATION: &str = "ServerPromptEvalDuration";
    pub const SERVER_EVAL_DURATION: &str = "ServerEvalDuration";
    /// The server's token account (counts): prompt tokens it evaluated, reused from its cache,
    /// and its reasoning tokens.
    pub const SERVER_PROMPT_EVAL_TOKENS: &str = "ServerPromptEvalTokens";
    pub const SERVER_CACHED_TOKENS: &str = "ServerCachedTokens";
    pub const SERVER_REASONING_TOKENS: &str = "ServerReasoningTokens";
    /// `exact`, `end-token`, `utf8-merged` or `mismatch`: the server's output count against the
    /// stream's (empty when unchecked; see `tokengun_common::stats::TokenAgreement`).
    pub const TOKEN_AGREEMENT: &str = "TokenAgreement";
    /// Where the request's time went (seconds, summing to TotalDuration): see
    /// `tokengun_common::stats::Breakdown`.
    pub const QUEUE_TIME: &str = "QueueTime";
    pub const LOAD_TIME: &str = "LoadTime";
    pub const PREFILL_TIME: &str = "PrefillTime";
    pub const DECODE_TIME: &str = "DecodeTime";
    pub const CLIENT_TIME: &str = "ClientTime";
    /// What the workload meant: the prompt's intended tokens, the conversation and the turn
    /// (empty when not made to a length / not a conversation).
    pub const INTENDED_PROMPT_TOKENS: &str = "IntendedPromptTokens";
    pub const CONVERSATION: &str = "Conversation";
    pub const TURN: &str = "Turn";
    /// The server instance the request went to (its base URL).
    pub const TARGET: &str = "Target";
    /// The breakdown's five parts, in file order.
    pub const BREAKDOWN: [&str; 5] = [
        QUEUE_TIME,
        LOAD_TIME,
        PREFILL_TIME,
        DECODE_TIME,
        CLIENT_TIME,
    ];
}

/// Columns of `request_summary.csv`: the study's eight, then tokengun's.
pub const REQUEST_SUMMARY_HEADER: &[&str] = &[
    col::REQUEST_ID,
    col::TTFB,
    col::TOTAL_DURATION,
    col::RESPONSE_DURATION,
    col::WAITING_TIME,
    col::TOKEN_COUNT,
    col::STATUS_CODE,
    col::STATUS,
    col::TTFT,
    col::TTF_ANSWER,
    col::REASONING_TOKENS,
    col::TPOT,
    col::SEND_LAG,
    col::CLIENT_QUEUE,
    col::PROMPT_INDEX,
    col::TOKENS_PER_SECOND,
    col::TOKEN_SOURCE,
    col::COUNTED_TOKENS,
    col::PROMPT_TOKENS,
    col::ERROR_KIND,
    col::ERROR,
    col::DONE_REASON,
    col::INTENDED_START,
    col::DISPATCHED,
    col::SENT,
    col::FIRST_BYTE,
    col::FIRST_TOKEN,
    col::LAST_TOKEN,
    col::END,
    col::SERVER_TOTAL_DURATION,
    col::SERVER_LOAD_DURATION,
    col::SERVER_PROMPT_EVAL_DURATION,
    col::SERVER_EVAL_DURATION,
    col::SERVER_PROMPT_EVAL_TOKENS,
    col::SERVER_CACHED_TOKENS,
    col::SERVER_REASONING_TOKENS,
    col::TOKEN_AGREEMENT,
    col::QUEUE_TIME,
    col::LOAD_TIME,
    col::PREFILL_TIME,
    col::DECODE_TIME,
    col::CLIENT_TIME,
    col::INTENDED_PROMPT_TOKENS,
    col::CONVERSATION,
    col::TURN,
    col::TARGET,
];

fn secs(ns: u64) -> String {
    format!("{:.6}", ns as f64 / 1e9)
}

fn opt_s(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// One `request_summary.csv` row, in [`REQUEST_SUMMARY_HEADER`] order; `targets` are the
/// cycle's targets (`CyclePlan::targets`), which `target_index` points into.
pub fn request_summary_row(r: &RequestRecord, targets: &[String]) -> Vec<String> {
    let ns_s = |v: Option<u64>| v.map(secs).unwrap_or_default();
    let mut row = vec![
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
        opt(r.server.prompt_eval_tokens),
        opt(r.server.cached_tokens),
        opt(r.server.reasoning_tokens),
        token_agreement(r).as_str().to_string(),
    ];
    let b = breakdown(r);
    row.extend(
        [
            b.map(|b| b.queue_ns),
            b.map(|b| b.load_ns),
            b.map(|b| b.prefill_ns),
            b.map(|b| b.decode_ns),
            b.map(|b| b.client_ns),
        ]
        .map(ns_s),
    );
    let w = &r.workload;
    row.extend([
        opt(w.intended_prompt_tokens),
        opt((w.conversation > 0).then_some(w.conversation)),
        opt((w.turn > 0).then_some(w.turn)),
    ]);
    row.push(
        targets
            .get(r.target_index as usize)
            .cloned()
            .unwrap_or_default(),
    );
    row
}

/// `request_summary.csv`, written a row at a time as requests end (completion order).
pub struct RequestSummaryCsv {
    path: PathBuf,
    w: csv::Writer<BufWriter<File>>,
    targets: Vec<String>,
}

impl RequestSummaryCsv {
    /// Creates the file and writes its header.
    /// Creates the file of a level whose requests went to `targets` (in `target_index` order).
    pub fn create(path: &Path, targets: Vec<String>) -> Result<Self, OutputError> {
        let mut w = writer(path)?;
        w.write_record(REQUEST_SUMMARY_HEADER)
            .map_err(csv_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            w,
            targets,
        })
    }

    /// Appends one request.
    pub fn append(&mut self, r: &RequestRecord) -> Result<(), OutputError> {
        self.w
            .write_record(request_summary_row(r, &self.targets))
            .map_err(csv_err(&self.path))
    }

    /// Pushes buffered rows to the file.
    pub fn flush(&mut self) -> Result<(), OutputError> {
        self.w.flush().map_err(io_err(&self.path))
    }
}

/// One request of `request_summary.csv` as a reader needs it (seconds from the cycle's origin;
/// `None` where the cell is empty or the column absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestRow {
    pub request_id: u64,
    /// Its status was `Completed`.
    pub completed: bool,
    /// Its decode rate, tokens/s.
    pub tokens_per_s: Option<f64>,
    pub intended_start_s: Option<f64>,
    /// When it was handed to the HTTP client.
    pub sent_s: Option<f64>,
    pub first_token_s: Option<f64>,
    pub end_s: Option<f64>,
    /// Time to first token, seconds from the intended start.
    pub ttft_s: Option<f64>,
    /// The server's prompt count, and what the workload meant (absent in older files).
    pub prompt_tokens: Option<f64>,
    pub intended_prompt_tokens: Option<f64>,
    pub server_cached_tokens: Option<f64>,
    pub turn: Option<f64>,
    /// The server instance it went to (empty in files from before the column).
    pub target: String,
    pub output_tokens: u64,
}

/// Reads a level folder's `request_summary.csv`, in file order; `Ok(None)` when it has none.
pub fn read_request_summary(level_dir: &Path) -> Result<Option<Vec<RequestRow>>, ReadError> {
    let path = level_dir.join(REQUEST_SUMMARY_CSV);
    if !path.is_file() {
        return Ok(None);
    }
    let table = CsvTable::read(&path)?;
    let completed = OutcomeKind::Completed.status_text();
    Ok(Some(
        table
            .rows()
            .map(|c| RequestRow {
                request_id: c.num(col::REQUEST_ID).map_or(0, |v| v.max(0.0) as u64),
                completed: c.get(col::STATUS) == Some(completed),
                tokens_per_s: c.num(col::TOKENS_PER_SECOND),
                intended_start_s: c.num(col::INTENDED_START),
                sent_s: c.num(col::SENT),
                first_token_s: c.num(col::FIRST_TOKEN),
                end_s: c.num(col::END),
                ttft_s: c.num(col::TTFT),
                prompt_tokens: c.num(col::PROMPT_TOKENS),
                intended_prompt_tokens: c.num(col::INTENDED_PROMPT_TOKENS),
                server_cached_tokens: c.num(col::SERVER_CACHED_TOKENS),
                turn: c.num(col::TURN),
                target: c.get(col::TARGET).unwrap_or_default().to_string(),
                output_tokens: c.num(col::TOKEN_COUNT).map_or(0, |v| v.max(0.0) as u64),
            })
            .collect(),
    ))
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
/// since the first chunk, empty until that window measures a rate
/// ([`crate::record::rate_measurable`]): never a division by ~0.
pub fn write_throughput(
    path: &Path,
    r: &RequestRecord,
    origin_unix_ns: i64,
) -> Result<(), OutputError> {
    let mut w = writer(path)?;
    w.write_record(THROUGHPUT_HEADER).map_err(csv_err(path))?;
    let mut cumulative = 0u64;
    let first = r.timeline.first().copied();
    for (gaps, c) in r.timeline.iter().enumerate() {
        cumulative += u64::from(c.tokens);
        let rate = first.and_then(|f| {
            let dt_ns = c.offset_ns.saturating_sub(f.offset_ns);
            rate_measurable(dt_ns, gaps)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::{ServerTimings, TokenChunk, TokenSource};

    /// A completed request: first token at 2 s, three tokens, ended at 2.3 s.
    pub(crate) fn record() -> RequestRecord {
        RequestRecord {
            cycle_id: 1,
            request_id: 7,
            prompt_index: 0,
            workload: crate::record::RequestWorkload {
                intended_prompt_tokens: Some(10),
                conversation: 2,
                turn: 3,
            },
            target_index: 0,
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
            utf8_merged_tokens: 0,
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
    fn summary_keeps_the_study_columns_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        let mut w = RequestSummaryCsv::create(&p, vec![]).unwrap();
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

    #[test]
    fn summary_rows_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let targets = vec!["http://a:1".to_string(), "http://b:2".to_string()];
        let mut w =
            RequestSummaryCsv::create(&dir.path().join(REQUEST_SUMMARY_CSV), targets.clone())
                .unwrap();
        let mut failed = record();
        failed.request_id = 8;
        failed.target_index = 1;
        failed.outcome = OutcomeKind::Timeout;
        failed.first_token_ns = None;
        w.append(&record()).unwrap();
        w.append(&failed).unwrap();
        w.flush().unwrap();
        let rows = read_request_summary(dir.path()).unwrap().unwrap();
        assert_eq!(
            REQUEST_SUMMARY_HEADER.len(),
            request_summary_row(&record(), &targets).len()
        );
        assert_eq!(
            rows[0],
            RequestRow {
                request_id: 7,
                completed: true,
                tokens_per_s: Some(10.0),
                intended_start_s: Some(0.0),
                sent_s: Some(0.0),
                first_token_s: Some(2.0),
                end_s: Some(2.3),
                ttft_s: Some(2.0),
                prompt_tokens: Some(12.0),
                intended_prompt_tokens: Some(10.0),
                server_cached_tokens: None,
                turn: Some(3.0),
                target: "http://a:1".into(),
                output_tokens: 3,
            }
        );
        assert!(!rows[1].completed && rows[1].first_token_s.is_none());
        assert_eq!(rows[1].target, "http://b:2");
    }
}
