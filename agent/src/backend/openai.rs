//! OpenAI-style streaming (`/v1/completions`, `/v1/chat/completions`): the request bodies, one
//! SSE event's JSON as vLLM, llama.cpp, TGI, SGLang, LM Studio and Ollama's `/v1` send it, and
//! the preflight's `/v1/models`.

use super::sse::SseDecoder;
use super::{Backend, Chunk, Final, Framed, InlineThink, Preflight, StreamParser, UnitParser};
use serde::Deserialize;
use serde_json::{Value, json};
use std::borrow::Cow;
use tokengun_common::{Api, CyclePlan, PromptSpec};

/// OpenAI-compatible servers (`openai-completions`, `openai-chat`).
pub struct OpenAi;

/// `/v1/models` lists the models; vLLM says its version at `/version`, Ollama's `/v1` sits
/// beside `/api/version`.
static PREFLIGHT: Preflight = Preflight {
    server: "an OpenAI-compatible server",
    models_path: "/v1/models",
    parse_models,
    mismatch: |url, base, e| {
        format!(
            "{url} did not answer as OpenAI-compatible servers do ({e}); pass --api to say which API {base} speaks"
        )
    },
    version_paths: &["/version", "/api/version"],
    recognised_at: None,
};

impl Backend for OpenAi {
    fn body(&self, plan: &CyclePlan, prompt: &PromptSpec) -> Value {
        let o = &plan.options;
        let mut b = match plan.api {
            Api::OpenaiChat => {
                json!({"model": plan.model, "messages": super::chat_messages(prompt)})
            }
            _ => json!({"model": plan.model, "prompt": prompt.text}),
        };
        b["stream"] = json!(true);
        // Ask for the server's own token count (vLLM, Ollama, llama.cpp all honour it).
        b["stream_options"] = json!({"include_usage": true});
        if let Some(n) = super::max_tokens(plan, prompt) {
            b["max_tokens"] = json!(n);
            if prompt.force_output {
                // vLLM honours both; llama.cpp and SGLang ignore_eos; others ignore them.
                b["ignore_eos"] = json!(true);
                b["min_tokens"] = json!(n);
            }
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

    fn parser(&self, api: Api) -> Box<dyn StreamParser> {
        Box::new(Framed::<SseDecoder, OpenAi>::new(api))
    }

    fn preflight(&self) -> &'static Preflight {
        &PREFLIGHT
    }

    fn stops_at_done(&self) -> bool {
        true
    }
}

impl UnitParser for OpenAi {
    #[inline]
    fn parse(api: Api, unit: &[u8], think: &mut InlineThink) -> Result<Chunk, String> {
        parse_event(api, unit, think)
    }
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    /// Ollama's `/v1` reasoning field.
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
    /// llama.cpp's (and vLLM's) reasoning field.
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Usage {
    completion_tokens: Option<u64>,
    prompt_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    reasoning_tokens: Option<u64>,
}

/// llama.cpp's own account, on the last JSON event of every stream (milliseconds).
#[derive(Deserialize)]
struct Timings {
    cache_n: Option<u64>,
    prompt_n: Option<u64>,
    prompt_ms: Option<f64>,
    predicted_n: Option<u64>,
    predicted_ms: Option<f64>,
}

/// Milliseconds (llama.cpp's float) to whole nanoseconds; a negative or absurd value is dropped.
fn ms_to_ns(ms: Option<f64>) -> Option<u64> {
    ms.filter(|m| m.is_finite() && *m >= 0.0 && *m < 1e12)
        .map(|m| (m * 1e6).round() as u64)
}

#[derive(Deserialize)]
struct Event<'a> {
    /// Only the first choice counts (tokengun asks for one); kept without a `Vec` per event.
    #[serde(borrow, default, deserialize_with = "first_choice")]
    choices: Option<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    timings: Option<Timings>,
    /// `{"message": ...}` (OpenAI, llama.cpp) or a plain string (TGI).
    #[serde(default)]
    error: Option<serde_json::Value>,
    /// Old vLLM sends errors as `{"object": "error", "message": ...}`.
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// The first element of the `choices` array, the rest skipped, with no allocation.
fn first_choice<'de, D>(d: D) -> Result<Option<Choice<'de>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct First;
    impl<'de> serde::de::Visitor<'de> for First {
        type Value = Option<Choice<'de>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of choices")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<Choice<'de>>()?;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(first)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None) // "choices": null
        }
    }
    d.deserialize_any(First)
}

fn non_empty<'a>(s: &'a Option<Cow<'a, str>>) -> Option<&'a str> {
    s.as_deref().filter(|t| !t.is_empty())
}

