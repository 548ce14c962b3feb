//! The `[workload]` plan table (and its flags): prompts made to token lengths, output lengths asked
//! for, a system prompt shared by some or all prompts, all compiled into the plan's prompts before
//! the first level, with a [`WorkloadInfo`] that says what the lengths mean.

use super::tokens::{self, LengthDist, TokenError, Tokenizer};
use super::workload::{self, WorkloadError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tokengun_common::run_dir::WorkloadInfo;
use tokengun_common::schedule::SplitMix64;
use tokengun_common::{CycleWorkload, PromptSpec};

/// Synthetic prompts made for `input_tokens` unless `count` says.
pub const DEFAULT_COUNT: u32 = 64;
/// Most synthetic prompts.
pub const MAX_COUNT: u32 = 100_000;

/// `[workload]`: how prompts are made or shaped. Flags: `--tokenizer`, `--input-tokens`,
/// `--output-tokens`, `--prompt-count`, `--shared-prefix-tokens`, ...
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadPlan {
    /// A Hugging Face tokenizer.json: lengths are exact by it.
    pub tokenizer: Option<PathBuf>,
    /// Synthetic prompts of this many tokens: `N`, `uniform:MIN-MAX`, `normal:MEAN,SD`,
    /// `lognormal:MEDIAN,SIGMA`.
    pub input_tokens: Option<String>,
    /// Each prompt asks for this many output tokens (same forms), run to length where the API can.
    pub output_tokens: Option<String>,
    /// How many synthetic prompts (default 64).
    pub count: Option<u32>,
    /// A system prompt of this many tokens put before prompts.
    pub shared_prefix_tokens: Option<u32>,
    /// The share (0..1] of prompts that carry it (default 1).
    pub shared_prefix_fraction: Option<f64>,
    /// Distinct prefixes, prompt i taking prefix i mod G (default 1).
    pub shared_prefix_groups: Option<u32>,
    /// Turns per conversation (a level then counts conversations).
    pub turns: Option<u32>,
    /// Between an answer and the next turn (e.g. "2s"; default 0s).
    pub think_time: Option<String>,
    /// `fixed` (default) or `exponential` think times around `think_time`.
    pub think: Option<String>,
    /// Replay this trace (Mooncake JSONL or CSV) as one open-loop level.
    pub trace: Option<PathBuf>,
    /// Trace offsets multiplied by this (2 = twice as slow, 0.5 = twice as fast; default 1).
    pub time_scale: Option<f64>,
}

impl WorkloadPlan {
    /// `over`'s settings over `base`'s, key by key.
    pub fn overlay(base: Option<Self>, over: Option<Self>) -> Option<Self> {
        let (b, o) = match (base, over) {
            (None, o) => return o,
            (b, None) => return b,
            (Some(b), Some(o)) => (b, o),
        };
        Some(Self {
            tokenizer: o.tokenizer.or(b.tokenizer),
            input_tokens: o.input_tokens.or(b.input_tokens),
            output_tokens: o.output_tokens.or(b.output_tokens),
            count: o.count.or(b.count),
            shared_prefix_tokens: o.shared_prefix_tokens.or(b.shared_prefix_tokens),
            shared_prefix_fraction: o.shared_prefix_fraction.or(b.shared_prefix_fraction),
            shared_prefix_groups: o.shared_prefix_groups.or(b.shared_prefix_groups),
            turns: o.turns.or(b.turns),
            think_time: o.think_time.or(b.think_time),
            think: o.think.or(b.think),
            trace: o.trace.or(b.trace),
            time_scale: o.time_scale.or(b.time_scale),
        })
    }

    /// Relative paths in a plan file are found beside it.
    pub fn resolve_beside(&mut self, dir: &std::path::Path) {
        for p in [&mut self.tokenizer, &mut self.trace] {
            if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                *p = dir.join(&*p);
            }
        }
    }
}

