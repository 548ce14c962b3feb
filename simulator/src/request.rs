//! Reading a generate-like request's body: the model, streaming, the output cap, the prompt, and
//! Ollama's `keep_alive: 0`.

use crate::engine::GenRequest;
use crate::wire::Endpoint;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// What a generate-like request asked for.
pub(crate) struct Parsed {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub req: GenRequest,
}

pub(crate) fn parse_request(
    endpoint: Endpoint,
    body: &[u8],
    headers: &HeaderMap,
) -> Result<Parsed, (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    if body.is_empty() {
        return Err(bad("missing request body".into()));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if model.is_empty() {
        return Err(bad("model is required".into()));
    }
    let prompt_text = match endpoint {
        Endpoint::OllamaGenerate | Endpoint::OpenAiCompletions => match v.get("prompt") {
            Some(Value::String(s)) => s.clone(),
            None if endpoint == Endpoint::OllamaGenerate => String::new(),
            _ => return Err(bad("\"prompt\" must be a string".into())),
        },
        Endpoint::OllamaChat | Endpoint::OpenAiChat => match v.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => m
                .iter()
                .filter_map(|x| x.get("content").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => return Err(bad("[] is too short - 'messages'".into())),
        },
    };
    let (stream, max_tokens) = match endpoint {
        Endpoint::OllamaGenerate | Endpoint::OllamaChat => (
            v.get("stream").and_then(Value::as_bool).unwrap_or(true),
            v.pointer("/options/num_predict").and_then(Value::as_i64),
        ),
        _ => (
            v.get("stream").and_then(Value::as_bool).unwrap_or(false),
            v.get("max_tokens").and_then(Value::as_i64),
        ),
    };
    Ok(Parsed {
        model,
        stream,
        include_usage: v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        req: GenRequest {
            prompt_text,
            max_tokens: max_tokens
                .filter(|n| *n > 0)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            ignore_eos: v
                .get("ignore_eos")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            cache_prompt: v
                .get("cache_prompt")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            client_id: headers
                .get("x-tokengun-request")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string),
            unload_after: matches!(endpoint, Endpoint::OllamaGenerate | Endpoint::OllamaChat)
                && v.get("keep_alive").is_some_and(keep_alive_zero),
        },
    })
}

/// Ollama's `keep_alive` of zero (`0`, `"0"`, `"0s"`, `"0m"`): unload the model after this request.
fn keep_alive_zero(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => {
            let t = s.trim().trim_end_matches(['s', 'm', 'h']);
            t.parse::<f64>().is_ok_and(|x| x == 0.0)
        }
        _ => false,
    }
}
