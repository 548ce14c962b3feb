//! The built-in simulated inference server: Ollama's `/api/*` and OpenAI's `/v1/*` endpoints over
//! an engine model with slots, batched decoding, prefill, model loads, faults and named profiles.
//!
//! Layout: [`config`] (what the server is), [`engine`] (when each token goes out), [`wire`] (how
//! it is written), this module (routes and the streaming body).
#![forbid(unsafe_code)]

pub mod config;
pub mod engine;
pub mod prefix_cache;
mod request;
pub mod wire;

pub use config::{
    EngineModel, Faults, Flavor, MemoryFailures, ModelProfile, NUM_PARALLEL_ENV, OutputLen,
    PROFILES, SimConfig,
};
pub use engine::{Engine, QUEUE_FULL_TEXT, Truth};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use engine::{Admission, Refusal};
use request::parse_request;
use serde_json::{Value, json};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokengun_common::server::ServerTask;
use tokio::net::TcpListener;
use tokio::time::Instant;
use wire::{Closing, Endpoint, Writer};

/// The simulator refused its configuration or could not serve.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("simulator server failed: {0}")]
    Serve(#[source] std::io::Error),
}

const WORDS: &[&str] = &[
    "Time", " is", " the", " measure", " of", " change", ",", " the", " order", " of", " before",
    " and", " after", ".",
];

fn word(i: u32) -> &'static str {
    WORDS[i as usize % WORDS.len()]
}

/// The simulated server: the engine the models share, and one engine for each model with a
/// profile of its own (its own slots, timing and load state).
pub struct Sim {
    base: Arc<Engine>,
    own: Vec<(String, Arc<Engine>)>,
}

impl Sim {
    /// A server for `cfg` (checked first).
    pub fn new(cfg: SimConfig) -> Result<Arc<Self>, SimError> {
        cfg.validate()?;
        let own = cfg
            .model_profiles
            .iter()
            .filter_map(|p| Some((p.model.clone(), Engine::new(cfg.own_engine(&p.model)?))))
            .collect();
        Ok(Arc::new(Self {
            base: Engine::new(cfg),
            own,
        }))
    }

    /// The whole server's configuration (every model, the flavor, the version).
    pub fn cfg(&self) -> &SimConfig {
        &self.base.cfg
    }

    /// The engine that serves `model`.
    pub fn engine_for(&self, model: &str) -> &Arc<Engine> {
        self.own
            .iter()
            .find(|(m, _)| m == model)
            .map_or(&self.base, |(_, e)| e)
    }

    fn engines(&self) -> impl Iterator<Item = &Arc<Engine>> {
        std::iter::once(&self.base).chain(self.own.iter().map(|(_, e)| e))
    }
}

/// Builds the simulator's routes over `engine`.
pub fn router(engine: Arc<Sim>) -> Router {
    let r = Router::new()
        .route("/v1/models", get(openai_models))
        .route(
            "/v1/completions",
            post(|s, h, b| generate(s, h, b, Endpoint::OpenAiCompletions)),
        )
        .route(
            "/v1/chat/completions",
            post(|s, h, b| generate(s, h, b, Endpoint::OpenAiChat)),
        );
    let r = if engine.cfg().record_truth {
        r.route("/tokengun/truth", get(truth))
    } else {
        r
    };
    let r = match engine.cfg().flavor {
        Flavor::Ollama => r
            .route("/", get(|| async { "Ollama is running" }))
            .route("/api/version", get(version))
            .route("/api/tags", get(tags))
            .route("/api/ps", get(ps))
            .route("/api/show", post(show))
            .route(
                "/api/generate",
                post(|s, h, b| generate(s, h, b, Endpoint::OllamaGenerate)),
            )
            .route(
                "/api/chat",
                post(|s, h, b| generate(s, h, b, Endpoint::OllamaChat)),
            )
            .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found") }),
        Flavor::LlamaCpp => r
            .route(
                "/health",
                get(|| async { axum::Json(json!({"status": "ok"})) }),
            )
            .fallback(|| async {
                llama_headers(error_response(
                    Endpoint::OpenAiCompletions,
                    Flavor::LlamaCpp,
                    StatusCode::NOT_FOUND,
                    "File Not Found",
                ))
            }),
    };
    r.with_state(engine)
}

/// The ground truth as JSON (only with `record_truth`): what was sent and when, with the engine's
/// epoch on the machine's monotonic clock so a client in another process can compare instants.
async fn truth(State(s): State<Arc<Sim>>) -> Response {
    let e = &s.base;
    let body = TruthExport {
        epoch_monotonic_ns: monotonic_ns(e.epoch.into_std()),
        requests: e.truth(),
    };
    axum::Json(body).into_response()
}