/// A `[workload]` setting that does not make prompts.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("--{flag} (plan key `workload.{key}`): {message}", flag = key.replace('_', "-"))]
    Key { key: &'static str, message: String },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error(transparent)]
    Trace(#[from] super::trace::TraceError),
}

pub(super) fn key(key: &'static str, message: impl Into<String>) -> SynthError {
    SynthError::Key {
        key,
        message: message.into(),
    }
}

fn dist(name: &'static str, v: Option<&String>) -> Result<Option<LengthDist>, SynthError> {
    v.map(|s| LengthDist::parse(s).map_err(|e| key(name, e.to_string())))
        .transpose()
}

/// Where the base prompts come from: a `prompts` source, one `prompt`, or neither (the default).
pub struct Base<'a> {
    pub prompts: Option<&'a str>,
    pub prompt: Option<&'a str>,
    pub default_prompt: &'a str,
}

/// The plan's prompts, what they are, and what each cycle carries for them: the base prompts, or
/// synthetic ones of the lengths asked for, or a trace's, each counted by the tokenizer when
/// there is one, with the output lengths and shared prefix applied.
pub fn compile(
    base: &Base<'_>,
    plan: Option<&WorkloadPlan>,
    seed: u64,
) -> Result<(Vec<PromptSpec>, WorkloadInfo, CycleWorkload), SynthError> {
    let empty = WorkloadPlan::default();
    let w = plan.unwrap_or(&empty);
    let tokenizer = w.tokenizer.as_deref().map(Tokenizer::load).transpose()?;
    let cycle = cycle_workload(Some(w))?;
    if let Some(path) = &w.trace {
        return from_trace(base, w, path, tokenizer.as_ref(), cycle, seed);
    } else if w.time_scale.is_some() {
        return Err(key("time_scale", "applies to --trace only"));
    }
    let input = dist("input_tokens", w.input_tokens.as_ref())?;
    let output = dist("output_tokens", w.output_tokens.as_ref())?;
    let mut rng = SplitMix64::new(seed ^ 0x5eed_70c3);
    let mut info = WorkloadInfo {
        tokenizer: tokenizer.as_ref().map(|t| t.path().to_string()),
        input_tokens: w.input_tokens.clone(),
        output_tokens: w.output_tokens.clone(),
        ..WorkloadInfo::default()
    };
    let mut prompts = match input {
        Some(d) => {
            if base.prompts.is_some() || base.prompt.is_some() {
                return Err(key(
                    "input_tokens",
                    "makes synthetic prompts: drop --prompts / --prompt, or drop it",
                ));
            }
            info.source = "tokens".into();
            let count = w.count.unwrap_or(DEFAULT_COUNT);
            if !(1..=MAX_COUNT).contains(&count) {
                return Err(key("count", format!("from 1 to {MAX_COUNT}")));
            }
            (0..count)
                .map(|_| made(tokenizer.as_ref(), d.sample(&mut rng), &mut rng))
                .collect::<Result<Vec<_>, _>>()?
        }
        None => {
            if w.count.is_some() {
                return Err(key(
                    "count",
                    "applies to input_tokens (synthetic prompts) only",
                ));
            }
            let (source, format, prompts) = match (base.prompts, base.prompt) {
                (Some(src), _) => {
                    let (format, p) = workload::load_with_format(src, seed)?;
                    (src.to_string(), format, p)
                }
                (None, p) => (
                    "prompt".into(),
                    String::new(),
                    vec![PromptSpec::plain(p.unwrap_or(base.default_prompt))],
                ),
            };
            info.source = source;
            info.format = format;
            prompts
        }
    };
    if let Some(p) = w.shared_prefix_tokens {
        info.shared_prefix = Some(shared_prefix(
            w,
            p,
            tokenizer.as_ref(),
            &mut rng,
            &mut prompts,
        )?);
    } else if w.shared_prefix_fraction.is_some() || w.shared_prefix_groups.is_some() {
        return Err(key(
            "shared_prefix_tokens",
            "needed with shared_prefix_fraction / shared_prefix_groups: how long is the prefix?",
        ));
    }
    // Synthetic prompts were made to their count already; prompts from a file, or with a prefix
    // put before them, are counted whole.
    let counted = input.is_some() && w.shared_prefix_tokens.is_none();
    if let Some(t) = tokenizer.as_ref().filter(|_| !counted) {
        for p in &mut prompts {
            p.input_tokens = Some(u32::try_from(t.count(&p.text)?).unwrap_or(u32::MAX));
        }
    }
    if let Some(d) = output {
        for p in &mut prompts {
            p.max_tokens = Some(d.sample(&mut rng));
            p.force_output = true;
        }
    }
    describe(&mut info, &prompts, tokenizer.is_some());
    info.conversation = conversation_words(w)?;
    Ok((prompts, info, cycle))
}

