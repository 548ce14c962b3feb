//! Wire formats of the simulated server: Ollama's NDJSON (generate, chat) and OpenAI's SSE
//! (completions, chat), streaming and not, in the flavour of the server being imitated.

use crate::config::Flavor;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which endpoint a generation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    OllamaGenerate,
    OllamaChat,
    OpenAiCompletions,
    OpenAiChat,
}

impl Endpoint {
    /// NDJSON or SSE.
    pub fn is_sse(self) -> bool {
        matches!(self, Endpoint::OpenAiCompletions | Endpoint::OpenAiChat)
    }
}

/// Figures for the closing line or event.
#[derive(Debug, Clone, Copy)]
pub struct Closing {
    pub output_tokens: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub length_capped: bool,
    pub total: Duration,
    pub load: Duration,
    pub prefill: Duration,
    pub decode: Duration,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes one generation's events.
pub struct Writer {
    pub endpoint: Endpoint,
    pub flavor: Flavor,
    pub model: String,
    id: String,
    created: u64,
    include_usage: bool,
    sent_first: bool,
}

/// Escapes `<`, `>`, `&`, U+2028 and U+2029 as Go's encoding/json does (so `<think>` goes out
/// as `\u003cthink\u003e`, as on Ollama's wire). In serialized JSON these can only occur inside
/// strings, so a byte-level rewrite is exact.
fn go_escape(json: Vec<u8>) -> Vec<u8> {
    if !json.iter().any(|&b| matches!(b, b'<' | b'>' | b'&' | 0xE2)) {
        return json;
    }
    let mut out = Vec::with_capacity(json.len() + 16);
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            0xE2 if json.get(i + 1) == Some(&0x80)
                && matches!(json.get(i + 2), Some(0xA8 | 0xA9)) =>
            {
                out.extend_from_slice(if json[i + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn line(v: &Value) -> Vec<u8> {
    let mut b = go_escape(serde_json::to_vec(v).unwrap_or_default());
    b.push(b'\n');
    b
}

fn event(v: &Value) -> Vec<u8> {
    let mut b = b"data: ".to_vec();
    b.extend(go_escape(serde_json::to_vec(v).unwrap_or_default()));
    b.extend_from_slice(b"\n\n");
    b
}

impl Writer {
    /// A writer for one response; `index` makes ids (Ollama's are small numbers that collide).
    pub fn new(
        endpoint: Endpoint,
        flavor: Flavor,
        model: String,
        index: u64,
        include_usage: bool,
    ) -> Self {
        let id = match (flavor, endpoint) {
            (Flavor::Ollama, Endpoint::OpenAiCompletions) => format!("cmpl-{}", index % 999),
            (Flavor::Ollama, _) => format!("chatcmpl-{}", index % 999),
            (Flavor::LlamaCpp, _) => format!(
                "chatcmpl-{:032x}",
                index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ),
        };
        Self {
            endpoint,
            flavor,
            model,
            id,
            created: unix_s(),
            include_usage,
            sent_first: false,
        }
    }

    fn fingerprint(&self) -> &'static str {
        match self.flavor {
            Flavor::Ollama => "fp_ollama",
            Flavor::LlamaCpp => "b0-unknown",
        }
    }

    /// One token: answer text, or reasoning when `reasoning` (in the endpoint's reasoning field).
    pub fn token(&mut self, text: &str, reasoning: bool) -> Vec<u8> {
        let first = !self.sent_first;
        self.sent_first = true;
        match self.endpoint {
            Endpoint::OllamaGenerate => {
                let mut v = json!({"model": self.model, "created_at": now_rfc3339()});
                if reasoning {
                    v["response"] = json!("");
                    v["thinking"] = json!(text);
                } else {
                    v["response"] = json!(text);
                }
                v["done"] = json!(false);
                line(&v)
            }
            Endpoint::OllamaChat => {
                let mut msg =
                    json!({"role": "assistant", "content": if reasoning { "" } else { text }});
                if reasoning {
                    msg["thinking"] = json!(text);
                }
                line(
                    &json!({"model": self.model, "created_at": now_rfc3339(), "message": msg, "done": false}),
                )
            }
            Endpoint::OpenAiCompletions => match self.flavor {
                Flavor::Ollama => {
                    let mut v = json!({
                        "id": self.id, "object": "text_completion", "created": unix_s(),
                        "choices": [{"text": text, "index": 0, "finish_reason": null}],
                        "model": self.model, "system_fingerprint": self.fingerprint(),
                    });
                    // Ollama puts zero usage on every chunk when usage was asked for.
                    if self.include_usage {
                        v["usage"] =
                            json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0});
                    }
                    event(&v)
                }
                Flavor::LlamaCpp => event(&json!({
                    "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": null}],
                    "created": unix_s(), "model": self.model, "system_fingerprint": self.fingerprint(),
                    "object": "text_completion", "id": self.id,
                })),
            },
            Endpoint::OpenAiChat => {
                let field = match self.flavor {
                    Flavor::Ollama => "reasoning",
                    Flavor::LlamaCpp => "reasoning_content",
                };
                let mut delta = if reasoning {
                    json!({"content": "", field: text})
                } else {
                    json!({"content": text})
                };
                let mut out = Vec::new();
                match (self.flavor, first) {
                    (Flavor::Ollama, true) => delta["role"] = json!("assistant"),
                    // llama.cpp sends a role-only event together with the first content event.
                    (Flavor::LlamaCpp, true) => out.extend(
                        self.chat_chunk(json!({"role": "assistant", "content": null}), None),
                    ),
                    _ => {}
                }
                if self.flavor == Flavor::LlamaCpp && reasoning {
                    delta = json!({field: text});
                }
                out.extend(self.chat_chunk(delta, None));
                out
            }
        }
    }

