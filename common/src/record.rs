//! What agents report: per-request records with their token timelines, progress and cycle ends.

use serde::{Deserialize, Serialize};

/// How a request ended. Everything but `Completed` counts as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// The server finished the stream (`done: true`).
    Completed,
    /// The server answered with a non-2xx status.
    HttpError,
    /// No connection, or it was refused or reset before any response.
    ConnectError,
    /// The per-request timeout fired.
    Timeout,
    /// A line of the stream was not valid JSON of the expected shape.
    Malformed,
    /// The stream ended (EOF, reset or a broken chunk) before the server said it was done.
    Truncated,
    /// The server put an `error` in the stream of a 200 response.
    ServerError,
    /// The cycle was aborted (Ctrl-C, `Abort`) while the request ran.
    Aborted,
}

impl OutcomeKind {
    /// The `Status` column text (`Completed` as in the study; failures name their kind).
    pub fn status_text(self) -> &'static str {
        match self {
            OutcomeKind::Completed => "Completed",
            OutcomeKind::HttpError => "Failed: http_error",
            OutcomeKind::ConnectError => "Failed: connect_error",
            OutcomeKind::Timeout => "Failed: timeout",
            OutcomeKind::Malformed => "Failed: malformed",
            OutcomeKind::Truncated => "Failed: truncated",
            OutcomeKind::ServerError => "Failed: server_error",
            OutcomeKind::Aborted => "Aborted",
        }
    }

    /// Short machine name (`ErrorKind` column, `errors_by_kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Completed => "completed",
            OutcomeKind::HttpError => "http_error",
            OutcomeKind::ConnectError => "connect_error",
            OutcomeKind::Timeout => "timeout",
            OutcomeKind::Malformed => "malformed",
            OutcomeKind::Truncated => "truncated",
            OutcomeKind::ServerError => "server_error",
            OutcomeKind::Aborted => "aborted",
        }
    }

    /// True for every outcome but `Completed`.
    pub fn is_failure(self) -> bool {
        self != OutcomeKind::Completed
    }
}

/// Where `output_tokens` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenSource {
    /// The server's own count (`eval_count`).
    Server,
    /// tokengun counted content-bearing stream chunks (no server count was given).
    Counted,
}

impl TokenSource {
    /// Column text.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenSource::Server => "server",
            TokenSource::Counted => "counted",
        }
    }
}

/// The server's own account of one request, where its API gives one: Ollama's final line,
/// llama.cpp's `timings`, OpenAI-style `usage` details. Durations in nanoseconds; `None` when
/// the server did not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerTimings {
    /// Ollama `total_duration`.
    pub total_ns: Option<u64>,
    /// Ollama `load_duration` (loading the model before this request's work).
    pub load_ns: Option<u64>,
    /// Prefill: Ollama `prompt_eval_duration`, llama.cpp `timings.prompt_ms`.
    pub prompt_eval_ns: Option<u64>,
    /// Decode: Ollama `eval_duration`, llama.cpp `timings.predicted_ms`.
    pub eval_ns: Option<u64>,
    /// Prompt tokens the server evaluated (llama.cpp `timings.prompt_n`: cached ones excluded).
    #[serde(default)]
    pub prompt_eval_tokens: Option<u64>,
    /// Prompt tokens reused from the server's cache (`usage.prompt_tokens_details.cached_tokens`,
    /// llama.cpp `timings.cache_n`).
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    /// Reasoning tokens by the server's count (`usage.completion_tokens_details.reasoning_tokens`).
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl ServerTimings {
    /// Fills what `self` does not know from `other` (a stream may spread its account over two
    /// events: llama.cpp's finish event and its usage event).
    pub fn fill_from(&mut self, other: &ServerTimings) {
        let pairs = [
            (&mut self.total_ns, other.total_ns),
            (&mut self.load_ns, other.load_ns),
            (&mut self.prompt_eval_ns, other.prompt_eval_ns),
            (&mut self.eval_ns, other.eval_ns),
            (&mut self.prompt_eval_tokens, other.prompt_eval_tokens),
            (&mut self.cached_tokens, other.cached_tokens),
            (&mut self.reasoning_tokens, other.reasoning_tokens),
        ];
        for (mine, theirs) in pairs {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
    }
}

/// One content-bearing chunk of a stream: when it arrived and how many tokens it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenChunk {
    /// Arrival, ns from the cycle origin (agent monotonic clock).
    pub offset_ns: u64,
    pub tokens: u32,
}

