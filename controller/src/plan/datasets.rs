//! Prompt datasets read from files, the format told by the content: plain text (one prompt per
//! line), JSONL (`{"prompt": ...}` or `{"messages": [...]}` per line, or a ShareGPT record per
//! line), and ShareGPT JSON (an array of `{"conversations": [{"from", "value"}, ...]}`).
//!
//! A ShareGPT record becomes the conversation up to its first human turn (a system turn before it
//! kept), with the reply that followed as the output length wanted (`max_tokens`), as vLLM's and
//! SGLang's serving benchmarks read it; its later human turns are kept for conversations.

use super::workload::WorkloadError;
use serde_json::Value;
use serde_json::value::RawValue;
use tokengun_common::PromptSpec;
use tokengun_common::plan::check_extra_body;

/// How a prompts file was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Plain,
    Jsonl,
    ShareGpt,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Plain => "plain text",
            Format::Jsonl => "JSONL",
            Format::ShareGpt => "ShareGPT JSON",
        }
    }
}

/// One prompt of a dataset, with the human turns that would follow it in a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub prompt: PromptSpec,
    /// Later user turns (ShareGPT's later `human` values), in order; empty for a single prompt.
    pub later_turns: Vec<String>,
}

/// The format of `text`, by its first non-blank character: `[` ShareGPT JSON, `{` JSONL, anything
/// else plain text.
pub fn detect(text: &str) -> Format {
    match text.trim_start().chars().next() {
        Some('[') => Format::ShareGpt,
        Some('{') => Format::Jsonl,
        _ => Format::Plain,
    }
}

/// The records of a prompts file, in file order.
pub fn parse(path: &str, text: &str) -> Result<(Format, Vec<Record>), WorkloadError> {
    let format = detect(text);
    let records = match format {
        Format::Plain => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| Record {
                prompt: PromptSpec::plain(l),
                later_turns: Vec::new(),
            })
            .collect(),
        Format::Jsonl => parse_jsonl(path, text)?,
        Format::ShareGpt => parse_sharegpt(path, text)?,
    };
    Ok((format, records))
}

fn line_error(path: &str, line: usize, reason: impl Into<String>) -> WorkloadError {
    WorkloadError::Line {
        path: path.to_string(),
        line,
        reason: reason.into(),
    }
}

fn parse_jsonl(path: &str, text: &str) -> Result<Vec<Record>, WorkloadError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| line_error(path, i + 1, reason);
        let Value::Object(obj) = serde_json::from_str(line)
            .map_err(|e| bad(format!("not JSON ({e}); JSONL needs one object per line")))?
        else {
            return Err(bad("not a JSON object".into()));
        };
        let rec = if obj.contains_key("conversations") {
            sharegpt_record(Value::Object(obj)).map_err(bad)?
        } else {
            jsonl_record(obj).map_err(bad)?
        };
        out.push(rec);
    }
    Ok(out)
}

/// A positive whole number of tokens from `key`, if present.
fn token_count(obj: &mut serde_json::Map<String, Value>, key: &str) -> Result<Option<u32>, String> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("\"{key}\" must be a positive whole number, not {v}")),
    }
}

fn jsonl_record(mut obj: serde_json::Map<String, Value>) -> Result<Record, String> {
    let (text, messages_json) = match (obj.remove("prompt"), obj.remove("messages")) {
        (Some(_), Some(_)) => return Err("has both \"prompt\" and \"messages\": give one".into()),
        (Some(Value::String(s)), None) if !s.is_empty() => (s, String::new()),
        (Some(_), None) => return Err("\"prompt\" must be a non-empty string".into()),
        (None, Some(m)) => {
            let text = check_messages(&m)?;
            (text, m.to_string())
        }
        (None, None) => {
            return Err("needs a non-empty string \"prompt\" or a \"messages\" array".into());
        }
    };
    let max_tokens = token_count(&mut obj, "max_tokens")?;
    let output_len = token_count(&mut obj, "output_len")?;
    if max_tokens.is_some() && output_len.is_some() {
        return Err("has both \"max_tokens\" and \"output_len\": give one".into());
    }
    let extra_body_json = if obj.is_empty() {
        String::new()
    } else {
        Value::Object(obj).to_string()
    };
    check_extra_body(&extra_body_json)?;
    Ok(Record {
        prompt: PromptSpec {
            text,
            max_tokens: max_tokens.or(output_len),
            extra_body_json,
            messages_json,
            ..PromptSpec::plain("")
        },
        later_turns: Vec::new(),
    })
}

/// Checks a `messages` array (`role` and `content` strings in each) and returns its text
/// flattened (contents joined by blank lines) for the completion APIs.
pub fn check_messages(m: &Value) -> Result<String, String> {
    let Value::Array(items) = m else {
        return Err("\"messages\" must be an array of {\"role\", \"content\"} objects".into());
    };
    if items.is_empty() {
        return Err("\"messages\" is empty".into());
    }
    let mut parts = Vec::with_capacity(items.len());
    for (j, item) in items.iter().enumerate() {
        let role = item.get("role").and_then(Value::as_str);
        let content = item.get("content").and_then(Value::as_str);
        match (role.filter(|r| !r.is_empty()), content) {
            (Some(_), Some(c)) => parts.push(c),
            (None, _) => return Err(format!("\"messages\"[{j}] needs a string \"role\"")),
            (_, None) => return Err(format!("\"messages\"[{j}] needs a string \"content\"")),
        }
    }
    Ok(parts.join("\n\n"))
}

