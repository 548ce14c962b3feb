//! What one cycle asks of an agent: the plan compiled from CLI flags, validated before any load.
//! Extension point: a new load shape starts at [`LoadShape`], whose checklist lists its places.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Request body keys that extra JSON may not override: they define what is measured.
pub const RESERVED_BODY_KEYS: &[&str] =
    &["model", "prompt", "stream", "messages", "stream_options"];

/// The most concurrent requests a single level may ask for.
pub const MAX_LEVEL: u32 = 100_000;

/// Which wire API the target speaks. To add one: a variant here, its wire enum in the proto,
/// a backend module in the agent, and a simulator route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    /// Ollama's native `/api/generate` NDJSON stream. (Runs from before the four API names
    /// recorded it as `ollama`.)
    #[serde(alias = "ollama")]
    OllamaGenerate,
    /// Ollama's native `/api/chat` NDJSON stream.
    OllamaChat,
    /// OpenAI `/v1/completions` SSE (vLLM, llama.cpp, TGI, SGLang, LM Studio, Ollama's /v1).
    OpenaiCompletions,
    /// OpenAI `/v1/chat/completions` SSE.
    OpenaiChat,
}

impl Api {
    /// Every API, in flag order.
    pub const ALL: [Api; 4] = [
        Api::OllamaGenerate,
        Api::OllamaChat,
        Api::OpenaiCompletions,
        Api::OpenaiChat,
    ];

    /// The flag and manifest name.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OllamaGenerate => "ollama-generate",
            Api::OllamaChat => "ollama-chat",
            Api::OpenaiCompletions => "openai-completions",
            Api::OpenaiChat => "openai-chat",
        }
    }

    /// The results folder of the study's layout: `ollama` or `openai`.
    pub fn family(self) -> &'static str {
        match self {
            Api::OllamaGenerate | Api::OllamaChat => "ollama",
            Api::OpenaiCompletions | Api::OpenaiChat => "openai",
        }
    }

    /// The request path.
    pub fn path(self) -> &'static str {
        match self {
            Api::OllamaGenerate => "/api/generate",
            Api::OllamaChat => "/api/chat",
            Api::OpenaiCompletions => "/v1/completions",
            Api::OpenaiChat => "/v1/chat/completions",
        }
    }

    /// Parses a flag value.
    pub fn parse(s: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Sampling and length options, mapped by each backend to its own wire fields
/// (Ollama: `options.num_predict`, ...; OpenAI: `max_tokens`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestOptions {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    /// The server's sampling seed (not tokengun's schedule seed).
    pub seed: Option<i64>,
    pub stop: Vec<String>,
    /// Ollama's `keep_alive` (ignored by OpenAI-style servers).
    pub keep_alive: Option<String>,
}

/// How requests of one cycle are released. One executor runs them all; a shape is data.
///
/// To add a load shape:
/// 1. a variant here, and an arm in each method of `impl LoadShape` below (the compiler lists
///    them): nothing outside the engine compares `== LoadShape::X`, they ask these methods;
/// 2. its wire enum value in `proto/proto/tokengun/v1/agent.proto` and both arms in
///    `proto/src/convert.rs`;
/// 3. its release loop in `agent/src/engine.rs` (`dispatch`), and its limits in
///    `agent/src/runner.rs` (`Runner::prepare`);
/// 4. its flag value (`controller/src/cmd/run.rs`, `ShapeArg`) and a scenario test in
///    `tests/tests/load_shapes.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadShape {
    /// The study's cycle: `concurrency` requests fired together; the cycle ends when all have ended.
    Burst,
    /// Keep `concurrency` requests in flight for `duration`; each finished one is replaced at once.
    Closed,
    /// Requests arrive at `rate_per_s` for `duration` whether or not earlier ones have finished
    /// (at most `concurrency` in flight when that is above 0; the rest wait, and the wait counts).
    Open,
}

