//! Inference-server backends: how to ask for a streamed generation and how to read its stream.
//!
//! To add a backend: a variant in `tokengun_common::Api`, its wire enum in the proto, a module
//! here with a body builder and a parser returning [`Chunk`]s, a branch in [`request_body`] and
//! [`ResponseParser`], a simulator route, and a scenario test.

pub mod ollama;
pub mod openai;
pub mod sse;

use crate::ndjson::LineSplitter;
use serde_json::{Value, json};
use tokengun_common::{Api, CyclePlan, PromptSpec, ServerTimings};

/// What one unit of a stream (an NDJSON line, an SSE event) said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    /// Content-bearing pieces of answer text (one per line or event that carried some).
    pub answer_tokens: u32,
    /// Content-bearing pieces of reasoning ("thinking").
    pub reasoning_tokens: u32,
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
        if reasoning.is_some() {
            self.reasoning_tokens += 1;
        }
        if let Some(text) = answer {
            if think.classify(text) {
                self.reasoning_tokens += 1;
            } else {
                self.answer_tokens += 1;
            }
        }
    }
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

/// The JSON body of a streamed request for `prompt`: the API's own fields, the plan's request
/// options in the API's names, then the plan's extra JSON, then the prompt's.
pub fn request_body(plan: &CyclePlan, prompt: &PromptSpec) -> Result<Vec<u8>, serde_json::Error> {
    let o = &plan.options;
    let max_tokens = prompt.max_tokens.or(o.max_tokens);
    let mut body = match plan.api {
        Api::OllamaGenerate | Api::OllamaChat => {
            let mut b = match plan.api {
                Api::OllamaChat => {
                    json!({"model": plan.model, "messages": [{"role": "user", "content": prompt.text}], "stream": true})
                }
                _ => json!({"model": plan.model, "prompt": prompt.text, "stream": true}),
            };
            let mut options = serde_json::Map::new();
            if let Some(n) = max_tokens {
                options.insert("num_predict".into(), n.into());
            }
            if let Some(t) = o.temperature {
                options.insert("temperature".into(), t.into());
            }
            if let Some(s) = o.seed {
                options.insert("seed".into(), s.into());
            }
            if !o.stop.is_empty() {
                options.insert("stop".into(), o.stop.clone().into());
            }
            if !options.is_empty() {
                b["options"] = Value::Object(options);
            }
            if let Some(k) = &o.keep_alive {
                b["keep_alive"] = json!(k);
            }
            b
        }
        Api::OpenaiCompletions | Api::OpenaiChat => {
            let mut b = match plan.api {
                Api::OpenaiChat => {
                    json!({"model": plan.model, "messages": [{"role": "user", "content": prompt.text}]})
                }
                _ => json!({"model": plan.model, "prompt": prompt.text}),
            };
            b["stream"] = json!(true);
            // Ask for the server's own token count (vLLM, Ollama, llama.cpp all honour it).
            b["stream_options"] = json!({"include_usage": true});
            if let Some(n) = max_tokens {
                b["max_tokens"] = json!(n);
            }
            if let Some(t) = o.temperature {
                b["temperature"] = json!(t);
            }
            if let Some(s) = o.seed {
                b["seed"] = json!(s);
            }
            if !o.stop.is_empty() {
                b["stop"] = json!(o.stop);
            }
            b
        }
    };
    for extra in [&plan.extra_body_json, &prompt.extra_body_json] {
        if !extra.trim().is_empty() {
            merge_json(&mut body, serde_json::from_str(extra)?);
        }
    }
    serde_json::to_vec(&body)
}

/// Tracks inline `<think>...</think>` reasoning (Ollama before v0.9, some servers still): text
/// between the tags counts as reasoning.
#[derive(Debug, Default)]
pub struct InlineThink {
    inside: bool,
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

/// Reads one response's stream, whatever the read boundaries.
pub enum ResponseParser {
    Ndjson {
        api: Api,
        lines: LineSplitter,
        think: InlineThink,
    },
    Sse {
        api: Api,
        events: sse::SseDecoder,
        think: InlineThink,
    },
}

impl ResponseParser {
    /// A parser for `api`'s streaming framing.
    pub fn new(api: Api) -> Self {
        match api {
            Api::OllamaGenerate | Api::OllamaChat => Self::Ndjson {
                api,
                lines: LineSplitter::new(),
                think: InlineThink::default(),
            },
            Api::OpenaiCompletions | Api::OpenaiChat => Self::Sse {
                api,
                events: sse::SseDecoder::new(),
                think: InlineThink::default(),
            },
        }
    }

    /// Feeds one read; calls `on_chunk` per line/event (in order) until it returns false.
    /// Returns `Ok(false)` if stopped early, `Err` on a malformed unit.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        mut on_chunk: impl FnMut(Chunk) -> bool,
    ) -> Result<bool, String> {
        let mut failure = None;
        let more = match self {
            Self::Ndjson { api, lines, think } => lines
                .push(bytes, |line| match ollama::parse_line(*api, line, think) {
                    Ok(c) => on_chunk(c),
                    Err(e) => {
                        failure = Some(e);
                        false
                    }
                })
                .map_err(|e| e.to_string())?,
            Self::Sse { api, events, think } => events
                .push(bytes, |data| match openai::parse_event(*api, data, think) {
                    Ok(c) => on_chunk(c),
                    Err(e) => {
                        failure = Some(e);
                        false
                    }
                })
                .map_err(|e| e.to_string())?,
        };
        match failure {
            Some(e) => Err(e),
            None => Ok(more),
        }
    }

    /// Bytes of a unit the stream never finished.
    pub fn leftover(&self) -> usize {
        match self {
            Self::Ndjson { lines, .. } => lines.remainder().len(),
            Self::Sse { events, .. } => events.pending(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokengun_common::{Arrival, LoadShape, RequestOptions};

    fn plan(api: Api) -> CyclePlan {
        CyclePlan {
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
        }
    }

    #[test]
    fn bodies_map_options_to_each_api() {
        let prompt = PromptSpec {
            text: "p".into(),
            max_tokens: Some(4),
            extra_body_json: r#"{"keep_alive":"1m"}"#.into(),
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
    fn inline_think_tags() {
        let mut t = InlineThink::default();
        assert!(!t.classify("Hello"));
        assert!(t.classify("<think>"));
        assert!(t.classify("hmm"));
        assert!(t.classify("</think>"));
        assert!(!t.classify("Answer"));
    }
}