fn parse_sharegpt(path: &str, text: &str) -> Result<Vec<Record>, WorkloadError> {
    // Raw elements borrow from `text`, so each one's line is known for its error.
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
        line_error(
            path,
            e.line(),
            format!("not a JSON array of ShareGPT records ({e})"),
        )
    })?;
    let mut out = Vec::with_capacity(items.len());
    for raw in items {
        let offset = (raw.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
        let line = text.as_bytes()[..offset.min(text.len())]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        let v: Value = serde_json::from_str(raw.get())
            .map_err(|e| line_error(path, line, format!("not JSON ({e})")))?;
        out.push(sharegpt_record(v).map_err(|r| line_error(path, line, r))?);
    }
    Ok(out)
}

/// The role name of a ShareGPT `from`.
fn sharegpt_role(from: &str) -> Option<&'static str> {
    match from {
        "human" | "user" => Some("user"),
        "gpt" | "assistant" | "chatgpt" | "bard" | "bing" => Some("assistant"),
        "system" => Some("system"),
        _ => None,
    }
}

fn sharegpt_record(v: Value) -> Result<Record, String> {
    let Some(Value::Array(turns)) = v.get("conversations") else {
        return Err("a ShareGPT record needs a \"conversations\" array".into());
    };
    let mut messages: Vec<Value> = Vec::new();
    let mut reply: Option<&str> = None;
    let mut later_turns = Vec::new();
    for (j, t) in turns.iter().enumerate() {
        let from = t.get("from").and_then(Value::as_str);
        let value = t.get("value").and_then(Value::as_str);
        let (Some(from), Some(value)) = (from, value) else {
            return Err(format!(
                "\"conversations\"[{j}] needs string \"from\" and \"value\""
            ));
        };
        let role = sharegpt_role(from).ok_or_else(|| {
            format!("\"conversations\"[{j}].from is {from:?}: expected human, gpt or system")
        })?;
        let asked = messages.iter().any(|m| m["role"] == "user");
        match role {
            "user" if asked => later_turns.push(value.to_string()),
            "assistant" if asked && reply.is_none() => reply = Some(value),
            "assistant" | "user" | "system" if !asked => {
                messages.push(serde_json::json!({"role": role, "content": value}));
            }
            _ => {}
        }
    }
    if !messages.iter().any(|m| m["role"] == "user") {
        return Err("the conversation has no human turn".into());
    }
    let m = Value::Array(messages);
    let text = check_messages(&m)?;
    let messages_json = m.to_string();
    Ok(Record {
        prompt: PromptSpec {
            text,
            // The reply's length as wanted output: about 4 characters a token without a tokenizer.
            max_tokens: reply
                .map(|r| u32::try_from(r.chars().count().div_ceil(4).max(1)).unwrap_or(u32::MAX)),
            messages_json,
            ..PromptSpec::plain("")
        },
        later_turns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_content() {
        assert_eq!(detect("  \n[{}]"), Format::ShareGpt);
        assert_eq!(detect("{\"prompt\":\"a\"}"), Format::Jsonl);
        assert_eq!(detect("what is time?\n"), Format::Plain);
    }

    #[test]
    fn jsonl_messages_and_output_len() {
        let text = r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"output_len":12}"#;
        let (f, r) = parse("d.jsonl", text).unwrap();
        assert_eq!(f, Format::Jsonl);
        let p = &r[0].prompt;
        assert_eq!(p.max_tokens, Some(12));
        assert_eq!(p.text, "be brief\n\nhi");
        let m: Value = serde_json::from_str(&p.messages_json).unwrap();
        assert_eq!(m[1]["content"], "hi");
        assert!(p.extra_body_json.is_empty());
    }

    #[test]
    fn sharegpt_first_turn_reply_length_and_later_turns() {
        let text = "[\n{\"id\":\"a\",\"conversations\":[{\"from\":\"system\",\"value\":\"s\"},{\"from\":\"human\",\"value\":\"q1\"},{\"from\":\"gpt\",\"value\":\"12345678\"},{\"from\":\"human\",\"value\":\"q2\"}]}\n]";
        let (f, r) = parse("s.json", text).unwrap();
        assert_eq!(f, Format::ShareGpt);
        assert_eq!(r[0].prompt.max_tokens, Some(2));
        assert_eq!(r[0].later_turns, vec!["q2".to_string()]);
        let m: Value = serde_json::from_str(&r[0].prompt.messages_json).unwrap();
        assert_eq!(m.as_array().unwrap().len(), 2);
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let text = "[\n{\"conversations\":[{\"from\":\"human\",\"value\":\"q\"}]},\n{\"conversations\":[{\"from\":\"robot\",\"value\":\"q\"}]}\n]";
        let e = parse("s.json", text).unwrap_err().to_string();
        assert!(e.starts_with("s.json:3:") && e.contains("from"), "{e}");
        let e = parse("s.json", "[\n{\"a\":1},,\n]")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("s.json:2:"), "{e}");
        let e = parse(
            "d.jsonl",
            "{\"prompt\":\"a\"}\n{\"messages\":[{\"role\":\"user\"}]}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("d.jsonl:2:") && e.contains("content"), "{e}");
        let e = parse("d.jsonl", "{\"prompt\":\"a\",\"output_len\":-3}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("output_len"), "{e}");
        let e = parse(
            "d.jsonl",
            "{\"conversations\":[{\"from\":\"gpt\",\"value\":\"x\"}]}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no human turn"), "{e}");
    }
}