/// `GET /tokengun/truth`: every request's ground truth, instants in ns from the engine's epoch,
/// which is `epoch_monotonic_ns` on the machine's monotonic clock.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TruthExport {
    pub epoch_monotonic_ns: u64,
    pub requests: Vec<Truth>,
}

/// `at` on the machine's monotonic clock (`CLOCK_MONOTONIC`), in ns: a figure another process on
/// the same machine can map onto its own instants with this same function.
///
/// `Instant::now()` is read between two reads of the raw clock, and of eight tries the one with the
/// tightest bracket is used, so a preemption between the reads cannot shift the mapping.
pub fn monotonic_ns(at: std::time::Instant) -> u64 {
    let raw = || {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    let mut best: Option<(i128, i128, std::time::Instant)> = None;
    for _ in 0..8 {
        let before = raw();
        let now = std::time::Instant::now();
        let after = raw();
        let width = after - before;
        if best.is_none_or(|(w, _, _)| width < w) {
            best = Some((width, before + width / 2, now));
        }
    }
    let Some((_, now_ns, now)) = best else {
        return 0;
    };
    let back_ns = match now.checked_duration_since(at) {
        Some(d) => d.as_nanos() as i128,
        None => -(at.duration_since(now).as_nanos() as i128),
    };
    u64::try_from(now_ns - back_ns).unwrap_or(0)
}

/// Serves on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Sim>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(SimError::Serve)
}

/// A simulator running in the background; dropping it stops it.
pub struct SimHandle {
    addr: SocketAddr,
    engine: Arc<Sim>,
    /// Dropping the handle stops the server at once.
    server: ServerTask<SimError>,
}