/// What the workload meant a request to be (all absent for a plain prompt).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestWorkload {
    /// Prompt tokens the prompt was made to have (exact with a tokenizer, else estimated).
    pub intended_prompt_tokens: Option<u32>,
    /// The conversation the request belongs to (1-based within its cycle; 0: none).
    pub conversation: u32,
    /// Its turn in the conversation (1-based; 0: not a conversation).
    pub turn: u32,
}
/// The error kind (in `errors_by_kind`) of a request Ollama refused because its scheduler's
/// queue was full: HTTP 503 `server busy, please try again.  maximum pending requests exceeded`.
pub const QUEUE_FULL_KIND: &str = "queue_full";

/// Everything measured about one request. Offsets are ns from the cycle origin on the agent's
/// monotonic clock; `None` means the moment never came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub cycle_id: u32,
    /// 1-based within the cycle, as the study numbered them.
    pub request_id: u32,
    /// Which prompt of the plan's workload the request sent.
    pub prompt_index: u32,
    /// Where the request sits in its workload: intended prompt tokens, conversation and turn.
    #[serde(default)]
    pub workload: RequestWorkload,
    /// Which of the cycle's targets (`CyclePlan::target_urls`, 0 = the first) it went to.
    #[serde(default)]
    pub target_index: u32,
    /// When the schedule meant the request to start; latencies count from here.
    pub intended_start_ns: u64,
    /// When tokengun's scheduler released it (late against `intended_start_ns` only if tokengun
    /// fell behind).
    pub dispatched_ns: u64,
    /// When the request was handed to the HTTP client.
    pub sent_ns: u64,
    /// First byte of the response (status line and headers).
    pub first_byte_ns: Option<u64>,
    /// First chunk carrying generated text (answer or reasoning).
    pub first_token_ns: Option<u64>,
    /// First chunk carrying answer text (not reasoning).
    pub first_answer_ns: Option<u64>,
    /// Last chunk carrying generated text.
    pub last_token_ns: Option<u64>,
    /// The request ended (success or failure).
    pub end_ns: u64,
    pub status_code: Option<u16>,
    pub outcome: OutcomeKind,
    /// The server's error text or the client's, empty on success.
    pub error: String,
    /// Authoritative output token count (see `token_source`).
    pub output_tokens: u64,
    pub token_source: TokenSource,
    /// Tokens counted from the stream's chunks (one per content chunk unless told otherwise).
    pub counted_tokens: u64,
    /// Tokens the server counted that reached the client inside another token's event: a server
    /// holds back a token that ends inside a multi-byte UTF-8 character and sends it with the
    /// next (llama.cpp does). Added to those events in `timeline` (so ITL is per token), never to
    /// `counted_tokens`; see `stats::server::place_server_tokens`.
    #[serde(default)]
    pub utf8_merged_tokens: u64,
    /// Of the counted tokens, those that were reasoning ("thinking").
    pub reasoning_tokens: u64,
    pub prompt_tokens: Option<u64>,
    pub server: ServerTimings,
    /// Why the server stopped (`stop`, `length`, ...), empty when unknown.
    pub done_reason: String,
    /// Every content-bearing chunk, in arrival order.
    pub timeline: Vec<TokenChunk>,
}

const NS_PER_S: f64 = 1e9;

/// A token rate over a window this long is always taken: chunks read off the socket
/// microseconds apart (queued in one TCP segment) would otherwise give rates in the tens of
/// thousands, the study's division by almost zero.
pub const MIN_RATE_WINDOW_NS: u64 = 50_000_000;

/// A shorter window (a short answer: `max_tokens = 8` streams in tens of ms) still gives a rate
/// when its chunks are on average at least this far apart: they were read one by one as the
/// server sent them, not off one TCP segment.
pub const MIN_CHUNK_GAP_NS: u64 = 1_000_000;