/// Fills in what the prompts are: how many, their bytes, what their lengths mean.
fn describe(info: &mut WorkloadInfo, prompts: &[PromptSpec], exact: bool) {
    info.input_lengths = if exact {
        "exact"
    } else if prompts.iter().all(|p| p.input_tokens.is_some()) {
        "approximate"
    } else {
        "unknown"
    }
    .into();
    let counted: Vec<f64> = prompts
        .iter()
        .filter_map(|p| p.input_tokens.map(f64::from))
        .collect();
    info.input_tokens_mean =
        (!counted.is_empty()).then(|| counted.iter().sum::<f64>() / counted.len() as f64);
    info.prompts = prompts.len();
    info.bytes = prompts.iter().map(PromptSpec::size_bytes).sum();
}

/// A trace's prompts (one per request) and arrivals; nothing else may set the lengths.
fn from_trace(
    base: &Base<'_>,
    w: &WorkloadPlan,
    path: &std::path::Path,
    tokenizer: Option<&Tokenizer>,
    mut cycle: CycleWorkload,
    seed: u64,
) -> Result<(Vec<PromptSpec>, WorkloadInfo, CycleWorkload), SynthError> {
    let given = [
        (
            base.prompts.is_some() || base.prompt.is_some(),
            "--prompts / --prompt",
        ),
        (
            w.input_tokens.is_some() || w.count.is_some(),
            "--input-tokens",
        ),
        (
            w.output_tokens.is_some(),
            "--output-tokens (the trace gives them)",
        ),
        (
            w.shared_prefix_tokens.is_some(),
            "--shared-prefix-tokens (hash_ids share)",
        ),
        (cycle.is_conversation(), "--turns"),
    ];
    if let Some((_, what)) = given.iter().find(|(g, _)| *g) {
        return Err(key(
            "trace",
            format!("a trace gives every request's lengths: drop {what}"),
        ));
    }
    let scale = w.time_scale.unwrap_or(1.0);
    if !(scale.is_finite() && scale > 0.0 && scale <= 1000.0) {
        return Err(key("time_scale", "a factor above 0, at most 1000"));
    }
    let r = super::trace::load(path, scale, tokenizer, seed)?;
    let n = r.prompts.len();
    cycle.trace_at_ms = r.at_ms;
    let span_ms = cycle.trace_at_ms.last().copied().unwrap_or(0);
    let info = WorkloadInfo {
        source: path.display().to_string(),
        format: r.format.into(),
        prompts: n,
        bytes: r.prompts.iter().map(PromptSpec::size_bytes).sum(),
        tokenizer: tokenizer.map(|t| t.path().to_string()),
        input_lengths: if tokenizer.is_some() {
            "exact"
        } else {
            "approximate"
        }
        .into(),
        output_tokens: Some("the trace's".into()),
        trace: Some(format!(
            "{n} requests over {:.1} s, time scale {scale}",
            span_ms as f64 / 1e3
        )),
        input_tokens_mean: Some(
            r.prompts
                .iter()
                .filter_map(|p| p.input_tokens)
                .map(f64::from)
                .sum::<f64>()
                / n as f64,
        ),
        ..WorkloadInfo::default()
    };
    Ok((r.prompts, info, cycle))
}