/// Parses one SSE event's data. `[DONE]` ends the generation; an event with a non-empty text or
/// delta carries one token (answer or reasoning); `usage` gives the server's counts.
pub fn parse_event(api: Api, data: &[u8], think: &mut InlineThink) -> Result<Chunk, String> {
    let mut c = Chunk::default();
    if data.starts_with(b"[DONE]") {
        c.done = true;
        return Ok(c);
    }
    let e: Event<'_> = serde_json::from_slice(data).map_err(|err| {
        let shown = String::from_utf8_lossy(&data[..data.len().min(120)]).into_owned();
        format!("malformed SSE event ({err}): {shown}")
    })?;
    let error = match (&e.error, e.object.as_deref()) {
        (Some(serde_json::Value::String(s)), _) => Some(s.clone()),
        (Some(v), _) if !v.is_null() => Some(
            v.get("message")
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| v.to_string(), str::to_string),
        ),
        (_, Some("error")) => Some(e.message.as_deref().unwrap_or("error").to_string()),
        _ => None,
    };
    if let Some(msg) = error {
        c.error = Some(if msg.is_empty() {
            "an error occurred during streaming".to_string()
        } else {
            msg
        });
        return Ok(c);
    }
    let mut fin: Option<Final> = None;
    // Never index choices[0] blindly: usage events have none.
    if let Some(choice) = &e.choices {
        let (answer, reasoning) = match (api, &choice.delta) {
            (Api::OpenaiChat, Some(d)) => (
                non_empty(&d.content),
                non_empty(&d.reasoning).or(non_empty(&d.reasoning_content)),
            ),
            _ => (non_empty(&choice.text), None),
        };
        c.count(answer, reasoning, think);
        if let Some(reason) = &choice.finish_reason {
            fin.get_or_insert_with(Final::default).done_reason = reason.to_string();
        }
    }
    if let Some(t) = e.timings {
        let f = fin.get_or_insert_with(Final::default);
        f.timings.prompt_eval_ns = ms_to_ns(t.prompt_ms);
        f.timings.eval_ns = ms_to_ns(t.predicted_ms);
        f.timings.prompt_eval_tokens = t.prompt_n;
        f.timings.cached_tokens = t.cache_n;
        // The server's count when it sent no usage (llama.cpp chat without include_usage).
        f.output_tokens = t.predicted_n;
    }
    if let Some(u) = e.usage {
        // Ollama's /v1/completions puts zero usage on every chunk; only real counts count.
        if u.completion_tokens.unwrap_or(0) > 0 || u.prompt_tokens.unwrap_or(0) > 0 {
            let f = fin.get_or_insert_with(Final::default);
            f.output_tokens = u.completion_tokens.or(f.output_tokens);
            f.prompt_tokens = u.prompt_tokens;
            if let Some(n) = u.prompt_tokens_details.and_then(|d| d.cached_tokens) {
                f.timings.cached_tokens = Some(n);
            }
            f.timings.reasoning_tokens =
                u.completion_tokens_details.and_then(|d| d.reasoning_tokens);
        }
    }
    c.fin = fin.map(Box::new);
    Ok(c)
}

