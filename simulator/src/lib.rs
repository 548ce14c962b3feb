//! The built-in simulated Ollama server: `/api/generate` (NDJSON stream or one JSON reply),
//! `/api/tags`, `/api/version`, with set delays, token counts, parallel slots and injected faults.
//!
//! Timing model (deterministic): a request waits in a FIFO queue for one of `slots`; once it holds
//! a slot, its first token comes `ttft` later and each further token `token_delay` after the one
//! before. Like Ollama, no response header is sent before the first token.
#![forbid(unsafe_code)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

/// Faults injected by request arrival index (1-based), so counts are deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every Nth request is answered 500 with an Ollama error body (0 = never).
    pub fail_every: u64,
    /// Every Nth request has its stream end mid-way, without the final `done` line (0 = never).
    pub cut_every: u64,
    /// Tokens sent before a cut stream is dropped.
    pub cut_after_tokens: u32,
    /// Every Nth request gets a line that is not JSON after its first token (0 = never).
    pub malformed_every: u64,
    /// A whole-server stall (a hiccup: GC, swapping, a model reload): this long after the first
    /// generate request arrives, no token goes out for `stall_for`; generations resume where
    /// they were. `None` = never.
    pub stall_at: Option<Duration>,
    /// Length of the stall.
    pub stall_for: Duration,
}

/// How the simulated server behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Model names served (`/api/tags`); others get Ollama's 404.
    pub models: Vec<String>,
    /// Slot acquired -> first token.
    pub ttft: Duration,
    /// Gap between consecutive tokens.
    pub token_delay: Duration,
    /// Output tokens per request (capped by the request's `options.num_predict`).
    pub tokens: u32,
    /// Requests served at once (Ollama's `OLLAMA_NUM_PARALLEL`); the rest queue, FIFO, unbounded.
    pub slots: u32,
    pub faults: Faults,
    /// What `/api/version` reports.
    pub version: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            models: vec!["deepseek-r1:7b".to_string()],
            ttft: Duration::from_millis(150),
            token_delay: Duration::from_millis(10),
            tokens: 100,
            slots: 4,
            faults: Faults::default(),
            version: format!("0.0.0-tokengun-sim-{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The simulator refused its configuration or could not serve.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the simulator needs at least one slot (--slots)")]
    NoSlots,
    #[error("the simulator needs at least one model name")]
    NoModels,
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("simulator server failed: {0}")]
    Serve(#[source] std::io::Error),
}

impl SimConfig {
    /// Checks the configuration before any port is bound.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.slots == 0 {
            return Err(SimError::NoSlots);
        }
        if self.models.iter().all(|m| m.trim().is_empty()) {
            return Err(SimError::NoModels);
        }
        Ok(())
    }
}

struct Shared {
    config: SimConfig,
    slots: Arc<Semaphore>,
    arrivals: AtomicU64,
    /// When the first generate request arrived (the stall window is relative to it).
    first_arrival: std::sync::OnceLock<Instant>,
}

impl Shared {
    /// The stall window, once the first request has set its origin.
    fn stall_window(&self) -> Option<(Instant, Instant)> {
        let at = self.config.faults.stall_at?;
        let start = *self.first_arrival.get()? + at;
        Some((start, start + self.config.faults.stall_for))
    }

    /// If `deadline` falls inside the stall window, how much later it really comes.
    fn stall_shift(&self, deadline: Instant) -> Duration {
        match self.stall_window() {
            Some((start, end)) if deadline >= start && deadline < end => end - deadline,
            _ => Duration::ZERO,
        }
    }
}

/// Builds the simulator's routes.
pub fn router(config: SimConfig) -> Router {
    let shared = Arc::new(Shared {
        slots: Arc::new(Semaphore::new(config.slots.max(1) as usize)),
        config,
        arrivals: AtomicU64::new(0),
        first_arrival: std::sync::OnceLock::new(),
    });
    Router::new()
        .route("/", get(|| async { "Ollama is running" }))
        .route("/api/version", get(version))
        .route("/api/tags", get(tags))
        .route("/api/generate", post(generate))
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found") })
        .with_state(shared)
}