impl LoadShape {
    /// The name used in flags, files and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadShape::Burst => "burst",
            LoadShape::Closed => "closed",
            LoadShape::Open => "open",
        }
    }

    /// Its cycles run for a set duration (a burst ends when its requests have).
    pub fn has_duration(self) -> bool {
        match self {
            LoadShape::Burst => false,
            LoadShape::Closed | LoadShape::Open => true,
        }
    }

    /// Its levels are arrival rates (requests/s), with the concurrency as an optional cap.
    pub fn is_rate(self) -> bool {
        match self {
            LoadShape::Open => true,
            LoadShape::Burst | LoadShape::Closed => false,
        }
    }

    /// Requests a cycle of `concurrency` sends, when the plan alone fixes it (a burst's size).
    pub fn planned_requests(self, concurrency: u32) -> Option<u32> {
        match self {
            LoadShape::Burst => Some(concurrency),
            LoadShape::Closed | LoadShape::Open => None,
        }
    }

    /// The shape of the warm-up phase before a sweep of this shape: rates stay rates, anything
    /// else keeps the first level in flight for the warm-up's duration.
    pub fn warmup_shape(self) -> LoadShape {
        if self.is_rate() {
            LoadShape::Open
        } else {
            LoadShape::Closed
        }
    }

    /// Its measuring window in ns: the cycle's duration, or None when the cycle ends with its
    /// requests (then the window is the requests' own span).
    pub fn window_ns(self, duration: Duration) -> Option<u64> {
        self.has_duration()
            .then(|| u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// How an open-loop schedule spaces its arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Exactly 1/rate apart.
    Constant,
    /// Exponential gaps with mean 1/rate, drawn from the plan's seed.
    #[default]
    Poisson,
}

/// One prompt of a workload, with the request options that go with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSpec {
    pub text: String,
    /// This prompt's own output cap, over the plan's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// A JSON object merged into this prompt's request body (after the plan's own), or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub extra_body_json: String,
    /// The chat messages (a JSON array of `{"role", "content"}`) chat APIs send instead of `text`
    /// as one user message; empty for a plain prompt. `text` then holds them flattened, for the
    /// completion APIs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub messages_json: String,
    /// Prompt tokens this prompt was made to have (exact with a tokenizer, else estimated), to
    /// check against the server's count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u32>,
    /// Ask the server to generate exactly `max_tokens` (`ignore_eos`, `min_tokens` where the API
    /// has them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_output: bool,
    /// A conversation's later user turns, in order (ShareGPT's later human turns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub later_turns: Vec<String>,
}

impl PromptSpec {
    /// A prompt with no options of its own.
    pub fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            max_tokens: None,
            extra_body_json: String::new(),
            messages_json: String::new(),
            input_tokens: None,
            force_output: false,
            later_turns: Vec::new(),
        }
    }

    /// Bytes this prompt holds (what it costs in a plan sent to an agent).
    pub fn size_bytes(&self) -> usize {
        self.text.len()
            + self.extra_body_json.len()
            + self.messages_json.len()
            + self.later_turns.iter().map(String::len).sum::<usize>()
    }
}

/// How a cycle's requests are spread over several targets (server instances).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetPolicy {
    /// Request i goes to target i mod n.
    #[default]
    RoundRobin,
    /// Each request goes to the target with the fewest of this agent's requests in flight (a
    /// target that refused a connection in the last second is passed over while others answer).
    LeastInFlight,
    /// Each agent sends all of its requests to one target (`CyclePlan::pinned_target`).
    Pinned,
}

impl TargetPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "round-robin" => Some(Self::RoundRobin),
            "least-in-flight" => Some(Self::LeastInFlight),
            "pinned" => Some(Self::Pinned),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::LeastInFlight => "least-in-flight",
            Self::Pinned => "pinned",
        }
    }
}