/// Whether `gaps` chunk gaps over `window_ns` measure a rate (see [`MIN_RATE_WINDOW_NS`] and
/// [`MIN_CHUNK_GAP_NS`]): at least one gap, and a window of 50 ms or of 1 ms per gap.
pub fn rate_measurable(window_ns: u64, gaps: usize) -> bool {
    gaps >= 1
        && (window_ns >= MIN_RATE_WINDOW_NS
            || window_ns >= MIN_CHUNK_GAP_NS.saturating_mul(gaps as u64))
}

fn span_s(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / NS_PER_S
}

impl RequestRecord {
    /// How its failure is counted in `errors_by_kind`: its outcome, except Ollama's full queue
    /// (HTTP 503 `maximum pending requests exceeded`), counted apart as [`QUEUE_FULL_KIND`].
    pub fn error_kind(&self) -> &'static str {
        if self.outcome == OutcomeKind::HttpError
            && self.status_code == Some(503)
            && self.error.contains("maximum pending requests exceeded")
        {
            QUEUE_FULL_KIND
        } else {
            self.outcome.as_str()
        }
    }

    /// Sent -> first response byte, seconds.
    pub fn ttfb_s(&self) -> Option<f64> {
        self.first_byte_ns.map(|t| span_s(self.sent_ns, t))
    }

    /// Intended start -> first response byte, seconds: time spent waiting for the server to answer.
    pub fn waiting_s(&self) -> Option<f64> {
        self.first_byte_ns
            .map(|t| span_s(self.intended_start_ns, t))
    }

    /// Tokens in the timeline so far (while a request is still being measured).
    pub fn counted_tokens_so_far(&self) -> u64 {
        self.timeline.iter().map(|c| u64::from(c.tokens)).sum()
    }

    /// Intended start -> first answer (non-reasoning) token, seconds.
    pub fn ttfa_s(&self) -> Option<f64> {
        self.first_answer_ns
            .map(|t| span_s(self.intended_start_ns, t))
    }

    /// Intended start -> first generated token, seconds.
    pub fn ttft_s(&self) -> Option<f64> {
        self.first_token_ns
            .map(|t| span_s(self.intended_start_ns, t))
    }

    /// Intended start -> end, seconds.
    pub fn total_s(&self) -> f64 {
        span_s(self.intended_start_ns, self.end_ns)
    }

    /// First token -> last token, seconds (the study's "active duration").
    pub fn response_s(&self) -> Option<f64> {
        match (self.first_token_ns, self.last_token_ns) {
            (Some(a), Some(b)) => Some(span_s(a, b)),
            _ => None,
        }
    }

    /// Decode rate: tokens after the first chunk over first -> last chunk, tokens/s. `None`
    /// (not measurable) with fewer than two chunks, or when the chunks came too close together
    /// to time ([`rate_measurable`]: under 50 ms and under 1 ms per gap on average).
    pub fn tokens_per_s(&self) -> Option<f64> {
        let first = self.timeline.first()?;
        let last = self.timeline.last()?;
        let window_ns = last.offset_ns.saturating_sub(first.offset_ns);
        if !rate_measurable(window_ns, self.timeline.len() - 1) {
            return None;
        }
        let dt = span_s(first.offset_ns, last.offset_ns);
        let after_first: u64 = self.timeline[1..].iter().map(|c| u64::from(c.tokens)).sum();
        Some(after_first as f64 / dt)
    }

    /// Time per output token after the first, vLLM's definition: (end - first token) /
    /// (output tokens - 1). `None` with fewer than two output tokens.
    pub fn tpot_s(&self) -> Option<f64> {
        let first = self.first_token_ns?;
        (self.output_tokens >= 2)
            .then(|| span_s(first, self.end_ns) / (self.output_tokens - 1) as f64)
    }

    /// Inter-token latencies, seconds: per token, not per chunk. The gap before a chunk that
    /// carried k tokens gives k samples of gap / k (vLLM's ITL). Where a server packs several
    /// tokens into one event without saying how many, its total count places them on the
    /// timeline (`stats::server::place_server_tokens`).
    pub fn itl_s(&self) -> impl Iterator<Item = f64> + '_ {
        self.timeline.windows(2).flat_map(|w| {
            let k = w[1].tokens.max(1);
            let gap = span_s(w[0].offset_ns, w[1].offset_ns) / f64::from(k);
            std::iter::repeat_n(gap, k as usize)
        })
    }

    /// Intended start -> dispatched, seconds: how late tokengun itself was.
    pub fn send_lag_s(&self) -> f64 {
        span_s(self.intended_start_ns, self.dispatched_ns)
    }

    /// Dispatched -> sent, seconds: time spent waiting for the open loop's in-flight cap.
    pub fn client_queue_s(&self) -> f64 {
        span_s(self.dispatched_ns, self.sent_ns)
    }
}