impl SimHandle {
    /// Binds `addr` (use port 0 for a free one) and starts serving.
    pub async fn start(addr: &str, config: SimConfig) -> Result<Self, SimError> {
        let engine = Sim::new(config)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let local = listener.local_addr().map_err(SimError::Serve)?;
        let served = engine.clone();
        Ok(Self {
            addr: local,
            engine,
            server: ServerTask::spawn(|stop| serve(listener, served, stop)),
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

    /// What the server really did, per request (needs `record_truth`).
    pub fn decoding(&self) -> u32 {
        self.engine.engines().map(|e| e.decoding()).sum()
    }

    /// Ground truth recorded so far by the shared engine (empty unless `record_truth`).
    pub fn truth(&self) -> Vec<Truth> {
        self.engine.base.truth()
    }

    /// The shared engine's epoch: `Truth` instants count from it.
    pub fn epoch(&self) -> Instant {
        self.engine.base.epoch
    }

    /// The engine that serves `model` (for tests that look at one model's state).
    pub fn engine_for(&self, model: &str) -> Arc<Engine> {
        self.engine.engine_for(model).clone()
    }

    /// Stops accepting, lets open streams end, and waits (at most `grace`).
    pub async fn stop(self, grace: Duration) {
        self.server.stop(grace).await;
    }
}

fn llama_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static("llama.cpp"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static(""),
    );
    r
}

fn error_response(endpoint: Endpoint, flavor: Flavor, status: StatusCode, msg: &str) -> Response {
    (
        status,
        axum::Json(wire::error_body(endpoint, flavor, status.as_u16(), msg)),
    )
        .into_response()
}

async fn version(State(s): State<Arc<Sim>>) -> Response {
    axum::Json(json!({ "version": s.cfg().version })).into_response()
}

fn model_details() -> Value {
    json!({"parent_model": "", "format": "gguf", "family": "qwen2", "families": ["qwen2"],
           "parameter_size": "7.6B", "quantization_level": "Q4_K_M"})
}

const DIGEST: &str = "0a8c266910232fd3291e71e5ba1e058cc5af9d411192cf88b6d30e92b6e73163";

async fn tags(State(s): State<Arc<Sim>>) -> Response {
    let e = &s.base;
    let models: Vec<_> = e
        .cfg
        .models
        .iter()
        .map(|m| {
            json!({
                "name": m, "model": m, "modified_at": "2025-05-10T08:06:48.639712648-07:00",
                "size": 4_683_075_271u64, "digest": DIGEST, "details": model_details(),
                "capabilities": if e.cfg.reasoning_tokens > 0 { json!(["completion", "thinking"]) } else { json!(["completion"]) },
            })
        })
        .collect();
    axum::Json(json!({ "models": models })).into_response()
}

/// `/api/ps`: the models loaded now (used and not idle past their keep-alive, nor unloaded).
async fn ps(State(s): State<Arc<Sim>>) -> Response {
    let now = Instant::now();
    let models: Vec<_> = s
        .cfg()
        .models
        .iter()
        .filter_map(|m| {
            let until = s.engine_for(m).loaded_until(now)?;
            let expires = std::time::SystemTime::now() + until.saturating_duration_since(now);
            Some(json!({"name": m, "model": m, "size": 6_654_289_920u64, "digest": DIGEST, "details": model_details(),
                   "expires_at": humantime::format_rfc3339_millis(expires).to_string(),
                   "size_vram": (6_654_289_920.0 * s.cfg().vram_share).round() as u64, "context_length": 4096}))
        })
        .collect();
    axum::Json(json!({ "models": models })).into_response()
}

async fn show(State(s): State<Arc<Sim>>, body: Bytes) -> Response {
    let e = &s.base;
    let name = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v.get("model")
            .or_else(|| v.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let Some(name) = name else {
        return error_response(
            Endpoint::OllamaGenerate,
            Flavor::Ollama,
            StatusCode::BAD_REQUEST,
            "model is required",
        );
    };
    if !e.cfg.models.contains(&name) {
        return error_response(
            Endpoint::OllamaGenerate,
            Flavor::Ollama,
            StatusCode::NOT_FOUND,
            &format!("model '{name}' not found"),
        );
    }
    axum::Json(json!({
        "modelfile": format!("FROM {name}\n"), "parameters": "", "template": "{{ .Prompt }}",
        "details": model_details(), "model_info": {"general.architecture": "qwen2", "general.parameter_count": 7_615_616_512u64},
        "capabilities": ["completion"], "modified_at": "2025-05-10T08:06:48.639712648-07:00",
    }))
    .into_response()
}

async fn openai_models(State(s): State<Arc<Sim>>) -> Response {
    let e = &s.base;
    let data: Vec<_> = e
        .cfg
        .models
        .iter()
        .map(|m| match e.cfg.flavor {
            Flavor::Ollama => json!({"id": m, "object": "model", "created": 1_746_889_608u64, "owned_by": "library"}),
            Flavor::LlamaCpp => json!({"id": m, "object": "model", "created": 1_795_804_970u64, "owned_by": "llamacpp",
                                       "meta": {"n_ctx_train": 8192, "n_params": 134_515_008u64}}),
        })
        .collect();
    let mut v = json!({"object": "list", "data": data});
    if e.cfg.flavor == Flavor::LlamaCpp {
        v["models"] = json!(
            e.cfg
                .models
                .iter()
                .map(|m| json!({"name": m, "model": m}))
                .collect::<Vec<_>>()
        );
        return llama_headers(axum::Json(v).into_response());
    }
    axum::Json(v).into_response()
}

/// One generation being streamed.
struct Generation {
    adm: Admission,
    writer: Writer,
    sent: u32,
    last: Instant,
    first_at: Option<Instant>,
    reasoning_tokens: u32,
    inline: bool,
    finished: bool,
}

impl Generation {
    fn text(&self, i: u32) -> (String, bool) {
        let w = word(i);
        if i < self.reasoning_tokens {
            if self.inline {
                let mut s = String::new();
                if i == 0 {
                    s.push_str("<think>");
                }
                s.push_str(w);
                if i + 1 == self.reasoning_tokens {
                    s.push_str("</think>");
                }
                (s, false)
            } else {
                (w.to_string(), true)
            }
        } else {
            (w.to_string(), false)
        }
    }

    fn closing(&self) -> Closing {
        let now = Instant::now();
        let first = self.first_at.unwrap_or(now);
        Closing {
            output_tokens: u64::from(self.sent),
            prompt_tokens: self.adm.prompt_tokens,
            cached_tokens: self.adm.cached_tokens,
            length_capped: self.adm.length_capped,
            total: now.saturating_duration_since(self.adm.arrived),
            load: self.adm.load,
            prefill: first.saturating_duration_since(self.adm.admitted + self.adm.load),
            decode: now.saturating_duration_since(first),
        }
    }

    /// The next body piece: every token whose time has come (at least one), or the closing.
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        if self.finished {
            return None;
        }
        if self.sent == self.adm.tokens {
            self.finished = true;
            let c = self.closing();
            return Some((Ok(Bytes::from(self.writer.closing(&c))), self));
        }
        if self.adm.cut_after == Some(self.sent) {
            // The stream ends without its closing line or [DONE]: a runner dying mid-generation.
            // Ending the body cleanly keeps every token already sent, so counts are exact.
            return None;
        }
        let mut buf = Vec::new();
        // Emit every token that is due; a firehose sends many per write.
        while self.sent < self.adm.tokens
            && self.adm.cut_after != Some(self.sent)
            && buf.len() < 64 * 1024
        {
            let due = if buf.is_empty() {
                self.adm.wait_for(self.sent, self.last).await
            } else {
                let d = self.adm.deadline(self.sent, self.last);
                if d > Instant::now() {
                    break;
                }
                d
            };
            if self.adm.malformed && self.sent == 1 {
                self.finished = true;
                buf.extend(self.writer.malformed());
                return Some((Ok(Bytes::from(buf)), self));
            }
            let (text, reasoning) = self.text(self.sent);
            buf.extend(self.writer.token(&text, reasoning));
            let now = Instant::now();
            self.adm.emitted(now);
            self.first_at.get_or_insert(now);
            // The schedule runs on intended instants so a late wake-up does not push every later token.
            self.last = due;
            self.sent += 1;
        }
        Some((Ok(Bytes::from(buf)), self))
    }
}

async fn generate(
    State(s): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
    endpoint: Endpoint,
) -> Response {
    let flavor = s.cfg().flavor;
    let finish = |r: Response| {
        if flavor == Flavor::LlamaCpp {
            llama_headers(r)
        } else {
            r
        }
    };
    let p = match parse_request(endpoint, &body, &headers) {
        Ok(p) => p,
        Err((status, msg)) => return finish(error_response(endpoint, flavor, status, &msg)),
    };
    let e = s.engine_for(&p.model);
    // llama.cpp serves its one model under any name; Ollama knows only what it has.
    let model = match flavor {
        Flavor::Ollama if !e.cfg.models.contains(&p.model) => {
            return error_response(
                endpoint,
                flavor,
                StatusCode::NOT_FOUND,
                &format!("model '{}' not found", p.model),
            );
        }
        Flavor::Ollama => p.model.clone(),
        Flavor::LlamaCpp => e.cfg.models.first().cloned().unwrap_or_default(),
    };
    let adm = match e.admit(&p.req).await {
        Ok(a) => a,
        Err(refusal) => return finish(refusal_response(endpoint, flavor, refusal)),
    };
    let writer = Writer::new(endpoint, flavor, model, adm.index, p.include_usage);
    let g = Generation {
        last: adm.first_token_at,
        adm,
        writer,
        sent: 0,
        first_at: None,
        reasoning_tokens: e.cfg.reasoning_tokens,
        inline: e.cfg.reasoning_inline,
        finished: false,
    };
    if !p.stream {
        return finish(g.whole().await);
    }
    finish(streamed(g, endpoint, flavor).await)
}

/// The error response of a request the engine refused.
fn refusal_response(endpoint: Endpoint, flavor: Flavor, refusal: Refusal) -> Response {
    match refusal {
        Refusal::Failed(msg) => {
            error_response(endpoint, flavor, StatusCode::INTERNAL_SERVER_ERROR, &msg)
        }
        Refusal::QueueFull => error_response(
            endpoint,
            flavor,
            StatusCode::SERVICE_UNAVAILABLE,
            QUEUE_FULL_TEXT,
        ),
    }
}

impl Generation {
    /// A non-streamed answer: every token on its schedule, then one JSON body.
    async fn whole(mut self) -> Response {
        let mut answer = String::new();
        let mut reasoning = String::new();
        while self.sent < self.adm.tokens {
            let due = self.adm.wait_for(self.sent, self.last).await;
            let (text, is_reasoning) = self.text(self.sent);
            if is_reasoning {
                reasoning.push_str(&text)
            } else {
                answer.push_str(&text)
            }
            let now = Instant::now();
            self.adm.emitted(now);
            self.first_at.get_or_insert(now);
            self.last = due;
            self.sent += 1;
        }
        let mut resp =
            axum::Json(self.writer.whole(&answer, &reasoning, &self.closing())).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        resp
    }
}

/// A streamed answer (SSE or NDJSON), with the headers each server sends.
async fn streamed(g: Generation, endpoint: Endpoint, flavor: Flavor) -> Response {
    let content_type = if endpoint.is_sse() {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    let body = match flavor {
        // Ollama sends nothing, not even headers, before the first token: produce it first.
        Flavor::Ollama => {
            let Some((first, g)) = g.next().await else {
                return error_response(
                    endpoint,
                    flavor,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "empty generation",
                );
            };
            let head = futures_util::stream::once(async move { first });
            Body::from_stream(futures_util::StreamExt::chain(
                head,
                futures_util::stream::unfold(g, Generation::next),
            ))
        }
        // llama.cpp writes the headers as soon as a slot takes the request.
        Flavor::LlamaCpp => Body::from_stream(futures_util::stream::unfold(g, Generation::next)),
    };
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if flavor == Flavor::LlamaCpp {
        resp.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        resp.headers_mut()
            .insert("keep-alive", HeaderValue::from_static("timeout=5, max=100"));
    }
    resp
}