/// One cycle as sent to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CyclePlan {
    /// Run-unique cycle number, from 1.
    pub cycle_id: u32,
    pub shape: LoadShape,
    /// Burst: requests fired together. Closed: requests kept in flight. Open: cap on requests in
    /// flight (0 = no cap).
    pub concurrency: u32,
    /// Open: mean arrivals per second.
    pub rate_per_s: f64,
    /// Open: how arrivals are spaced.
    pub arrival: Arrival,
    /// Closed and open: how long new requests keep starting (requests started in time finish).
    #[serde(with = "duration_ms")]
    pub duration: Duration,
    /// Seeds arrival gaps and prompt choice: same seed, same schedule, same prompts in the same order.
    pub seed: u64,
    /// Base URL of the inference server, e.g. `http://127.0.0.1:11434`.
    pub target_url: String,
    pub api: Api,
    pub model: String,
    /// The workload; each request takes one, chosen from the seed and its request id.
    pub prompts: Vec<PromptSpec>,
    /// A request still running after this long is ended and recorded as a timeout.
    #[serde(with = "duration_ms")]
    pub request_timeout: Duration,
    pub options: RequestOptions,
    /// A JSON object merged into every request body, or empty.
    pub extra_body_json: String,
    /// Conversations and trace replay (all empty: independent requests on the shape's schedule).
    #[serde(default)]
    pub workload: CycleWorkload,
    /// Every server instance of the cycle, `target_url` first; empty = `target_url` alone.
    #[serde(default)]
    pub target_urls: Vec<String>,
    #[serde(default)]
    pub target_policy: TargetPolicy,
    /// `Pinned`: the one target (index into `target_urls`) this agent sends to.
    #[serde(default)]
    pub pinned_target: Option<u32>,
    /// Round-robin starts at this target (agent k of several: k), so the agents' first
    /// requests do not all go to the first target together.
    #[serde(default)]
    pub target_offset: u32,
}

/// What a cycle's workload adds to its shape: conversations of several turns, or a trace's
/// arrivals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CycleWorkload {
    /// Turns per conversation (0 or 1: requests are independent). A level then counts
    /// conversations: each sends turn 1, waits for its answer and the think time, then sends
    /// turn 2 with the whole history and the answer it got, and so on.
    pub turns: u32,
    /// Between an answer and the next turn.
    #[serde(with = "duration_ms")]
    pub think_time: Duration,
    /// Think times drawn exponential around `think_time` (seeded) instead of fixed.
    pub think_exponential: bool,
    /// Trace replay (open loop): each arrival's offset from the origin, ms, in order; replaces
    /// the rate's schedule when not empty. Arrival i sends the cycle's prompt i.
    pub trace_at_ms: Vec<u64>,
}

impl CycleWorkload {
    /// Requests run as conversations.
    pub fn is_conversation(&self) -> bool {
        self.turns > 1
    }
}

impl CyclePlan {
    /// Every target of the cycle, `target_url` first.
    pub fn targets(&self) -> Vec<&str> {
        if self.target_urls.is_empty() {
            vec![self.target_url.as_str()]
        } else {
            self.target_urls.iter().map(String::as_str).collect()
        }
    }
}

/// Why a plan was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("level {0} is out of range: use 1 to {MAX_LEVEL} concurrent requests")]
    Level(u32),
    #[error("no levels given: pass --levels with a comma-separated list such as 1,2,4,8")]
    NoLevels,
    #[error("the model name is empty: pass --model")]
    EmptyModel,
    #[error("the request timeout must be above zero")]
    ZeroTimeout,
    #[error("the target URL {0:?} is not an http:// URL with a host (e.g. http://127.0.0.1:11434)")]
    Target(String),
    #[error("pinned target {index} is not one of the cycle's {count} targets")]
    Pinned { index: u32, count: usize },
    #[error("extra request JSON must be a JSON object: {0}")]
    ExtraBody(String),
    #[error("rate {0} is not a positive number of requests per second (at most 1000000)")]
    Rate(String),
    #[error("{0} needs a duration above zero (--duration, e.g. 60s)")]
    NoDuration(&'static str),
    #[error("the workload has no prompts")]
    NoPrompts,
    #[error("prompt {index}: {reason}")]
    Prompt { index: usize, reason: String },
}

