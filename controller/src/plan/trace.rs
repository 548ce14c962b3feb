//! Trace replay: arrivals and lengths from a file, replayed as one open-loop level whose intended
//! starts are the trace's (scaled by `time_scale`). Two formats, told by content: Mooncake JSONL
//! (`{"timestamp": ms, "input_length", "output_length", "hash_ids": [...]}`, each hash id a block
//! of 512 prompt tokens shared by every request that names it), and CSV with the header
//! `timestamp,input_tokens,output_tokens` (ms). Each request gets a prompt of its input length
//! (exact with a tokenizer) and asks for its output length, forced where the API can.

use super::tokens::{self, Tokenizer};
use std::collections::HashMap;
use std::path::Path;
use tokengun_common::PromptSpec;

/// Prompt tokens per Mooncake hash block.
pub const BLOCK_TOKENS: u32 = 512;
/// Most requests a trace may hold.
pub const MAX_ROWS: usize = 1_000_000;

/// A trace that cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read trace {path}: {source}")]
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
    #[error("trace {0} holds no requests")]
    Empty(String),
    #[error("trace {path} holds more than {MAX_ROWS} requests")]
    TooLong { path: String },
    #[error(transparent)]
    Token(#[from] tokens::TokenError),
}

/// One request of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub timestamp_ms: u64,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub hash_ids: Vec<u64>,
}

/// A trace ready to replay: one prompt per request, and when each starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub format: &'static str,
    pub prompts: Vec<PromptSpec>,
    /// Offsets from the first request, ms, scaled, in file order (sorted).
    pub at_ms: Vec<u64>,
}

fn positive(v: &serde_json::Value, key: &str) -> Result<u32, String> {
    v.get(key)
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (1..=tokens::MAX_TOKENS).contains(n))
        .ok_or_else(|| {
            format!(
                "needs \"{key}\": a whole number of tokens from 1 to {}",
                tokens::MAX_TOKENS
            )
        })
}

/// One Mooncake JSONL line; the error says what is wrong with it.
fn mooncake_row(line: &str) -> Result<Row, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let timestamp_ms = v
        .get("timestamp")
        .and_then(serde_json::Value::as_u64)
        .ok_or("needs \"timestamp\": whole ms")?;
    let hash_ids = match v.get("hash_ids") {
        None => Vec::new(),
        Some(h) => h
            .as_array()
            .and_then(|a| a.iter().map(serde_json::Value::as_u64).collect())
            .ok_or("\"hash_ids\" must be an array of whole numbers")?,
    };
    Ok(Row {
        timestamp_ms,
        input_tokens: positive(&v, "input_length")?,
        output_tokens: positive(&v, "output_length")?,
        hash_ids,
    })
}

/// One CSV line `timestamp,input_tokens,output_tokens`.
fn csv_row(line: &str) -> Result<Row, String> {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() != 3 {
        return Err(format!("{} fields; expected 3", f.len()));
    }
    let num = |j: usize, name: &str| {
        f[j].parse::<u64>()
            .map_err(|_| format!("{name} must be a whole number, in column {}", j + 1))
    };
    let tokens = |j: usize, name: &str| {
        num(j, name).and_then(|n| {
            u32::try_from(n)
                .ok()
                .filter(|n| (1..=tokens::MAX_TOKENS).contains(n))
                .ok_or_else(|| format!("{name} must be from 1 to {}", tokens::MAX_TOKENS))
        })
    };
    Ok(Row {
        timestamp_ms: num(0, "timestamp")?,
        input_tokens: tokens(1, "input_tokens")?,
        output_tokens: tokens(2, "output_tokens")?,
        hash_ids: Vec::new(),
    })
}

/// Parses a trace's text (Mooncake JSONL, or CSV with a header).
pub fn parse(path: &str, text: &str) -> Result<(&'static str, Vec<Row>), TraceError> {
    let bad = |line: usize, reason: String| TraceError::Line {
        path: path.to_string(),
        line,
        reason,
    };
    let jsonl = text.trim_start().starts_with('{');
    let mut rows = Vec::new();
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    if !jsonl {
        let Some((i, header)) = lines.next() else {
            return Err(TraceError::Empty(path.to_string()));
        };
        let cols: Vec<&str> = header.split(',').map(str::trim).collect();
        if cols != ["timestamp", "input_tokens", "output_tokens"] {
            return Err(bad(
                i + 1,
                format!(
                    "a CSV trace opens with the header timestamp,input_tokens,output_tokens, not {header:?}"
                ),
            ));
        }
    }
    for (i, line) in lines {
        if rows.len() >= MAX_ROWS {
            return Err(TraceError::TooLong {
                path: path.to_string(),
            });
        }
        let row = if jsonl {
            mooncake_row(line)
        } else {
            csv_row(line)
        }
        .map_err(|r| bad(i + 1, r))?;
        if let Some(prev) = rows.last().map(|r: &Row| r.timestamp_ms) {
            if row.timestamp_ms < prev {
                return Err(bad(
                    i + 1,
                    format!(
                        "timestamp {} is before the previous one ({prev}): a trace is in time order",
                        row.timestamp_ms
                    ),
                ));
            }
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(TraceError::Empty(path.to_string()));
    }
    Ok((if jsonl { "Mooncake JSONL" } else { "CSV" }, rows))
}

/// Reads and prepares a trace: prompts of each request's length (a hash block's text the same
/// wherever its id appears, so shared blocks are shared prefixes), offsets scaled by
/// `time_scale` (2 = twice as slow, 0.5 = twice as fast).
pub fn load(
    path: &Path,
    time_scale: f64,
    tokenizer: Option<&Tokenizer>,
    seed: u64,
) -> Result<Replay, TraceError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
        path: p.clone(),
        source,
    })?;
    let (format, rows) = parse(&p, &text)?;
    drop(text);
    let first = rows[0].timestamp_ms;
    let mut blocks: HashMap<u64, String> = HashMap::new();
    let mut prompts = Vec::with_capacity(rows.len());
    let mut at_ms = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        at_ms.push(((r.timestamp_ms - first) as f64 * time_scale).round() as u64);
        let mut parts: Vec<String> = Vec::new();
        let mut left = r.input_tokens;
        for id in &r.hash_ids {
            if left == 0 {
                break;
            }
            let n = left.min(BLOCK_TOKENS);
            let full = blocks
                .entry(*id)
                .or_insert_with(|| tokens::block_text(tokenizer, BLOCK_TOKENS, seed ^ id));
            parts.push(tokens::prefix_of(tokenizer, full, n));
            left -= n;
        }
        if left > 0 {
            // The request's own tokens after its shared blocks (all of it without hash ids).
            parts.push(tokens::block_text(
                tokenizer,
                left,
                seed ^ ((i as u64) << 20) ^ 0x7ace,
            ));
        }
        let text = parts.join(" ");
        let input_tokens = match tokenizer {
            Some(t) => u32::try_from(t.count(&text)?).unwrap_or(u32::MAX),
            None => r.input_tokens,
        };
        prompts.push(PromptSpec {
            max_tokens: Some(r.output_tokens),
            force_output: true,
            input_tokens: Some(input_tokens),
            ..PromptSpec::plain(text)
        });
    }
    Ok(Replay {
        format,
        prompts,
        at_ms,
    })
}