    fn chat_chunk(&self, delta: Value, finish: Option<&str>) -> Vec<u8> {
        match self.flavor {
            Flavor::Ollama => event(&json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": self.fingerprint(),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            })),
            Flavor::LlamaCpp => event(&json!({
                "choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
                "created": unix_s(), "id": self.id, "model": self.model,
                "system_fingerprint": self.fingerprint(), "object": "chat.completion.chunk",
            })),
        }
    }

    fn usage(c: &Closing) -> Value {
        json!({
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.output_tokens,
            "total_tokens": c.prompt_tokens + c.output_tokens,
        })
    }

    fn llama_usage(c: &Closing) -> Value {
        let mut u = Self::usage(c);
        u["prompt_tokens_details"] = json!({"cached_tokens": c.cached_tokens});
        u
    }

    fn timings(c: &Closing) -> Value {
        let prompt_n = c.prompt_tokens - c.cached_tokens;
        let prompt_ms = c.prefill.as_secs_f64() * 1e3;
        let predicted_ms = c.decode.as_secs_f64() * 1e3;
        let per = |ms: f64, n: u64| if n > 0 { ms / n as f64 } else { 0.0 };
        json!({
            "cache_n": c.cached_tokens, "prompt_n": prompt_n, "prompt_ms": prompt_ms,
            "prompt_per_token_ms": per(prompt_ms, prompt_n),
            "prompt_per_second": if prompt_ms > 0.0 { prompt_n as f64 * 1e3 / prompt_ms } else { 0.0 },
            "predicted_n": c.output_tokens, "predicted_ms": predicted_ms,
            "predicted_per_token_ms": per(predicted_ms, c.output_tokens),
            "predicted_per_second": if predicted_ms > 0.0 { c.output_tokens as f64 * 1e3 / predicted_ms } else { 0.0 },
        })
    }

    fn finish_reason(c: &Closing) -> &'static str {
        if c.length_capped { "length" } else { "stop" }
    }

