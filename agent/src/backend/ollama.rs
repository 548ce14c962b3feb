//! Ollama's native API: `/api/generate` request body, NDJSON line parsing, and preflight probes.

use super::{Final, StreamEvent};
use serde::Deserialize;
use std::borrow::Cow;
use tokengun_common::{CyclePlan, PromptSpec, ServerTimings};

/// The generate endpoint's path.
pub const GENERATE_PATH: &str = "/api/generate";

/// The JSON body of a streamed generate request: the plan's extra fields merged in, then the
/// prompt's own (so a prompt's `options.num_predict` overrides the plan's, key by key).
pub fn request_body(plan: &CyclePlan, prompt: &PromptSpec) -> Result<Vec<u8>, serde_json::Error> {
    let mut body = serde_json::json!({
        "model": plan.model,
        "prompt": prompt.text,
        "stream": true,
    });
    for extra in [&plan.extra_body_json, &prompt.extra_body_json] {
        if !extra.trim().is_empty() {
            merge_json(&mut body, serde_json::from_str(extra)?);
        }
    }
    serde_json::to_vec(&body)
}

/// Merges `extra` into `base`: objects key by key, recursively; anything else replaces.
pub fn merge_json(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
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

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    response: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
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

/// Parses one NDJSON line of a `/api/generate` stream.
///
/// A line with non-empty `response` or `thinking` carries one token (Ollama flushes per token;
/// the final `eval_count` is the authoritative count).
pub fn parse_line(line: &[u8]) -> Result<StreamEvent, String> {
    let l: Line<'_> = serde_json::from_slice(line).map_err(|e| {
        let shown = String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned();
        format!("malformed stream line ({e}): {shown}")
    })?;
    if let Some(err) = l.error {
        return Ok(StreamEvent::Error(err.into_owned()));
    }
    let has_text = |s: &Option<Cow<'_, str>>| s.as_deref().is_some_and(|t| !t.is_empty());
    let tokens = u32::from(has_text(&l.response) || has_text(&l.thinking));
    if l.done {
        return Ok(StreamEvent::Done(Box::new(Final {
            output_tokens: l.eval_count,
            prompt_tokens: l.prompt_eval_count,
            done_reason: l.done_reason.map(Cow::into_owned).unwrap_or_default(),
            timings: ServerTimings {
                total_ns: l.total_duration,
                load_ns: l.load_duration,
                prompt_eval_ns: l.prompt_eval_duration,
                eval_ns: l.eval_duration,
            },
            tokens_in_line: tokens,
        })));
    }
    Ok(StreamEvent::Tokens(tokens))
}

