//! Ollama's native API: the `/api/generate` and `/api/chat` request bodies, their NDJSON line
//! parsing, and the preflight probes (`/api/tags`, `/api/version`).

use super::{Backend, Chunk, Final, Framed, InlineThink, Preflight, StreamParser, UnitParser};
use crate::ndjson::LineSplitter;
use serde::Deserialize;
use serde_json::{Value, json};
use std::borrow::Cow;
use tokengun_common::{Api, CyclePlan, PromptSpec, ServerTimings};

/// Ollama's native API (`ollama-generate`, `ollama-chat`).
pub struct Ollama;

/// Ollama lists its models at `/api/tags` and says its version at `/api/version`, which is also
/// how a server of unknown API is recognised as Ollama.
static PREFLIGHT: Preflight = Preflight {
    server: "an Ollama server",
    models_path: "/api/tags",
    parse_models: parse_tags,
    mismatch: |url, base, e| {
        format!(
            "{url} did not answer as Ollama does ({e}); is {base} an Ollama server? pass --api to say which API it speaks"
        )
    },
    version_paths: &["/api/version"],
    recognised_at: Some("/api/version"),
};

impl Backend for Ollama {
    fn body(&self, plan: &CyclePlan, prompt: &PromptSpec) -> Value {
        let o = &plan.options;
        let mut b = match plan.api {
            Api::OllamaChat => {
                json!({"model": plan.model, "messages": super::chat_messages(prompt), "stream": true})
            }
            _ => json!({"model": plan.model, "prompt": prompt.text, "stream": true}),
        };
        let mut options = serde_json::Map::new();
        if let Some(n) = super::max_tokens(plan, prompt) {
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

    fn parser(&self, api: Api) -> Box<dyn StreamParser> {
        Box::new(Framed::<LineSplitter, Ollama>::new(api))
    }

    fn preflight(&self) -> &'static Preflight {
        &PREFLIGHT
    }
}

impl UnitParser for Ollama {
    #[inline]
    fn parse(api: Api, unit: &[u8], think: &mut InlineThink) -> Result<Chunk, String> {
        parse_line(api, unit, think)
    }
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    response: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Message<'a>>,
    #[serde(default)]
    done: bool,
    #[serde(borrow, default)]
    done_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
    eval_count: Option<u64>,
    prompt_eval_count: Option<u64>,
    total_duration: Option<u64>,
    load_duration: Option<u64>,
    prompt_eval_duration: Option<u64>,
    eval_duration: Option<u64>,
}

fn non_empty<'a>(s: &'a Option<Cow<'a, str>>) -> Option<&'a str> {
    s.as_deref().filter(|t| !t.is_empty())
}

/// Parses one NDJSON line of a `/api/generate` or `/api/chat` stream.
///
/// A line with non-empty answer text (`response`, `message.content`) or reasoning (`thinking`,
/// `message.thinking`, or text inside inline `<think>` tags) carries one token of that kind
/// (Ollama flushes per token; the final `eval_count` is the authoritative count).
pub fn parse_line(api: Api, line: &[u8], think: &mut InlineThink) -> Result<Chunk, String> {
    let l: Line<'_> = serde_json::from_slice(line).map_err(|e| {
        let shown = String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned();
        format!("malformed stream line ({e}): {shown}")
    })?;
    let mut c = Chunk::default();
    if let Some(err) = l.error {
        c.error = Some(err.into_owned());
        return Ok(c);
    }
    let (answer, reasoning) = match (api, &l.message) {
        (Api::OllamaChat, Some(m)) => (non_empty(&m.content), non_empty(&m.thinking)),
        _ => (non_empty(&l.response), non_empty(&l.thinking)),
    };
    c.count(answer, reasoning, think);
    if l.done {
        c.done = true;
        c.fin = Some(Box::new(Final {
            output_tokens: l.eval_count,
            prompt_tokens: l.prompt_eval_count,
            done_reason: l.done_reason.map(Cow::into_owned).unwrap_or_default(),
            timings: ServerTimings {
                total_ns: l.total_duration,
                load_ns: l.load_duration,
                prompt_eval_ns: l.prompt_eval_duration,
                eval_ns: l.eval_duration,
                // Ollama counts only the prompt tokens it evaluated (a cached prefix is left out).
                prompt_eval_tokens: l.prompt_eval_count,
                ..Default::default()
            },
        }));
    }
    Ok(c)
}