/// Checks that `json` is empty or a JSON object that leaves tokengun's own keys alone.
pub fn check_extra_body(json: &str) -> Result<(), String> {
    if json.trim().is_empty() {
        return Ok(());
    }
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(m)) => {
            match RESERVED_BODY_KEYS.iter().find(|k| m.contains_key(**k)) {
                Some(k) => Err(format!(
                    "it sets {k:?}, which tokengun sets itself (use --model, --prompt, --prompts)"
                )),
                None => Ok(()),
            }
        }
        Ok(_) => Err("not an object".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl CyclePlan {
    /// "8 concurrent requests", "8 requests kept in flight for 60s", "2.5 requests/s for 60s".
    pub fn describe(&self) -> String {
        let dur = humantime::format_duration(self.duration);
        match self.shape {
            LoadShape::Burst => format!(
                "{} concurrent request{}",
                self.concurrency,
                if self.concurrency == 1 { "" } else { "s" }
            ),
            LoadShape::Closed => format!("{} requests kept in flight for {dur}", self.concurrency),
            LoadShape::Open => format!(
                "{} requests/s ({:?}) for {dur}{}",
                format_rate(self.rate_per_s),
                self.arrival,
                if self.concurrency > 0 {
                    format!(", at most {} in flight", self.concurrency)
                } else {
                    String::new()
                }
            ),
        }
    }

    /// Checks everything an agent would otherwise discover only after sending load.
    pub fn validate(&self) -> Result<(), PlanError> {
        match self.shape {
            LoadShape::Burst | LoadShape::Closed => {
                if self.concurrency == 0 || self.concurrency > MAX_LEVEL {
                    return Err(PlanError::Level(self.concurrency));
                }
            }
            LoadShape::Open => {
                if !(self.rate_per_s.is_finite()
                    && self.rate_per_s > 0.0
                    && self.rate_per_s <= MAX_RATE_PER_S)
                {
                    return Err(PlanError::Rate(self.rate_per_s.to_string()));
                }
                if self.concurrency > MAX_LEVEL {
                    return Err(PlanError::Level(self.concurrency));
                }
            }
        }
        if self.shape.has_duration() && self.duration.is_zero() {
            return Err(PlanError::NoDuration(self.shape.as_str()));
        }
        if self.model.trim().is_empty() {
            return Err(PlanError::EmptyModel);
        }
        if self.request_timeout.is_zero() {
            return Err(PlanError::ZeroTimeout);
        }
        parse_target(&self.target_url)?;
        for t in &self.target_urls {
            parse_target(t)?;
        }
        if let Some(k) = self.pinned_target {
            if k as usize >= self.targets().len() {
                return Err(PlanError::Pinned {
                    index: k,
                    count: self.targets().len(),
                });
            }
        }
        check_extra_body(&self.extra_body_json).map_err(PlanError::ExtraBody)?;
        if self.prompts.is_empty() {
            return Err(PlanError::NoPrompts);
        }
        for (index, p) in self.prompts.iter().enumerate() {
            check_extra_body(&p.extra_body_json)
                .map_err(|reason| PlanError::Prompt { index, reason })?;
        }
        Ok(())
    }
}

/// A rate without trailing zeros: `2`, `0.5`, `12.25`.
pub fn format_rate(rate: f64) -> String {
    let s = format!("{rate:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The most requests per second an open-loop level may ask for.
pub const MAX_RATE_PER_S: f64 = 1_000_000.0;

/// Host and port of an `http://host[:port][/]` target (port 80 when absent).
pub fn parse_target(url: &str) -> Result<(String, u16), PlanError> {
    let bad = || PlanError::Target(url.to_string());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if tail.is_empty() => 80,
            None => return Err(bad()),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
            None => (authority.to_string(), 80),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

/// Serialises a `Duration` as whole milliseconds.
mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_format_without_trailing_zeros() {
        assert_eq!(format_rate(2.0), "2");
        assert_eq!(format_rate(0.25), "0.25");
        assert_eq!(format_rate(12.5), "12.5");
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            parse_target("http://127.0.0.1:11434").unwrap(),
            ("127.0.0.1".into(), 11434)
        );
        assert_eq!(parse_target("http://box/").unwrap(), ("box".into(), 80));
        assert_eq!(
            parse_target("http://[::1]:8080").unwrap(),
            ("::1".into(), 8080)
        );
        assert!(parse_target("https://x").is_err());
        assert!(parse_target("http://:80").is_err());
        assert!(parse_target("http://h:notaport").is_err());
        assert!(parse_target("127.0.0.1:11434").is_err());
    }
}