/// The cycles' conversation settings from `[workload]`.
pub fn cycle_workload(w: Option<&WorkloadPlan>) -> Result<CycleWorkload, SynthError> {
    let Some(w) = w else {
        return Ok(CycleWorkload::default());
    };
    let turns = w.turns.unwrap_or(0);
    if turns > 1000 {
        return Err(key("turns", "at most 1000 turns a conversation"));
    }
    let think_time = match &w.think_time {
        None => std::time::Duration::ZERO,
        Some(t) => humantime::parse_duration(t).map_err(|e| {
            key(
                "think_time",
                format!("{t:?} is not a duration ({e}); e.g. 2s"),
            )
        })?,
    };
    let think_exponential = match w.think.as_deref() {
        None | Some("fixed") => false,
        Some("exponential") => true,
        Some(o) => return Err(key("think", format!("{o:?}: use fixed or exponential"))),
    };
    if turns <= 1 && (w.think_time.is_some() || w.think.is_some()) {
        return Err(key(
            "turns",
            "think_time / think apply to conversations: give turns = 2 or more",
        ));
    }
    Ok(CycleWorkload {
        turns,
        think_time,
        think_exponential,
        ..CycleWorkload::default()
    })
}

fn conversation_words(w: &WorkloadPlan) -> Result<Option<String>, SynthError> {
    let c = cycle_workload(Some(w))?;
    Ok(c.is_conversation().then(|| {
        format!(
            "{} turns, think time {} {}",
            c.turns,
            humantime::format_duration(c.think_time),
            if c.think_exponential {
                "exponential"
            } else {
                "fixed"
            }
        )
    }))
}

/// One synthetic prompt of `n` tokens: exact by the tokenizer, else about `n`.
fn made(t: Option<&Tokenizer>, n: u32, rng: &mut SplitMix64) -> Result<PromptSpec, SynthError> {
    let exact = match t {
        Some(t) => t.exact(n, rng)?,
        None => None,
    };
    let text = exact.unwrap_or_else(|| tokens::approximate(n, rng));
    Ok(PromptSpec {
        input_tokens: Some(n),
        ..PromptSpec::plain(text)
    })
}

