//! Inference-server backends: how to ask a server for a streamed generation, how to read the
//! stream it sends back, and how preflight tells what a server speaks and which models it has.
//! Each API family is one [`Backend`] in a file of its own; [`backend`] picks it by [`Api`].
//!
//! To add a backend:
//! 1. its variant(s) in `tokengun_common::Api` (common/src/plan.rs: `ALL`, `as_str`, `family`,
//!    `path`);
//! 2. its value in the wire enum `Api` of proto/proto/tokengun/v1/agent.proto, and both directions in
//!    proto/src/convert.rs (`api_to`, `api_from_wire`);
//! 3. one file here with a unit struct implementing [`Backend`]: the request body, a
//!    [`StreamParser`] (usually [`Framed`] over [`LineSplitter`] or [`sse::SseDecoder`] with a
//!    [`UnitParser`] for one line or event), and its [`Preflight`]; with parser tests on a
//!    recorded stream split at every byte (fixtures in agent/tests/fixtures);
//! 4. one line in [`backend`] mapping the new `Api` variant(s) to it;
//! 5. a simulator route that speaks it (simulator/src/wire.rs and the router in
//!    simulator/src/lib.rs);
//! 6. a scenario test against the simulator in tests/tests/scenario.rs.

pub mod ollama;
pub(crate) mod openai;
pub(crate) mod preflight;
pub(crate) mod sse;

pub(crate) use preflight::{Preflight, PreflightError, preflight};

use crate::ndjson::LineSplitter;
use serde_json::Value;
use std::marker::PhantomData;
use tokengun_common::{Api, CyclePlan, PromptSpec, ServerTimings};

/// One inference-server API family (chosen by [`backend`]): every way the agent's behaviour
/// differs from one server API to another.
pub(crate) trait Backend: Sync {
    /// The API's own JSON body for `prompt` (its fields, the plan's request options in the API's
    /// names); the plan's and the prompt's extra JSON are merged on top by [`request_body`].
    fn body(&self, plan: &CyclePlan, prompt: &PromptSpec) -> Value;

    /// A parser for one response's stream of `api` (one of this backend's variants).
    fn parser(&self, api: Api) -> Box<dyn StreamParser>;

    /// How preflight lists the server's models and reads its version.
    fn preflight(&self) -> &'static Preflight;

    /// Whether nothing follows the stream's done marker (SSE's `[DONE]`): reading stops there,
    /// and a done marker with no token and no finish reason before it is a server error.
    fn stops_at_done(&self) -> bool {
        false
    }
}

/// The backend that speaks `api`: the one registration of every backend.
pub(crate) fn backend(api: Api) -> &'static dyn Backend {
    match api {
        Api::OllamaGenerate | Api::OllamaChat => &ollama::Ollama,
        Api::OpenaiCompletions | Api::OpenaiChat => &openai::OpenAi,
    }
}

/// A parser for one response's stream of `api`.
pub(crate) fn parser(api: Api) -> Box<dyn StreamParser> {
    backend(api).parser(api)
}

/// Reads one response's stream, whatever the read boundaries. One call per read: the units of a
/// read are parsed in a loop dispatched statically.
pub(crate) trait StreamParser: Send {
    /// Feeds one read; appends what each unit (line, event) it completes said to `out`, in order.
    /// `Err` on a malformed unit; the units before it are in `out`.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Chunk>) -> Result<(), String>;

    /// Bytes of a unit the stream never finished.
    fn leftover(&self) -> usize;

    /// Keeps the answer text from here on (a conversation's next turn sends it back); off by
    /// default, so a plain request allocates nothing for it.
    fn keep_answer(&mut self);

    /// The answer text kept since [`StreamParser::keep_answer`].
    fn take_answer(&mut self) -> String;
}

/// How a stream is cut into units: NDJSON lines, SSE events.
pub(crate) trait Framing: Default + Send {
    /// Feeds one read; calls `on_unit` per unit it completes until it returns false.
    fn push(&mut self, bytes: &[u8], on_unit: impl FnMut(&[u8]) -> bool) -> Result<(), String>;