/// The model ids in a `/v1/models` reply.
pub fn parse_models(body: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    #[derive(Deserialize)]
    struct List {
        data: Option<Vec<Model>>,
    }
    #[derive(Deserialize)]
    struct Model {
        id: String,
    }
    let l: List = serde_json::from_slice(body)?;
    Ok(l.data
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::parser;
    use tokengun_common::ServerTimings;

    /// The body of a recorded HTTP/1.1 response, chunked encoding undone.
    fn capture_body(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/llama-server")
            .join(name);
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let (head, mut rest) = (&raw[..split], &raw[split + 4..]);
        if !String::from_utf8_lossy(head)
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return rest.to_vec();
        }
        let mut body = Vec::new();
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .unwrap();
            rest = &rest[nl + 2..];
            if size == 0 {
                return body;
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    }

    fn run(api: Api, chunks: &[&[u8]]) -> Vec<Chunk> {
        let mut p = parser(api);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        assert_eq!(p.leftover(), 0);
        out
    }

    fn totals(chunks: &[Chunk]) -> (u32, u32, Option<u64>, bool) {
        let answer = chunks.iter().map(|c| c.answer_tokens).sum();
        let reasoning = chunks.iter().map(|c| c.reasoning_tokens).sum();
        let usage = chunks
            .iter()
            .rev()
            .find_map(|c| c.fin.as_ref().and_then(|f| f.output_tokens));
        (
            answer,
            reasoning,
            usage,
            chunks.last().is_some_and(|c| c.done),
        )
    }

    #[test]
    fn real_llama_server_captures_parse_at_every_split() {
        for (name, api, answer, usage) in [
            (
                "completions-stream-usage.http",
                Api::OpenaiCompletions,
                16,
                Some(16),
            ),
            (
                "completions-stream-no-usage.http",
                Api::OpenaiCompletions,
                16,
                Some(16),
            ),
            ("chat-stream-usage.http", Api::OpenaiChat, 9, Some(10)),
            (
                "chat-stream-usage-length.http",
                Api::OpenaiChat,
                16,
                Some(16),
            ),
            // No usage: the server's count comes from `timings.predicted_n`.
            ("chat-stream-no-usage.http", Api::OpenaiChat, 9, Some(10)),
        ] {
            let body = capture_body(name);
            let whole = run(api, &[&body]);
            let (a, r, u, done) = totals(&whole);
            assert_eq!((a, r, u, done), (answer, 0, usage, true), "{name}");
            for i in 0..=body.len() {
                assert_eq!(
                    run(api, &[&body[..i], &body[i..]]),
                    whole,
                    "{name} split at {i}"
                );
            }
        }
    }

    /// The server's account over a whole stream, merged as the engine merges it.
    fn account(chunks: &[Chunk]) -> (Option<u64>, Option<u64>, ServerTimings) {
        let mut t = ServerTimings::default();
        let (mut out, mut prompt) = (None, None);
        for f in chunks.iter().filter_map(|c| c.fin.as_ref()) {
            t.fill_from(&f.timings);
            out = f.output_tokens.or(out);
            prompt = f.prompt_tokens.or(prompt);
        }
        (out, prompt, t)
    }

    #[test]
    fn llama_server_timings_and_usage_details_are_captured() {
        let whole = run(
            Api::OpenaiCompletions,
            &[&capture_body("completions-stream-usage.http")],
        );
        let (out, prompt, t) = account(&whole);
        assert_eq!((out, prompt), (Some(16), Some(4)));
        assert_eq!(t.prompt_eval_ns, Some(19_095_000));
        assert_eq!(t.eval_ns, Some(139_192_000));
        assert_eq!((t.prompt_eval_tokens, t.cached_tokens), (Some(4), Some(0)));
        assert_eq!(
            (t.total_ns, t.load_ns, t.reasoning_tokens),
            (None, None, None)
        );

        // Usage and timings ride on the `choices: []` event after the finish event.
        let whole = run(Api::OpenaiChat, &[&capture_body("chat-stream-usage.http")]);
        let (out, prompt, t) = account(&whole);
        assert_eq!((out, prompt), (Some(10), Some(37)));
        assert_eq!(
            (t.prompt_eval_ns, t.eval_ns),
            (Some(128_153_000), Some(88_072_000))
        );

        // No usage: timings on the finish event; 36 of 37 prompt tokens came from the cache.
        let whole = run(
            Api::OpenaiChat,
            &[&capture_body("chat-stream-no-usage.http")],
        );
        let (out, prompt, t) = account(&whole);
        assert_eq!((out, prompt), (Some(10), None));
        assert_eq!((t.prompt_eval_tokens, t.cached_tokens), (Some(1), Some(36)));
        assert_eq!(t.eval_ns, Some(79_709_000));
    }

    #[test]
    fn openai_usage_details_give_cached_and_reasoning_tokens() {
        let mut think = InlineThink::default();
        let c = parse_event(
            Api::OpenaiChat,
            br#"{"choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":1920},"completion_tokens_details":{"reasoning_tokens":256}}}"#,
            &mut think,
        )
        .unwrap();
        let f = c.fin.unwrap();
        assert_eq!((f.output_tokens, f.prompt_tokens), (Some(300), Some(2006)));
        assert_eq!(f.timings.cached_tokens, Some(1920));
        assert_eq!(f.timings.reasoning_tokens, Some(256));
        // A negative or non-finite duration is dropped, never wrapped.
        assert_eq!(ms_to_ns(Some(-1.0)), None);
        assert_eq!(ms_to_ns(Some(f64::NAN)), None);
        assert_eq!(ms_to_ns(Some(1.5)), Some(1_500_000));
    }

    #[test]
    fn reasoning_fields_and_errors() {
        let mut t = InlineThink::default();
        let c = parse_event(
            Api::OpenaiChat,
            br#"{"choices":[{"index":0,"delta":{"content":"","reasoning":"Hm"}}]}"#,
            &mut t,
        )
        .unwrap();
        assert_eq!((c.reasoning_tokens, c.answer_tokens), (1, 0));
        let c = parse_event(
            Api::OpenaiChat,
            br#"{"choices":[{"delta":{"reasoning_content":"Hm"}}]}"#,
            &mut t,
        )
        .unwrap();
        assert_eq!(c.reasoning_tokens, 1);
        let c = parse_event(Api::OpenaiChat, br#"{"choices":[],"usage":{"prompt_tokens":26,"completion_tokens":282,"total_tokens":308}}"#, &mut t).unwrap();
        assert_eq!(c.fin.unwrap().output_tokens, Some(282));
        let c = parse_event(Api::OpenaiCompletions, br#"{"choices":[{"text":"x","finish_reason":null}],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}"#, &mut t).unwrap();
        assert!(
            c.fin.is_none(),
            "Ollama's zero usage on every chunk is not a count"
        );
        let c = parse_event(
            Api::OpenaiChat,
            br#"{"error":{"message":"boom","type":"server_error"}}"#,
            &mut t,
        )
        .unwrap();
        assert_eq!(c.error.as_deref(), Some("boom"));
        let c = parse_event(
            Api::OpenaiChat,
            br#"{"error":"Input validation error","error_type":"validation"}"#,
            &mut t,
        )
        .unwrap();
        assert_eq!(
            c.error.as_deref(),
            Some("Input validation error"),
            "TGI's string error"
        );
        let c = parse_event(
            Api::OpenaiChat,
            br#"{"object":"error","message":"too long","code":400}"#,
            &mut t,
        )
        .unwrap();
        assert_eq!(
            c.error.as_deref(),
            Some("too long"),
            "old vLLM's error object"
        );
        assert!(parse_event(Api::OpenaiChat, b"{nope", &mut t).is_err());
        assert!(SseDecoder::default().pending() == 0);
    }

    #[test]
    fn only_the_first_choice_counts_and_null_or_absent_choices_are_none() {
        let mut t = InlineThink::default();
        let two = br#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"},"finish_reason":"x"}]}"#;
        let c = parse_event(Api::OpenaiChat, two, &mut t).unwrap();
        assert_eq!((c.answer_tokens, c.fin.is_none()), (1, true));
        let null = br#"{"choices":null,"usage":{"completion_tokens":3,"prompt_tokens":5}}"#;
        let c = parse_event(Api::OpenaiChat, null, &mut t).unwrap();
        assert_eq!(c.answer_tokens, 0);
        assert_eq!(c.fin.unwrap().output_tokens, Some(3));
        let none = br#"{"usage":{"completion_tokens":4}}"#;
        let c = parse_event(Api::OpenaiChat, none, &mut t).unwrap();
        assert_eq!(c.fin.unwrap().output_tokens, Some(4));
        let empty = br#"{"choices":[]}"#;
        assert_eq!(
            parse_event(Api::OpenaiChat, empty, &mut t)
                .unwrap()
                .answer_tokens,
            0
        );
        assert!(parse_event(Api::OpenaiChat, br#"{"choices":7}"#, &mut t).is_err());
    }

    #[test]
    fn an_event_says_how_many_bytes_of_multibyte_characters_it_held() {
        let mut t = InlineThink::default();
        // llama.cpp sends a token ending inside a character with the next one: "é" and "🦀"
        // (2 and 4 bytes) may each be several byte tokens in one event.
        let ev = r#"{"choices":[{"text":"caf\u00e9 \ud83e\udd80","index":0}]}"#;
        let c = parse_event(Api::OpenaiCompletions, ev.as_bytes(), &mut t).unwrap();
        assert_eq!((c.answer_tokens, c.multibyte_bytes), (1, 6));
        let chat = "{\"choices\":[{\"delta\":{\"content\":\"ab\",\"reasoning_content\":\"中\"}}]}";
        let c = parse_event(Api::OpenaiChat, chat.as_bytes(), &mut t).unwrap();
        assert_eq!(
            (c.answer_tokens, c.reasoning_tokens, c.multibyte_bytes),
            (1, 1, 3)
        );
        let ascii = br#"{"choices":[{"text":"plain"}]}"#;
        assert_eq!(
            parse_event(Api::OpenaiCompletions, ascii, &mut t)
                .unwrap()
                .multibyte_bytes,
            0
        );
    }

    #[test]
    fn models_list() {
        let body = capture_body("models.http");
        assert_eq!(parse_models(&body).unwrap(), vec!["smollm2".to_string()]);
        assert_eq!(
            parse_models(br#"{"object":"list","data":null}"#).unwrap(),
            Vec::<String>::new()
        );
    }
}