/// A run whose workload is a trace: one open-loop level at the trace's mean rate, as long as the
/// trace, its arrivals the trace's. `levels_given`: --shape or --levels was given too (refused).
pub fn replay_level(
    mut cfg: super::RunConfig,
    levels_given: bool,
) -> Result<super::RunConfig, super::synth::SynthError> {
    let at = &cfg.cycle_workload.trace_at_ms;
    let Some(&last_ms) = at.last() else {
        return Ok(cfg);
    };
    let key = super::synth::key;
    if levels_given {
        return Err(key(
            "trace",
            "a trace is its own level: drop --shape / --levels",
        ));
    }
    if !cfg.warmup.is_zero() {
        return Err(key("trace", "a trace replays once: drop --warmup"));
    }
    if cfg.agents.len() > 1 {
        return Err(key(
            "trace",
            "a trace is replayed by one agent: give one --agent",
        ));
    }
    let span_s = (last_ms as f64 / 1e3).max(0.001);
    cfg.shape = tokengun_common::LoadShape::Open;
    cfg.levels = vec![super::Level {
        concurrency: 0,
        rate_per_s: Some(at.len() as f64 / span_s),
    }];
    cfg.duration = std::time::Duration::from_millis(last_ms + 1);
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/workloads")
            .join(name)
    }

    #[test]
    fn both_fixture_formats_give_the_same_arrivals_and_lengths() {
        let m = load(&fixture("mooncake-trace.jsonl"), 1.0, None, 0).unwrap();
        let c = load(&fixture("trace.csv"), 1.0, None, 0).unwrap();
        assert_eq!((m.format, c.format), ("Mooncake JSONL", "CSV"));
        assert_eq!(m.at_ms, c.at_ms);
        assert_eq!(m.at_ms[0], 0);
        let lens = |r: &Replay| {
            r.prompts
                .iter()
                .map(|p| (p.input_tokens, p.max_tokens))
                .collect::<Vec<_>>()
        };
        assert_eq!(lens(&m), lens(&c));
        let half = load(&fixture("trace.csv"), 0.5, None, 0).unwrap();
        assert_eq!(
            half.at_ms.last().copied(),
            Some((*c.at_ms.last().unwrap() as f64 * 0.5).round() as u64)
        );
    }

    #[test]
    fn shared_hash_blocks_are_shared_prefixes_of_exact_length() {
        let t = Tokenizer::load(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/tokenizers/tiny-bpe/tokenizer.json"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        std::fs::write(
            &p,
            "{\"timestamp\":5,\"input_length\":700,\"output_length\":3,\"hash_ids\":[1,2]}\n{\"timestamp\":9,\"input_length\":600,\"output_length\":3,\"hash_ids\":[1,3]}\n",
        )
        .unwrap();
        let r = load(&p, 1.0, Some(&t), 0).unwrap();
        assert_eq!(r.prompts[0].input_tokens, Some(700));
        assert_eq!(r.prompts[1].input_tokens, Some(600));
        let (a, b) = (&r.prompts[0].text, &r.prompts[1].text);
        let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
        assert!(common > 2000, "block 1 is shared: {common} characters");
        assert_eq!(r.at_ms, vec![0, 4]);
    }

    #[test]
    fn bad_traces_name_the_line_and_field() {
        let e = parse(
            "t.csv",
            "timestamp,input_tokens,output_tokens\n0,10,5\n5,x,5\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("t.csv:3:") && e.contains("input_tokens"),
            "{e}"
        );
        let e = parse("t.csv", "ts,in,out\n").unwrap_err().to_string();
        assert!(e.starts_with("t.csv:1:") && e.contains("header"), "{e}");
        let e = parse("t.jsonl", "{\"timestamp\":9,\"input_length\":3,\"output_length\":1}\n{\"timestamp\":2,\"input_length\":3,\"output_length\":1}\n").unwrap_err().to_string();
        assert!(
            e.starts_with("t.jsonl:2:") && e.contains("time order"),
            "{e}"
        );
        let e = parse(
            "t.jsonl",
            "{\"timestamp\":9,\"input_length\":0,\"output_length\":1}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("input_length"), "{e}");
    }
}