    /// Bytes of a unit not yet complete.
    fn pending(&self) -> usize;
}

impl Framing for LineSplitter {
    #[inline]
    fn push(&mut self, bytes: &[u8], on_unit: impl FnMut(&[u8]) -> bool) -> Result<(), String> {
        LineSplitter::push(self, bytes, on_unit)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn pending(&self) -> usize {
        self.remainder().len()
    }
}

impl Framing for sse::SseDecoder {
    #[inline]
    fn push(&mut self, bytes: &[u8], on_unit: impl FnMut(&[u8]) -> bool) -> Result<(), String> {
        sse::SseDecoder::push(self, bytes, on_unit)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn pending(&self) -> usize {
        sse::SseDecoder::pending(self)
    }
}

/// Reads what one unit of a backend's stream (an NDJSON line, an SSE event's data) says.
pub(crate) trait UnitParser: Send + 'static {
    /// Parses one unit of an `api` stream; `think` carries inline `<think>` state across units.
    fn parse(api: Api, unit: &[u8], think: &mut InlineThink) -> Result<Chunk, String>;
}

/// A stream framed by `F` whose units `P` reads: what each backend's [`StreamParser`] is.
pub(crate) struct Framed<F, P> {
    api: Api,
    framing: F,
    think: InlineThink,
    unit: PhantomData<fn() -> P>,
}

impl<F: Framing, P: UnitParser> Framed<F, P> {
    /// An empty parser for an `api` stream.
    pub(crate) fn new(api: Api) -> Self {
        Self {
            api,
            framing: F::default(),
            think: InlineThink::default(),
            unit: PhantomData,
        }
    }
}

impl<F: Framing, P: UnitParser> StreamParser for Framed<F, P> {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Chunk>) -> Result<(), String> {
        let (api, think) = (self.api, &mut self.think);
        let mut failure = None;
        self.framing
            .push(bytes, |unit| match P::parse(api, unit, think) {
                Ok(c) => {
                    out.push(c);
                    true
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            })?;
        failure.map_or(Ok(()), Err)
    }

    fn leftover(&self) -> usize {
        self.framing.pending()
    }

    fn keep_answer(&mut self) {
        self.think.kept.get_or_insert_with(String::new);
    }

    fn take_answer(&mut self) -> String {
        self.think.kept.take().unwrap_or_default()
    }
}

/// What one unit of a stream (an NDJSON line, an SSE event) said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    /// Content-bearing pieces of answer text (one per line or event that carried some).
    pub answer_tokens: u32,
    /// Content-bearing pieces of reasoning ("thinking").
    pub reasoning_tokens: u32,
    /// Bytes of multi-byte UTF-8 characters in those pieces: a server that holds back a token
    /// ending inside a character sends it with the next, so this unit may carry up to this many
    /// less one more tokens than it counts (see `tokengun_common::stats::place_server_tokens`).
    pub multibyte_bytes: u32,
    /// The server's closing figures, when this unit carried them.
    pub fin: Option<Box<Final>>,
    /// The server said the generation is complete (Ollama `done`, OpenAI `[DONE]`).
    pub done: bool,
    /// The server reported an error inside the stream.
    pub error: Option<String>,
}

impl Chunk {
    /// Counts one unit's text: reasoning from its own field, answer text unless it sits inside
    /// inline `<think>` tags (then it is reasoning too).
    pub fn count(
        &mut self,
        answer: Option<&str>,
        reasoning: Option<&str>,
        think: &mut InlineThink,
    ) {
        if let Some(text) = reasoning {
            self.reasoning_tokens += 1;
            self.multibyte_bytes += multibyte_bytes(text);
        }
        if let Some(text) = answer {
            self.multibyte_bytes += multibyte_bytes(text);
            if think.classify(text) {
                self.reasoning_tokens += 1;
            } else {
                self.answer_tokens += 1;
                if let Some(kept) = &mut think.kept {
                    kept.push_str(text);
                }
            }
        }
    }
}

