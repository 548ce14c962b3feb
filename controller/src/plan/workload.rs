//! Workloads: the prompts a run sends (one prompt, a file, the built-in varied set, or synthetic
//! prompts of a given length) and the request options that go with them.

use std::path::Path;
use tokengun_common::PromptSpec;
use tokengun_common::schedule::SplitMix64;

/// The built-in varied prompt set, shipped in the repository (`controller/prompts/varied.txt`).
pub const BUILTIN_VARIED: &str = include_str!("../../prompts/varied.txt");

/// Distinct prompts made for `synthetic:N`.
const SYNTHETIC_PROMPTS: usize = 16;

/// A workload could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot read prompts file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("prompts file {0} holds no prompts")]
    Empty(String),
    #[error(
        "synthetic prompt length {0:?} is not a whole number of words from 1 to 100000 (e.g. synthetic:512)"
    )]
    Synthetic(String),
}

/// Where prompts come from: `builtin`, `synthetic:WORDS`, or a file path.
pub fn load(source: &str, seed: u64) -> Result<Vec<PromptSpec>, WorkloadError> {
    load_with_format(source, seed).map(|(_, p)| p)
}

/// [`load`], with the file's format in words (empty for `builtin` and `synthetic:`).
pub fn load_with_format(
    source: &str,
    seed: u64,
) -> Result<(String, Vec<PromptSpec>), WorkloadError> {
    if source == "builtin" || source.starts_with("synthetic:") {
        return load_named(source, seed).map(|p| (String::new(), p));
    }
    let text = std::fs::read_to_string(Path::new(source)).map_err(|e| WorkloadError::Read {
        path: source.to_string(),
        source: e,
    })?;
    let (format, records) = super::datasets::parse(source, &text)?;
    drop(text);
    if records.is_empty() {
        return Err(WorkloadError::Empty(source.to_string()));
    }
    let prompts = records
        .into_iter()
        .map(|r| PromptSpec {
            later_turns: r.later_turns,
            ..r.prompt
        })
        .collect();
    Ok((format.as_str().to_string(), prompts))
}

fn load_named(source: &str, seed: u64) -> Result<Vec<PromptSpec>, WorkloadError> {
    if source == "builtin" {
        return Ok(parse_lines(BUILTIN_VARIED));
    }
    if let Some(n) = source.strip_prefix("synthetic:") {
        let words: usize = n
            .parse()
            .ok()
            .filter(|w| (1..=100_000).contains(w))
            .ok_or_else(|| WorkloadError::Synthetic(n.to_string()))?;
        return Ok(synthetic(words, seed));
    }
    let text = std::fs::read_to_string(Path::new(source)).map_err(|e| WorkloadError::Read {
        path: source.to_string(),
        source: e,
    })?;
    let prompts = parse_file(source, &text)?;
    if prompts.is_empty() {
        return Err(WorkloadError::Empty(source.to_string()));
    }
    Ok(prompts)
}

fn parse_lines(text: &str) -> Vec<PromptSpec> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(PromptSpec::plain)
        .collect()
}

/// The prompts of a file, its format told by its content (see [`super::datasets`]): plain text
/// (one prompt per non-empty line), JSONL (`{"prompt": ...}` or `{"messages": [...]}`, with
/// `max_tokens` or `output_len` capping that prompt's output and every other key merged into its
/// request body), or ShareGPT JSON.
pub fn parse_file(path: &str, text: &str) -> Result<Vec<PromptSpec>, WorkloadError> {
    let (_, records) = super::datasets::parse(path, text)?;
    Ok(records.into_iter().map(|r| r.prompt).collect())
}

/// Prompts of `words` words drawn from a fixed vocabulary with the seed.
pub fn synthetic(words: usize, seed: u64) -> Vec<PromptSpec> {
    const VOCAB: &[&str] = &[
        "time", "river", "memory", "signal", "garden", "theory", "engine", "winter", "language",
        "number", "city", "light", "question", "pattern", "ocean", "history", "machine", "forest",
        "music", "silence", "bridge", "orbit", "harvest", "mirror",
    ];
    let mut rng = SplitMix64::new(seed);
    (0..SYNTHETIC_PROMPTS)
        .map(|_| {
            let text = (0..words)
                .map(|_| VOCAB[(rng.next_u64() % VOCAB.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ");
            PromptSpec::plain(text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_set_is_varied() {
        let p = load("builtin", 0).unwrap();
        assert!(p.len() >= 20);
        assert_eq!(p[0].text, "What is the philosophical definition of time?");
    }

    #[test]
    fn jsonl_with_options() {
        let text = "{\"prompt\":\"a\",\"max_tokens\":8,\"options\":{\"temperature\":0}}\n\n{\"prompt\":\"b\",\"keep_alive\":\"1m\"}\n";
        let p = parse_file("p.jsonl", text).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].max_tokens, Some(8));
        let v: serde_json::Value = serde_json::from_str(&p[0].extra_body_json).unwrap();
        assert_eq!(v["options"]["temperature"], 0);
        assert_eq!(p[1].extra_body_json, r#"{"keep_alive":"1m"}"#);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = parse_file("p.jsonl", "{\"prompt\":\"a\"}\n{\"text\":\"b\"}\n").unwrap_err();
        assert!(e.to_string().starts_with("p.jsonl:2:"), "{e}");
        let e = parse_file("p.jsonl", "{\"prompt\":\"a\",\"model\":\"x\"}\n").unwrap_err();
        assert!(e.to_string().contains("\"model\""), "{e}");
        assert!(load("synthetic:0", 1).is_err());
        assert!(load("/nonexistent/prompts.txt", 1).is_err());
    }

    #[test]
    fn synthetic_prompts_have_the_length_and_repeat_with_the_seed() {
        let a = synthetic(50, 3);
        assert_eq!(a.len(), SYNTHETIC_PROMPTS);
        assert!(a.iter().all(|p| p.text.split(' ').count() == 50));
        assert_eq!(a, synthetic(50, 3));
        assert_ne!(a, synthetic(50, 4));
    }
}