/// Extracts Ollama's `{"error": "..."}` text from an error body, or returns the body as text.
pub fn error_text(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct E {
        error: String,
    }
    match serde_json::from_slice::<E>(body) {
        Ok(e) => e.error,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
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

/// The version in a `/api/version` reply.
pub fn parse_version(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct V {
        version: String,
    }
    serde_json::from_slice::<V>(body).ok().map(|v| v.version)
}

/// Whether `model` is in `available`, accepting Ollama's implicit `:latest` tag.
pub fn model_available(model: &str, available: &[String]) -> bool {
    available.iter().any(|m| {
        m == model
            || (!model.contains(':') && m.strip_suffix(":latest") == Some(model))
            || model.strip_suffix(":latest") == Some(m.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ndjson::LineSplitter;

    // Lines as Ollama v0.32 writes them (shared/reference/server-apis.md §1.5).
    const STREAM: &str = concat!(
        "{\"model\":\"deepseek-r1:7b\",\"created_at\":\"2026-08-21T18:00:01.10234Z\",\"response\":\"\",\"thinking\":\"Okay\",\"done\":false}\n",
        "{\"model\":\"deepseek-r1:7b\",\"created_at\":\"2026-08-21T18:00:02.1Z\",\"response\":\"\",\"done\":false}\n",
        "{\"model\":\"deepseek-r1:7b\",\"created_at\":\"2026-08-21T18:00:03.5567Z\",\"response\":\"\\u003cthink\\u003e Blue\",\"done\":false}\n",
        "{\"model\":\"deepseek-r1:7b\",\"created_at\":\"2026-08-21T18:00:09.9Z\",\"response\":\"\",\"done\":true,\"done_reason\":\"stop\",\"context\":[151644,3838],\"total_duration\":10706818083,\"load_duration\":6338219291,\"prompt_eval_count\":26,\"prompt_eval_duration\":130079000,\"eval_count\":259,\"eval_duration\":4232710000}\n",
    );

    fn parse_all(chunks: &[&[u8]]) -> Vec<StreamEvent> {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| {
                out.push(parse_line(l).unwrap());
                true
            })
            .unwrap();
        }
        out
    }

    #[test]
    fn parses_thinking_answer_and_final_line() {
        let ev = parse_all(&[STREAM.as_bytes()]);
        assert_eq!(ev[0], StreamEvent::Tokens(1));
        assert_eq!(ev[1], StreamEvent::Tokens(0));
        assert_eq!(ev[2], StreamEvent::Tokens(1));
        let StreamEvent::Done(f) = &ev[3] else {
            panic!("no final line: {ev:?}")
        };
        assert_eq!(f.output_tokens, Some(259));
        assert_eq!(f.prompt_tokens, Some(26));
        assert_eq!(f.done_reason, "stop");
        assert_eq!(f.timings.eval_ns, Some(4_232_710_000));
        assert_eq!(f.tokens_in_line, 0);
    }

    #[test]
    fn every_byte_boundary_gives_the_same_events() {
        let bytes = STREAM.as_bytes();
        let whole = parse_all(&[bytes]);
        for i in 0..=bytes.len() {
            assert_eq!(
                parse_all(&[&bytes[..i], &bytes[i..]]),
                whole,
                "split at {i}"
            );
        }
        // And one byte at a time.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_all(&singles), whole);
    }

    #[test]
    fn errors_and_junk() {
        assert_eq!(
            parse_line(br#"{"error":"an error was encountered while running the model"}"#),
            Ok(StreamEvent::Error(
                "an error was encountered while running the model".into()
            ))
        );
        assert!(
            parse_line(b"{\"model\": oops")
                .unwrap_err()
                .contains("malformed")
        );
        assert_eq!(
            error_text(br#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(error_text(b"404 page not found\n"), "404 page not found");
    }

    #[test]
    fn tags_and_models() {
        let tags = br#"{"models":[{"name":"deepseek-r1:7b","model":"deepseek-r1:7b"},{"name":"llama3.2:latest"}]}"#;
        let m = parse_tags(tags).unwrap();
        assert!(model_available("deepseek-r1:7b", &m));
        assert!(model_available("llama3.2", &m));
        assert!(!model_available("deepseek-r1:14b", &m));
        assert_eq!(
            parse_version(br#"{"version":"0.32.15"}"#).as_deref(),
            Some("0.32.15")
        );
    }

    #[test]
    fn extra_body_is_merged() {
        let prompt = PromptSpec {
            text: "p".into(),
            extra_body_json: r#"{"options":{"num_predict":4},"keep_alive":"1m"}"#.into(),
        };
        let plan = CyclePlan {
            cycle_id: 1,
            shape: tokengun_common::LoadShape::Burst,
            concurrency: 1,
            rate_per_s: 0.0,
            arrival: tokengun_common::Arrival::Poisson,
            duration: std::time::Duration::ZERO,
            seed: 0,
            target_url: "http://127.0.0.1:1".into(),
            api: tokengun_common::Api::Ollama,
            model: "m".into(),
            prompts: vec![prompt.clone()],
            request_timeout: std::time::Duration::from_secs(1),
            extra_body_json: r#"{"options":{"num_predict":8,"temperature":0}}"#.into(),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&request_body(&plan, &prompt).unwrap()).unwrap();
        assert_eq!(
            v["options"]["num_predict"], 4,
            "the prompt's own option wins"
        );
        assert_eq!(
            v["options"]["temperature"], 0,
            "the plan's other options stay"
        );
        assert_eq!(v["keep_alive"], "1m");
        assert_eq!(v["prompt"], "p");
        assert_eq!(v["stream"], true);
    }
}