/// Serves on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    config.validate()?;
    axum::serve(listener, router(config))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(SimError::Serve)
}

/// A simulator running in the background; dropping it stops it.
pub struct SimHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), SimError>>,
}

impl SimHandle {
    /// Binds `addr` (use port 0 for a free one) and starts serving.
    pub async fn start(addr: &str, config: SimConfig) -> Result<Self, SimError> {
        config.validate()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let local = listener.local_addr().map_err(SimError::Serve)?;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, config, async {
            let _ = rx.await;
        }));
        Ok(Self {
            addr: local,
            stop: Some(tx),
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ip:port`, ready for `--target`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets open streams end, and waits (at most `grace`).
    pub async fn stop(mut self, grace: Duration) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

fn ollama_error(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": msg }))).into_response()
}

async fn version(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(serde_json::json!({ "version": s.config.version })).into_response()
}

async fn tags(State(s): State<Arc<Shared>>) -> Response {
    let models: Vec<_> = s
        .config
        .models
        .iter()
        .map(|m| {
            serde_json::json!({
                "name": m, "model": m,
                "modified_at": "2025-05-10T08:06:48.639712648-07:00",
                "size": 4_683_075_271u64,
                "digest": "0a8c266910232fd3291e71e5ba1e058cc5af9d411192cf88b6d30e92b6e73163",
                "details": {"parent_model": "", "format": "gguf", "family": "qwen2",
                            "families": ["qwen2"], "parameter_size": "7.6B",
                            "quantization_level": "Q4_K_M"},
                "capabilities": ["completion"],
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "models": models })).into_response()
}

#[derive(Deserialize)]
struct GenerateRequest {
    model: Option<String>,
    #[serde(default)]
    prompt: String,
    stream: Option<bool>,
    #[serde(default)]
    options: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A line of the NDJSON stream, fields in Ollama's order.
#[derive(Serialize)]
struct Line<'a> {
    model: &'a str,
    created_at: String,
    response: &'a str,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_eval_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_eval_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_duration: Option<u64>,
}

const WORDS: &[&str] = &[
    "Time", " is", " the", " measure", " of", " change", ",", " the", " order", " of", " before",
    " and", " after", ".",
];

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One generation in progress: holds its slot until dropped (stream end or client gone).
struct Generation {
    shared: Arc<Shared>,
    model: String,
    _permit: OwnedSemaphorePermit,
    arrived: Instant,
    first_token_at: Instant,
    tokens: u32,
    sent: u32,
    prompt_tokens: u64,
    length_capped: bool,
    cut_after: Option<u32>,
    malformed: bool,
    finished: bool,
}

impl Generation {
    fn token_deadline(&self, i: u32) -> Instant {
        self.first_token_at + self.shared.config.token_delay * i
    }

    fn line(&self, text: &str) -> Bytes {
        let line = Line {
            model: &self.model,
            created_at: now_rfc3339(),
            response: text,
            done: false,
            done_reason: None,
            context: None,
            total_duration: None,
            load_duration: None,
            prompt_eval_count: None,
            prompt_eval_duration: None,
            eval_count: None,
            eval_duration: None,
        };
        to_line(&line)
    }

    fn final_line(&self, response: &str) -> Bytes {
        let c = &self.shared.config;
        let now = Instant::now();
        let line = Line {
            model: &self.model,
            created_at: now_rfc3339(),
            response,
            done: true,
            done_reason: Some(if self.length_capped { "length" } else { "stop" }),
            context: Some(vec![151_644, 3838, 374]),
            total_duration: Some(nanos(now - self.arrived)),
            load_duration: Some(1_000_000),
            prompt_eval_count: Some(self.prompt_tokens),
            prompt_eval_duration: Some(nanos(c.ttft)),
            eval_count: Some(u64::from(self.tokens)),
            eval_duration: Some(nanos(now.saturating_duration_since(self.first_token_at))),
        };
        to_line(&line)
    }
}

fn to_line(line: &Line<'_>) -> Bytes {
    let mut v = serde_json::to_vec(line).unwrap_or_else(|_| b"{}".to_vec());
    v.push(b'\n');
    Bytes::from(v)
}

fn word(i: u32) -> &'static str {
    WORDS[i as usize % WORDS.len()]
}

/// Next piece of the body: token lines at their deadlines, then the final line.
async fn next_chunk(mut g: Generation) -> Option<(Result<Bytes, std::io::Error>, Generation)> {
    if g.finished {
        return None;
    }
    if g.sent == g.tokens {
        g.finished = true;
        let last = g.final_line("");
        return Some((Ok(last), g));
    }
    if g.cut_after == Some(g.sent) {
        // The stream ends where the next token would have been, without Ollama's final `done`
        // line: what a client sees when a runner dies mid-generation. Ending the body cleanly
        // (rather than resetting the socket) keeps every token already sent, so counts are exact.
        return None;
    }
    let mut deadline = g.token_deadline(g.sent);
    let shift = g.shared.stall_shift(deadline);
    if !shift.is_zero() {
        // Everything after the stall moves back by the time lost.
        g.first_token_at += shift;
        deadline += shift;
    }
    tokio::time::sleep_until(deadline).await;
    if g.malformed && g.sent == 1 {
        g.finished = true;
        return Some((Ok(Bytes::from_static(b"{\"model\": oops not json\n")), g));
    }
    let bytes = g.line(word(g.sent));
    g.sent += 1;
    Some((Ok(bytes), g))
}

fn hits(every: u64, index: u64) -> bool {
    every > 0 && index % every == 0
}

async fn generate(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let arrived = Instant::now();
    if body.is_empty() {
        return ollama_error(StatusCode::BAD_REQUEST, "missing request body");
    }
    let req: GenerateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ollama_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let Some(model) = req.model.filter(|m| !m.is_empty()) else {
        return ollama_error(StatusCode::BAD_REQUEST, "model is required");
    };
    if !s.config.models.contains(&model) {
        return ollama_error(StatusCode::NOT_FOUND, &format!("model '{model}' not found"));
    }
    let index = s.arrivals.fetch_add(1, Ordering::Relaxed) + 1;
    s.first_arrival.get_or_init(|| arrived);
    let f = &s.config.faults;
    if hits(f.fail_every, index) {
        return ollama_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "llama runner process has terminated: simulated failure",
        );
    }
    let num_predict = req
        .options
        .as_ref()
        .and_then(|o| o.get("num_predict"))
        .and_then(serde_json::Value::as_i64)
        .filter(|n| *n > 0)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let tokens = num_predict.map_or(s.config.tokens, |n| n.min(s.config.tokens));
    let cut_after = hits(f.cut_every, index).then_some(f.cut_after_tokens.min(tokens));
    let malformed = hits(f.malformed_every, index) && tokens > 1;
    // Queue for a slot (FIFO); the client hears nothing until its first token, as with Ollama.
    let Ok(permit) = s.slots.clone().acquire_owned().await else {
        return ollama_error(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down");
    };
    let first_token_at = Instant::now() + s.config.ttft;
    let mut g = Generation {
        shared: s.clone(),
        model,
        _permit: permit,
        arrived,
        first_token_at,
        tokens,
        sent: 0,
        prompt_tokens: req.prompt.split_whitespace().count() as u64 + 4,
        length_capped: num_predict.is_some_and(|n| n < s.config.tokens),
        cut_after,
        malformed,
        finished: false,
    };
    if req.stream == Some(false) {
        let last = g.token_deadline(tokens.saturating_sub(1));
        tokio::time::sleep_until(last.max(first_token_at)).await;
        g.sent = tokens;
        let text: String = (0..tokens).map(word).collect();
        let mut resp = Response::new(Body::from(g.final_line(&text)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        return resp;
    }
    // Produce the first piece before answering, so headers go out with the first token.
    let Some((first, g)) = next_chunk(g).await else {
        return ollama_error(StatusCode::INTERNAL_SERVER_ERROR, "empty generation");
    };
    let head = futures_util::stream::once(async move { first });
    let rest = futures_util::stream::unfold(g, next_chunk);
    let mut resp = Response::new(Body::from_stream(futures_util::StreamExt::chain(
        head, rest,
    )));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}