/// The model names in a `/api/tags` reply.
pub fn parse_tags(body: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Tags {
        models: Vec<Model>,
    }
    #[derive(Deserialize)]
    struct Model {
        name: String,
    }
    let t: Tags = serde_json::from_slice(body)?;
    Ok(t.models.into_iter().map(|m| m.name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ndjson::LineSplitter;

    // Lines as Ollama v0.32 writes them (shared/reference/server-apis.md §1.5).
    const STREAM: &str = concat!(
        "{\"model\":\"deepseek-r1:7b\",\"created_at\":\"2026-08-21T18:00:01.10234Z\",\"response\":\"\",\"thinking\":\"Okay\",\"done\":false}\n",
        "{\"model\":\"deepseek-r1:7b\",\"created_at\":\"2026-08-21T18:00:02.1Z\",\"response\":\"\",\"done\":false}\n",
        "{\"model\":\"deepseek-r1:7b\",\"created_at\":\"2026-08-21T18:00:03.5567Z\",\"response\":\"Blue\",\"done\":false}\n",
        "{\"model\":\"deepseek-r1:7b\",\"created_at\":\"2026-08-21T18:00:09.9Z\",\"response\":\"\",\"done\":true,\"done_reason\":\"stop\",\"context\":[151644,3838],\"total_duration\":10706818083,\"load_duration\":6338219291,\"prompt_eval_count\":26,\"prompt_eval_duration\":130079000,\"eval_count\":259,\"eval_duration\":4232710000}\n",
    );

    fn parse_all(api: Api, chunks: &[&[u8]]) -> Vec<Chunk> {
        let mut s = LineSplitter::default();
        let mut think = InlineThink::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| {
                out.push(parse_line(api, l, &mut think).unwrap());
                true
            })
            .unwrap();
        }
        out
    }

    #[test]
    fn parses_thinking_answer_and_final_line() {
        let ev = parse_all(Api::OllamaGenerate, &[STREAM.as_bytes()]);
        assert_eq!((ev[0].reasoning_tokens, ev[0].answer_tokens), (1, 0));
        assert_eq!((ev[1].reasoning_tokens, ev[1].answer_tokens), (0, 0));
        assert_eq!((ev[2].reasoning_tokens, ev[2].answer_tokens), (0, 1));
        assert!(ev[3].done);
        let f = ev[3].fin.as_ref().unwrap();
        assert_eq!(f.output_tokens, Some(259));
        assert_eq!(f.prompt_tokens, Some(26));
        assert_eq!(f.done_reason, "stop");
        assert_eq!(f.timings.eval_ns, Some(4_232_710_000));
    }

    #[test]
    fn every_byte_boundary_gives_the_same_events() {
        let bytes = STREAM.as_bytes();
        let whole = parse_all(Api::OllamaGenerate, &[bytes]);
        for i in 0..=bytes.len() {
            assert_eq!(
                parse_all(Api::OllamaGenerate, &[&bytes[..i], &bytes[i..]]),
                whole,
                "split at {i}"
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_all(Api::OllamaGenerate, &singles), whole);
    }

    #[test]
    fn chat_lines_and_inline_think() {
        let chat = concat!(
            "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"Hm\"},\"done\":false}\n",
            "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"The\"},\"done\":false}\n",
        );
        let ev = parse_all(Api::OllamaChat, &[chat.as_bytes()]);
        assert_eq!((ev[0].reasoning_tokens, ev[1].answer_tokens), (1, 1));
        // Ollama before v0.9: <think> inline in `response`, escaped by Go's JSON encoder.
        let old = concat!(
            "{\"response\":\"\\u003cthink\\u003e\",\"done\":false}\n",
            "{\"response\":\"Hmm\",\"done\":false}\n",
            "{\"response\":\"\\u003c/think\\u003e\",\"done\":false}\n",
            "{\"response\":\"Blue\",\"done\":false}\n",
        );
        let ev = parse_all(Api::OllamaGenerate, &[old.as_bytes()]);
        let kinds: Vec<(u32, u32)> = ev
            .iter()
            .map(|c| (c.reasoning_tokens, c.answer_tokens))
            .collect();
        assert_eq!(kinds, vec![(1, 0), (1, 0), (1, 0), (0, 1)]);
    }

    #[test]
    fn errors_and_junk() {
        let mut t = InlineThink::default();
        let c = parse_line(
            Api::OllamaGenerate,
            br#"{"error":"an error was encountered while running the model"}"#,
            &mut t,
        )
        .unwrap();
        assert_eq!(
            c.error.as_deref(),
            Some("an error was encountered while running the model")
        );
        assert!(
            parse_line(Api::OllamaGenerate, b"{\"model\": oops", &mut t)
                .unwrap_err()
                .contains("malformed")
        );
    }

    #[test]
    fn tags_and_models() {
        let tags = br#"{"models":[{"name":"deepseek-r1:7b","model":"deepseek-r1:7b"},{"name":"llama3.2:latest"}]}"#;
        assert_eq!(
            parse_tags(tags).unwrap(),
            ["deepseek-r1:7b", "llama3.2:latest"]
        );
    }
}