/// Puts a system prompt of `p` tokens before the share of prompts the plan says (prefix `i mod
/// G` for prompt `i`); returns how it is shared, in words.
fn shared_prefix(
    w: &WorkloadPlan,
    p: u32,
    t: Option<&Tokenizer>,
    rng: &mut SplitMix64,
    prompts: &mut [PromptSpec],
) -> Result<String, SynthError> {
    if !(1..=tokens::MAX_TOKENS).contains(&p) {
        return Err(key(
            "shared_prefix_tokens",
            format!("from 1 to {}", tokens::MAX_TOKENS),
        ));
    }
    let fraction = w.shared_prefix_fraction.unwrap_or(1.0);
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(key("shared_prefix_fraction", "a share above 0, at most 1"));
    }
    let groups = w.shared_prefix_groups.unwrap_or(1);
    if groups == 0 || groups > 10_000 {
        return Err(key("shared_prefix_groups", "from 1 to 10000"));
    }
    let prefixes = (0..groups)
        .map(|_| made(t, p, rng).map(|s| s.text))
        .collect::<Result<Vec<_>, _>>()?;
    // The first ceil(fraction x n) prompts (the seeded choice mixes them across requests).
    let carrying = ((fraction * prompts.len() as f64).ceil() as usize).min(prompts.len());
    for (i, q) in prompts.iter_mut().take(carrying).enumerate() {
        let prefix = &prefixes[i % prefixes.len()];
        let mut messages: Vec<serde_json::Value> = if q.messages_json.is_empty() {
            vec![serde_json::json!({"role": "user", "content": q.text})]
        } else {
            serde_json::from_str(&q.messages_json).unwrap_or_default()
        };
        messages.insert(0, serde_json::json!({"role": "system", "content": prefix}));
        q.messages_json = serde_json::Value::Array(messages).to_string();
        q.text = format!("{prefix}\n\n{}", q.text);
        q.input_tokens = q.input_tokens.map(|n| n + p);
    }
    let share = if carrying == prompts.len() {
        "all prompts".to_string()
    } else {
        format!("{carrying} of {} prompts", prompts.len())
    };
    Ok(format!(
        "{p} tokens, {groups} prefix{}, {share}",
        if groups == 1 { "" } else { "es" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tokenizers/tiny-bpe/tokenizer.json")
    }

    const BASE: Base<'static> = Base {
        prompts: None,
        prompt: None,
        default_prompt: "hi",
    };

    #[test]
    fn synthetic_prompts_have_exact_lengths_with_a_tokenizer() {
        let w = WorkloadPlan {
            tokenizer: Some(tiny()),
            input_tokens: Some("uniform:20-60".into()),
            output_tokens: Some("16".into()),
            count: Some(10),
            ..Default::default()
        };
        let (p, info, _) = compile(&BASE, Some(&w), 1).unwrap();
        assert_eq!(p.len(), 10);
        assert_eq!(info.input_lengths, "exact");
        let t = Tokenizer::load(&tiny()).unwrap();
        for q in &p {
            let n = q.input_tokens.unwrap();
            assert!((20..=60).contains(&n));
            assert_eq!(t.count(&q.text).unwrap(), n as usize);
            assert_eq!((q.max_tokens, q.force_output), (Some(16), true));
        }
        assert_eq!(compile(&BASE, Some(&w), 1).unwrap().0, p, "seeded");
        let (_, approx, _) = compile(
            &BASE,
            Some(&WorkloadPlan {
                tokenizer: None,
                ..w
            }),
            1,
        )
        .unwrap();
        assert_eq!(approx.input_lengths, "approximate");
    }

    #[test]
    fn a_shared_prefix_goes_before_the_share_asked_for() {
        let w = WorkloadPlan {
            tokenizer: Some(tiny()),
            input_tokens: Some("10".into()),
            count: Some(8),
            shared_prefix_tokens: Some(100),
            shared_prefix_fraction: Some(0.5),
            shared_prefix_groups: Some(2),
            ..Default::default()
        };
        let (p, info, _) = compile(&BASE, Some(&w), 2).unwrap();
        assert_eq!(
            info.shared_prefix.as_deref(),
            Some("100 tokens, 2 prefixes, 4 of 8 prompts")
        );
        let sys = |q: &PromptSpec| {
            let m: serde_json::Value = serde_json::from_str(&q.messages_json).ok()?;
            m[0]["content"].as_str().map(str::to_string)
        };
        assert_eq!(sys(&p[0]), sys(&p[2]));
        assert_ne!(sys(&p[0]), sys(&p[1]));
        assert!(p[4].messages_json.is_empty());
        // Counted whole: prefix, separator and prompt.
        assert!(p[0].input_tokens.unwrap() >= 110);
    }

    #[test]
    fn contradictions_are_refused_naming_the_key() {
        let w = WorkloadPlan {
            input_tokens: Some("10".into()),
            ..Default::default()
        };
        let b = Base {
            prompts: Some("builtin"),
            ..BASE
        };
        let e = compile(&b, Some(&w), 0).unwrap_err().to_string();
        assert!(e.contains("--input-tokens"), "{e}");
        let w = WorkloadPlan {
            shared_prefix_groups: Some(3),
            ..Default::default()
        };
        let e = compile(&BASE, Some(&w), 0).unwrap_err().to_string();
        assert!(e.contains("shared-prefix-tokens"), "{e}");
        let w = WorkloadPlan {
            input_tokens: Some("lognormal:1,x".into()),
            ..Default::default()
        };
        assert!(compile(&BASE, Some(&w), 0).is_err());
    }
}