/// Bytes of `text` that belong to multi-byte characters (all bytes of 0x80 and above).
fn multibyte_bytes(text: &str) -> u32 {
    let n = text.bytes().filter(|b| *b >= 0x80).count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The server's closing figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Final {
    /// Tokens the server says it generated.
    pub output_tokens: Option<u64>,
    pub prompt_tokens: Option<u64>,
    pub done_reason: String,
    pub timings: ServerTimings,
}

/// Merges `extra` into `base`: objects key by key, recursively; anything else replaces.
pub fn merge_json(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// The cap on generated tokens of a request for `prompt`: the prompt's own, else the plan's.
pub fn max_tokens(plan: &CyclePlan, prompt: &PromptSpec) -> Option<u32> {
    prompt.max_tokens.or(plan.options.max_tokens)
}

/// The chat messages for `prompt`: its own (a JSON array checked by [`request_body`]), else its
/// text as one user message.
pub fn chat_messages(prompt: &PromptSpec) -> Value {
    if !prompt.messages_json.is_empty() {
        if let Ok(m @ Value::Array(_)) = serde_json::from_str(&prompt.messages_json) {
            return m;
        }
    }
    serde_json::json!([{"role": "user", "content": prompt.text}])
}

/// The JSON body of a streamed request for `prompt`: the API's own fields, the plan's request
/// options in the API's names, then the plan's extra JSON, then the prompt's.
pub fn request_body(plan: &CyclePlan, prompt: &PromptSpec) -> Result<Vec<u8>, serde_json::Error> {
    if !prompt.messages_json.is_empty() {
        let m: Value = serde_json::from_str(&prompt.messages_json)?;
        if !m.is_array() {
            return Err(serde::de::Error::custom(
                "a prompt's messages must be a JSON array",
            ));
        }
    }
    let mut body = backend(plan.api).body(plan, prompt);
    for extra in [&plan.extra_body_json, &prompt.extra_body_json] {
        if !extra.trim().is_empty() {
            merge_json(&mut body, serde_json::from_str(extra)?);
        }
    }
    serde_json::to_vec(&body)
}

/// The error text of an error body, whatever the server: Ollama's `{"error": "..."}`, OpenAI's
/// and llama.cpp's `{"error": {"message": "..."}}`, or the body itself as text.
pub fn error_text(body: &[u8]) -> String {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let e = v.as_ref().and_then(|v| v.get("error"));
    match e {
        Some(Value::String(s)) => s.clone(),
        Some(o) => o
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| o.to_string(), str::to_string),
        None => String::from_utf8_lossy(body).trim().to_string(),
    }
}

/// Tracks inline `<think>...</think>` reasoning (Ollama before v0.9, some servers still): text
/// between the tags counts as reasoning.
#[derive(Debug, Default)]
pub struct InlineThink {
    inside: bool,
    /// The answer text so far, when a conversation keeps it.
    kept: Option<String>,
}