    fn ollama_metrics(c: &Closing, v: &mut Value) {
        v["done_reason"] = json!(Self::finish_reason(c));
        v["total_duration"] = json!(nanos(c.total));
        v["load_duration"] = json!(nanos(c.load).max(1));
        v["prompt_eval_count"] = json!(c.prompt_tokens);
        v["prompt_eval_duration"] = json!(nanos(c.prefill).max(1));
        v["eval_count"] = json!(c.output_tokens);
        v["eval_duration"] = json!(nanos(c.decode).max(1));
    }

    /// The closing events: Ollama's final line; OpenAI's finish (+ usage) events and `[DONE]`.
    pub fn closing(&mut self, c: &Closing) -> Vec<u8> {
        match self.endpoint {
            Endpoint::OllamaGenerate => {
                let mut v = json!({"model": self.model, "created_at": now_rfc3339(), "response": "", "done": true});
                Self::ollama_metrics(c, &mut v);
                v["context"] = json!([151_644, 3838, 374]);
                // Keep Ollama's field order: context before the durations.
                let mut o = serde_json::Map::new();
                for k in [
                    "model",
                    "created_at",
                    "response",
                    "done",
                    "done_reason",
                    "context",
                    "total_duration",
                    "load_duration",
                    "prompt_eval_count",
                    "prompt_eval_duration",
                    "eval_count",
                    "eval_duration",
                ] {
                    if let Some(x) = v.get(k) {
                        o.insert(k.to_string(), x.clone());
                    }
                }
                line(&Value::Object(o))
            }
            Endpoint::OllamaChat => {
                let mut v = json!({"model": self.model, "created_at": now_rfc3339(),
                                   "message": {"role": "assistant", "content": ""}, "done": true});
                Self::ollama_metrics(c, &mut v);
                line(&v)
            }
            Endpoint::OpenAiCompletions => {
                let mut out = match self.flavor {
                    Flavor::Ollama => event(&json!({
                        "id": self.id, "object": "text_completion", "created": unix_s(),
                        "choices": [{"text": "", "index": 0, "finish_reason": Self::finish_reason(c)}],
                        "model": self.model, "system_fingerprint": self.fingerprint(),
                    })),
                    // llama.cpp: usage and timings ride on the finish event, asked for or not.
                    Flavor::LlamaCpp => event(&json!({
                        "choices": [{"text": "", "index": 0, "logprobs": null, "finish_reason": Self::finish_reason(c)}],
                        "created": unix_s(), "model": self.model, "system_fingerprint": self.fingerprint(),
                        "object": "text_completion", "id": self.id,
                        "usage": Self::llama_usage(c), "timings": Self::timings(c),
                    })),
                };
                if self.include_usage && self.flavor == Flavor::Ollama {
                    out.extend(event(&json!({
                        "id": self.id, "object": "text_completion", "created": unix_s(), "choices": [],
                        "model": self.model, "system_fingerprint": self.fingerprint(), "usage": Self::usage(c),
                    })));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                out
            }
            Endpoint::OpenAiChat => {
                let mut out = self.chat_chunk(json!({}), Some(Self::finish_reason(c)));
                if self.flavor == Flavor::LlamaCpp && !self.include_usage {
                    // Without include_usage, llama.cpp puts timings on the finish event.
                    out = event(&json!({
                        "choices": [{"finish_reason": Self::finish_reason(c), "index": 0, "delta": {}}],
                        "created": unix_s(), "id": self.id, "model": self.model,
                        "system_fingerprint": self.fingerprint(), "object": "chat.completion.chunk",
                        "timings": Self::timings(c),
                    }));
                }
                if self.include_usage {
                    let mut u = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "system_fingerprint": self.fingerprint(), "choices": [],
                    });
                    match self.flavor {
                        Flavor::Ollama => u["usage"] = Self::usage(c),
                        Flavor::LlamaCpp => {
                            u["usage"] = Self::llama_usage(c);
                            u["timings"] = Self::timings(c);
                        }
                    }
                    out.extend(event(&u));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                out
            }
        }
    }

    /// A line (NDJSON) or event (SSE) that is not valid JSON, for the malformed-line fault.
    pub fn malformed(&self) -> Vec<u8> {
        if self.endpoint.is_sse() {
            b"data: {\"choices\": oops not json\n\n".to_vec()
        } else {
            b"{\"model\": oops not json\n".to_vec()
        }
    }