/// A periodic snapshot of a running cycle, for live views.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub cycle_id: u32,
    pub in_flight: u32,
    pub completed: u32,
    pub failed: u32,
    /// Tokens counted so far over all requests of the cycle.
    pub tokens: u64,
    /// When the snapshot was taken, ns from the cycle origin; the `live` rows are as of then.
    pub elapsed_ns: u64,
    /// Requests in flight at the snapshot, lowest request id first, at most
    /// [`LIVE_REQUESTS_MAX`] of them (empty from agents that predate live rows).
    pub live: Vec<LiveRequest>,
    /// Requests in flight that did not fit in `live`.
    pub live_omitted: u32,
}

/// Most in-flight requests one [`Progress`] lists; the rest are only counted, so a cycle with
/// 10,000 streams still sends a small snapshot.
pub const LIVE_REQUESTS_MAX: usize = 256;

/// Where an in-flight request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LivePhase {
    /// No token yet: queued (client side or on the server), prefilling, or loading the model.
    Waiting,
    /// Tokens are streaming.
    InProgress,
}

/// One in-flight request as of a [`Progress`] snapshot; offsets are ns from the cycle origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRequest {
    pub request_id: u32,
    pub phase: LivePhase,
    /// Tokens counted so far.
    pub tokens: u64,
    pub intended_start_ns: u64,
    pub dispatched_ns: u64,
    /// Handed to the HTTP client (`None` while it waits for an open loop's in-flight cap).
    pub sent_ns: Option<u64>,
    pub first_byte_ns: Option<u64>,
    pub first_token_ns: Option<u64>,
}

/// The end of a cycle on one agent, with its own totals for cross-checking.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CycleDone {
    pub cycle_id: u32,
    pub requests: u32,
    pub completed: u32,
    pub failed: u32,
    /// The cycle was stopped before all requests ended on their own.
    pub aborted: bool,
    /// When the last request ended, on the agent's monotonic clock (ns since its epoch).
    pub ended_mono_ns: u64,
    /// Closed after an agent restart: the agent found the cycle started but unfinished in its
    /// spool; requests in flight at the crash are lost (`aborted` is set too).
    #[serde(default)]
    pub recovered: bool,
    /// The agent's measure of its own cost over the cycle (None from agents that predate it).
    pub self_check: Option<AgentSelfCheck>,
}

/// What an agent measured of its own cost over a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AgentSelfCheck {
    /// CPU seconds (user + system) of the agent's process over the cycle; an in-process agent's
    /// process is the controller's too.
    pub cpu_s: f64,
    /// Wall seconds the CPU time was measured over.
    pub wall_s: f64,
    /// Cores the agent's process may run on.
    pub cores: u32,
    /// How late a 10 ms timer on the agent's runtime woke: p99 and max over the cycle, ms.
    pub loop_delay_p99_ms: Option<f64>,
    pub loop_delay_max_ms: Option<f64>,
}

impl AgentSelfCheck {
    /// Its CPU time as a share of its cores over the cycle, 0..1 (None without a wall time).
    pub fn cpu_share(&self) -> Option<f64> {
        (self.wall_s > 0.0).then(|| self.cpu_s / self.wall_s / f64::from(self.cores.max(1)))
    }
}

/// What a record says.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordBody {
    /// A cycle began; `started_unix_ns` is the wall clock at its monotonic origin.
    /// `origin_mono_ns` is the same origin on the agent's monotonic clock (ns since its epoch),
    /// the clock monitor samples are stamped with.
    CycleStarted {
        cycle_id: u32,
        started_unix_ns: i64,
        origin_mono_ns: u64,
    },
    Request(Box<RequestRecord>),
    Progress(Progress),
    CycleDone(CycleDone),
    /// Process, machine and power samples of one monitor tick.
    Monitor(Box<crate::monitor::MonitorBatch>),
}