impl InlineThink {
    /// Classifies one piece of answer text: returns true when it is reasoning.
    pub fn classify(&mut self, text: &str) -> bool {
        if text.contains("<think>") {
            self.inside = true;
        }
        let reasoning = self.inside;
        if text.contains("</think>") {
            self.inside = false;
        }
        reasoning
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokengun_common::{Arrival, LoadShape, RequestOptions};

    fn plan(api: Api) -> CyclePlan {
        CyclePlan {
            target_urls: Vec::new(),
            target_policy: Default::default(),
            pinned_target: None,
            target_offset: 0,
            cycle_id: 1,
            shape: LoadShape::Burst,
            concurrency: 1,
            rate_per_s: 0.0,
            arrival: Arrival::Poisson,
            duration: std::time::Duration::ZERO,
            seed: 0,
            target_url: "http://127.0.0.1:1".into(),
            api,
            model: "m".into(),
            prompts: vec![],
            request_timeout: std::time::Duration::from_secs(1),
            options: RequestOptions {
                max_tokens: Some(8),
                temperature: Some(0.0),
                ..Default::default()
            },
            extra_body_json: r#"{"options":{"top_k":5}}"#.into(),
            workload: Default::default(),
        }
    }

    #[test]
    fn bodies_map_options_to_each_api() {
        let prompt = PromptSpec {
            text: "p".into(),
            max_tokens: Some(4),
            extra_body_json: r#"{"keep_alive":"1m"}"#.into(),
            ..PromptSpec::plain("p")
        };
        let v: Value =
            serde_json::from_slice(&request_body(&plan(Api::OllamaGenerate), &prompt).unwrap())
                .unwrap();
        assert_eq!(v["options"]["num_predict"], 4, "the prompt's cap wins");
        assert_eq!(v["options"]["temperature"], 0.0);
        assert_eq!(v["options"]["top_k"], 5, "extra JSON merges key by key");
        assert_eq!(v["keep_alive"], "1m");
        assert_eq!(v["prompt"], "p");
        let v: Value =
            serde_json::from_slice(&request_body(&plan(Api::OllamaChat), &prompt).unwrap())
                .unwrap();
        assert_eq!(v["messages"][0]["content"], "p");
        let v: Value =
            serde_json::from_slice(&request_body(&plan(Api::OpenaiChat), &prompt).unwrap())
                .unwrap();
        assert_eq!(v["max_tokens"], 4);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["messages"][0]["role"], "user");
        let v: Value =
            serde_json::from_slice(&request_body(&plan(Api::OpenaiCompletions), &prompt).unwrap())
                .unwrap();
        assert_eq!(v["prompt"], "p");
        assert_eq!(v["stream"], true);
    }

    #[test]
    fn a_prompts_own_messages_go_to_chat_apis_and_forced_outputs_ask_for_their_length() {
        let prompt = PromptSpec {
            messages_json: r#"[{"role":"system","content":"s"},{"role":"user","content":"q"}]"#
                .into(),
            max_tokens: Some(9),
            force_output: true,
            ..PromptSpec::plain("s\n\nq")
        };
        for api in [Api::OllamaChat, Api::OpenaiChat] {
            let v: Value =
                serde_json::from_slice(&request_body(&plan(api), &prompt).unwrap()).unwrap();
            assert_eq!(v["messages"][0]["role"], "system", "{api:?}");
            assert_eq!(v["messages"][1]["content"], "q", "{api:?}");
        }
        let v: Value =
            serde_json::from_slice(&request_body(&plan(Api::OpenaiCompletions), &prompt).unwrap())
                .unwrap();
        assert_eq!(v["prompt"], "s\n\nq");
        assert_eq!(v["ignore_eos"], true);
        assert_eq!(v["min_tokens"], 9);
        let bad = PromptSpec {
            messages_json: r#"{"role":"user"}"#.into(),
            ..PromptSpec::plain("q")
        };
        assert!(request_body(&plan(Api::OpenaiChat), &bad).is_err());
    }

    #[test]
    fn every_api_has_a_backend_that_speaks_it() {
        for api in Api::ALL {
            let b = backend(api);
            let p = b.parser(api);
            assert_eq!(p.leftover(), 0, "{api:?}");
            assert!(b.preflight().models_path.starts_with('/'), "{api:?}");
        }
        assert!(backend(Api::OpenaiChat).stops_at_done());
        assert!(!backend(Api::OllamaGenerate).stops_at_done());
    }

    #[test]
    fn error_bodies_of_every_server() {
        assert_eq!(
            error_text(br#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(
            error_text(br#"{"error":{"message":"model 'x' not found","type":"not_found_error"}}"#),
            "model 'x' not found"
        );
        assert_eq!(error_text(b"404 page not found\n"), "404 page not found");
    }

    #[test]
    fn inline_think_tags() {
        let mut t = InlineThink::default();
        assert!(!t.classify("Hello"));
        assert!(t.classify("<think>"));
        assert!(t.classify("hmm"));
        assert!(t.classify("</think>"));
        assert!(!t.classify("Answer"));
    }
}