    /// The whole answer of a non-streaming request.
    pub fn whole(&self, answer: &str, reasoning: &str, c: &Closing) -> Value {
        match self.endpoint {
            Endpoint::OllamaGenerate => {
                let mut v =
                    json!({"model": self.model, "created_at": now_rfc3339(), "response": answer});
                if !reasoning.is_empty() {
                    v["thinking"] = json!(reasoning);
                }
                v["done"] = json!(true);
                Self::ollama_metrics(c, &mut v);
                v
            }
            Endpoint::OllamaChat => {
                let mut msg = json!({"role": "assistant", "content": answer});
                if !reasoning.is_empty() {
                    msg["thinking"] = json!(reasoning);
                }
                let mut v = json!({"model": self.model, "created_at": now_rfc3339(), "message": msg, "done": true});
                Self::ollama_metrics(c, &mut v);
                v
            }
            Endpoint::OpenAiCompletions => {
                let mut v = json!({
                    "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                    "system_fingerprint": self.fingerprint(),
                    "choices": [{"text": answer, "index": 0, "logprobs": null, "finish_reason": Self::finish_reason(c)}],
                    "usage": Self::usage(c),
                });
                if self.flavor == Flavor::LlamaCpp {
                    v["timings"] = Self::timings(c);
                }
                v
            }
            Endpoint::OpenAiChat => {
                let mut msg = json!({"role": "assistant", "content": answer});
                if !reasoning.is_empty() {
                    let field = if self.flavor == Flavor::Ollama {
                        "reasoning"
                    } else {
                        "reasoning_content"
                    };
                    msg[field] = json!(reasoning);
                }
                let mut v = json!({
                    "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                    "system_fingerprint": self.fingerprint(),
                    "choices": [{"index": 0, "message": msg, "finish_reason": Self::finish_reason(c)}],
                    "usage": Self::usage(c),
                });
                if self.flavor == Flavor::LlamaCpp {
                    v["timings"] = Self::timings(c);
                }
                v
            }
        }
    }
}

/// An error body in the shape the endpoint's clients expect.
pub fn error_body(endpoint: Endpoint, flavor: Flavor, status: u16, message: &str) -> Value {
    match (flavor, endpoint) {
        (Flavor::Ollama, Endpoint::OllamaGenerate | Endpoint::OllamaChat) => {
            json!({"error": message})
        }
        (Flavor::Ollama, _) => {
            let kind = match status {
                400 => "invalid_request_error",
                404 => "not_found_error",
                _ => "api_error",
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
        (Flavor::LlamaCpp, _) => {
            let kind = match status {
                400 => "invalid_request_error",
                404 => "not_found_error",
                503 => "unavailable_error",
                _ => "server_error",
            };
            json!({"error": {"code": status, "message": message, "type": kind}})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_escaping_and_field_order() {
        let mut w = Writer::new(
            Endpoint::OllamaGenerate,
            Flavor::Ollama,
            "m".into(),
            1,
            false,
        );
        let l = String::from_utf8(w.token("<think>a&b\u{2028}", false)).unwrap();
        assert!(
            l.contains(r#""response":"\u003cthink\u003ea\u0026b\u2028""#),
            "{l}"
        );
        assert!(
            l.starts_with(r#"{"model":"m","created_at":"#),
            "Ollama's field order: {l}"
        );
        assert!(l.ends_with("\"done\":false}\n"));
    }

    #[test]
    fn malformed_lines_follow_the_framing() {
        let sse = Writer::new(Endpoint::OpenAiChat, Flavor::Ollama, "m".into(), 1, false);
        assert!(sse.malformed().starts_with(b"data: "));
        let nd = Writer::new(Endpoint::OllamaChat, Flavor::Ollama, "m".into(), 1, false);
        assert!(nd.malformed().ends_with(b"\n") && !nd.malformed().starts_with(b"data"));
    }
}