/// A record with its per-agent sequence number (from 1, no gaps).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub body: RecordBody,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(timeline: &[(u64, u32)]) -> RequestRecord {
        RequestRecord {
            cycle_id: 1,
            request_id: 1,
            prompt_index: 0,
            workload: Default::default(),
            target_index: 0,
            intended_start_ns: 0,
            dispatched_ns: 1_000_000,
            sent_ns: 1_000_000,
            first_byte_ns: Some(100_000_000),
            first_token_ns: timeline.first().map(|c| c.0),
            first_answer_ns: timeline.first().map(|c| c.0),
            last_token_ns: timeline.last().map(|c| c.0),
            end_ns: 2_000_000_000,
            status_code: Some(200),
            outcome: OutcomeKind::Completed,
            error: String::new(),
            output_tokens: timeline.iter().map(|c| u64::from(c.1)).sum(),
            token_source: TokenSource::Counted,
            counted_tokens: 0,
            utf8_merged_tokens: 0,
            reasoning_tokens: 0,
            prompt_tokens: None,
            server: ServerTimings::default(),
            done_reason: String::new(),
            timeline: timeline
                .iter()
                .map(|&(offset_ns, tokens)| TokenChunk { offset_ns, tokens })
                .collect(),
        }
    }

    #[test]
    fn durations_follow_their_definitions() {
        let r = rec(&[(100_000_000, 1), (200_000_000, 1), (300_000_000, 1)]);
        assert!((r.ttfb_s().unwrap() - 0.099).abs() < 1e-12);
        assert!((r.waiting_s().unwrap() - 0.1).abs() < 1e-12);
        assert!((r.ttft_s().unwrap() - 0.1).abs() < 1e-12);
        assert!((r.response_s().unwrap() - 0.2).abs() < 1e-12);
        assert!((r.total_s() - 2.0).abs() < 1e-12);
        assert!((r.tokens_per_s().unwrap() - 10.0).abs() < 1e-9);
        // (end 2.0 s - first token 0.1 s) / (3 - 1) tokens.
        assert!((r.tpot_s().unwrap() - 0.95).abs() < 1e-9);
        let itl: Vec<f64> = r.itl_s().collect();
        assert_eq!(itl.len(), 2);
        assert!(itl.iter().all(|g| (g - 0.1).abs() < 1e-12));
        assert!((r.send_lag_s() - 0.001).abs() < 1e-12);
        assert_eq!(r.client_queue_s(), 0.0);
    }

    #[test]
    fn a_single_chunk_has_no_rate() {
        assert_eq!(rec(&[(5, 1)]).tokens_per_s(), None);
        assert_eq!(rec(&[]).tokens_per_s(), None);
        assert_eq!(rec(&[(5, 1), (5, 1)]).tokens_per_s(), None);
        // Chunks microseconds apart give no rate rather than an absurd one.
        assert_eq!(
            rec(&[(0, 1), (16_000, 1), (40_000, 1)]).tokens_per_s(),
            None
        );
        assert_eq!(
            rec(&[(0, 1), (1_999_999, 1), (1_999_999, 1)]).tokens_per_s(),
            None
        );
    }

    #[test]
    fn a_short_answer_has_its_rate() {
        // max_tokens = 8 at 5 ms a token: 35 ms from first to last, under the 50 ms window.
        let chunks: Vec<(u64, u32)> = (0..8).map(|i| (100_000_000 + i * 5_000_000, 1)).collect();
        let r = rec(&chunks);
        assert!((r.tokens_per_s().unwrap() - 200.0).abs() < 1e-9);
        // Two chunks 2 ms apart: one gap of 2 ms, 500 tokens/s.
        assert!((rec(&[(0, 1), (2_000_000, 1)]).tokens_per_s().unwrap() - 500.0).abs() < 1e-9);
        // One chunk 49 ms after two that came together: measured (24.5 ms a gap on average).
        assert!(
            rec(&[(0, 1), (16_000, 1), (49_000_000, 1)])
                .tokens_per_s()
                .is_some()
        );
    }
}
