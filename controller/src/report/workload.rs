//! The report's Workload section: what the prompts were (run.json's `workload`), whether the
//! output lengths were forced, the server's prompt counts against the lengths meant, its cached
//! tokens, and TTFT by conversation turn.

use super::doc::{Block, Table};
use super::load::RunData;
use super::util::fmt_num;
use std::collections::BTreeMap;
use tokengun_common::run_dir::RequestRow;

/// A level's prompt figures, from its request_summary.csv.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptFigures {
    /// Requests whose intended and server-counted prompt tokens are both known.
    pub compared: usize,
    /// Means over those requests.
    pub intended_mean: Option<f64>,
    pub server_mean: Option<f64>,
    /// Requests with a cached-token count from the server, and its mean.
    pub cached_counted: usize,
    pub cached_mean: Option<f64>,
    /// The server's prompt tokens, mean over requests that report them (for the cache share).
    pub prompt_mean: Option<f64>,
    /// Turn -> (requests, TTFT p50 s, TTFT p90 s), completed requests of conversations only.
    pub ttft_by_turn: BTreeMap<u32, (usize, f64, f64)>,
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

impl PromptFigures {
    pub fn from_rows(rows: &[RequestRow]) -> Self {
        let pairs: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| r.intended_prompt_tokens.zip(r.prompt_tokens))
            .collect();
        let cached: Vec<f64> = rows.iter().filter_map(|r| r.server_cached_tokens).collect();
        let prompt: Vec<f64> = rows.iter().filter_map(|r| r.prompt_tokens).collect();
        let mut turns: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.completed) {
            if let (Some(t), Some(ttft)) = (r.turn, r.ttft_s) {
                turns.entry(t as u32).or_default().push(ttft);
            }
        }
        Self {
            compared: pairs.len(),
            intended_mean: mean(&pairs.iter().map(|p| p.0).collect::<Vec<_>>()),
            server_mean: mean(&pairs.iter().map(|p| p.1).collect::<Vec<_>>()),
            cached_counted: cached.len(),
            cached_mean: mean(&cached),
            prompt_mean: mean(&prompt),
            ttft_by_turn: turns
                .into_iter()
                .map(|(t, mut v)| {
                    v.sort_by(f64::total_cmp);
                    (t, (v.len(), pct(&v, 0.5), pct(&v, 0.9)))
                })
                .collect(),
        }
    }
}

/// What the run's prompts were, in words.
fn what(data: &RunData) -> Option<String> {
    let w = data.meta.workload.as_ref()?;
    let mut s = format!(
        "{} prompt{} from {}{} ({} bytes carried to each agent).",
        w.prompts,
        if w.prompts == 1 { "" } else { "s" },
        w.source,
        if w.format.is_empty() {
            String::new()
        } else {
            format!(" ({})", w.format)
        },
        w.bytes
    );
    match w.input_lengths.as_str() {
        "exact" => s.push_str(&format!(
            " Prompt lengths are exact by {}.",
            w.tokenizer.as_deref().unwrap_or("the tokenizer")
        )),
        "approximate" => s.push_str(
            " Prompt lengths are approximate (4 characters a token): give --tokenizer for exact ones.",
        ),
        _ => s.push_str(" Prompt lengths were not counted (no --tokenizer)."),
    }
    if let Some(d) = &w.input_tokens {
        s.push_str(&format!(" Input tokens asked for: {d}."));
    }
    if let Some(m) = w.input_tokens_mean {
        s.push_str(&format!(" Mean prompt: {} tokens.", fmt_num(m)));
    }
    if let Some(t) = &w.trace {
        s.push_str(&format!(" Trace replay: {t}"));
        let lag = data
            .levels
            .first()
            .map(|l| (l.send_lag_p99_s, l.schedule_valid));
        match lag {
            Some((Some(p99), true)) => s.push_str(&format!(
                "; tokengun kept up with it (p99 send lag {} ms).",
                fmt_num(p99 * 1e3)
            )),
            Some((Some(p99), false)) => s.push_str(&format!(
                "; tokengun FELL BEHIND it (p99 send lag {} ms): its latencies still count from the trace's instants, but the load it meant was not all delivered on time.",
                fmt_num(p99 * 1e3)
            )),
            _ => s.push('.'),
        }
    }
    if let Some(c) = &w.conversation {
        s.push_str(&format!(
            " Conversations: {c}; a level counts conversations."
        ));
    }
    if let Some(p) = &w.shared_prefix {
        s.push_str(&format!(" Shared system prompt: {p}."));
    }
    if let Some(d) = &w.output_tokens {
        let forced = match data.meta.api.map(|a| a.family()) {
            Some("openai") => {
                "asked to run to length with ignore_eos and min_tokens (vLLM honours both, llama.cpp and SGLang ignore_eos; a server that ignores them may stop early)"
            }
            Some(_) => {
                "not forced: Ollama's API has no ignore_eos, so a request may stop at the model's end token before its length"
            }
            None => "forced where the API allows",
        };
        s.push_str(&format!(" Output tokens asked for: {d}, {forced}."));
    }
    Some(s)
}

/// The server's prompt counts against the lengths meant, over every level.
fn length_check(data: &RunData) -> Option<String> {
    let (mut n, mut intended, mut server) = (0usize, 0.0, 0.0);
    for l in &data.levels {
        let p = &l.prompt;
        if let (Some(i), Some(s)) = (p.intended_mean, p.server_mean) {
            n += p.compared;
            intended += i * p.compared as f64;
            server += s * p.compared as f64;
        }
    }
    if n == 0 {
        return None;
    }
    let (i, s) = (intended / n as f64, server / n as f64);
    let diff = s - i;
    let approx = data
        .meta
        .workload
        .as_ref()
        .is_some_and(|w| w.input_lengths != "exact");
    let verdict = if diff.abs() <= (0.01 * i).max(1.0) {
        "agree".to_string()
    } else {
        format!(
            "differ: the server counted {} tokens {} a prompt ({}%){}",
            fmt_num(diff.abs()),
            if diff > 0.0 { "more per" } else { "fewer per" },
            fmt_num(100.0 * diff / i.max(1.0)),
            if approx {
                "; the lengths meant are estimates (no --tokenizer)"
            } else if diff > 0.0 {
                "; a chat template, a BOS token or the model's own tokenizer adds them"
            } else {
                "; the server's tokenizer is not the one given"
            }
        )
    };
    Some(format!(
        "Prompt lengths over {n} requests: meant {} tokens on average, the server counted {}: they {verdict}.",
        fmt_num(i),
        fmt_num(s)
    ))
}

/// The SLO search's heading, answer with its bracket, and every probe in order.
pub fn search_blocks(data: &RunData) -> Vec<Block> {
    let Some(s) = &data.meta.search else {
        return Vec::new();
    };
    let answer = match (s.answer, s.failed_above) {
        (Some(a), Some(f)) => format!(
            "The highest level meeting the SLO is {}: the boundary lies between {} and {} (the answer met it in every run, the level above failed).",
            fmt_num(a),
            fmt_num(a),
            fmt_num(f)
        ),
        (Some(a), None) => format!(
            "Every level up to the search's ceiling, {}, met the SLO: the boundary is above it.",
            fmt_num(a)
        ),
        (None, Some(f)) => format!("No level met the SLO, not even {}.", fmt_num(f)),
        (None, None) => "The search ended before an answer.".into(),
    };
    let rows = s
        .probes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            vec![
                (i + 1).to_string(),
                p.label.clone(),
                if p.met { "met" } else { "failed" }.into(),
                fmt_num(p.goodput_requests_per_s),
                p.why.clone(),
            ]
        })
        .collect();
    vec![
        Block::Heading("SLO search".into()),
        Block::Para(format!(
            "SLO: {}. {answer} Search ended: {}.",
            s.slo, s.reason
        )),
        Block::Table(Table {
            headers: vec![
                "Probe".into(),
                "Level".into(),
                "SLO".into(),
                "Goodput (req/s)".into(),
                "Why not".into(),
            ],
            rows,
        }),
    ]
}

/// The Workload heading and its blocks; nothing for a run with no workload to say.
pub fn blocks(data: &RunData) -> Vec<Block> {
    let mut out = Vec::new();
    let mut paras: Vec<String> = what(data).into_iter().collect();
    paras.extend(length_check(data));
    let any_cache = data.levels.iter().any(|l| l.prompt.cached_counted > 0);
    if any_cache && data.meta.workload.is_some() {
        let mut t = Table {
            headers: vec![
                "Level".into(),
                "Prompt tokens (server, mean)".into(),
                "Cached tokens (mean)".into(),
                "Cached share".into(),
            ],
            rows: Vec::new(),
        };
        for l in &data.levels {
            let p = &l.prompt;
            let share = p
                .cached_mean
                .zip(p.prompt_mean)
                .filter(|(_, m)| *m > 0.0)
                .map(|(c, m)| format!("{}%", fmt_num(100.0 * c / m)));
            t.rows.push(vec![
                l.label.clone(),
                p.prompt_mean.map(fmt_num).unwrap_or_default(),
                p.cached_mean.map(fmt_num).unwrap_or_default(),
                share.unwrap_or_default(),
            ]);
        }
        paras.push("The server's own count of prompt tokens it reused from its cache:".into());
        out.push(Block::Table(t));
    }
    let turns: Vec<u32> = {
        let mut v: Vec<u32> = data
            .levels
            .iter()
            .flat_map(|l| l.prompt.ttft_by_turn.keys().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    if !turns.is_empty() {
        let mut headers = vec!["Level".to_string()];
        headers.extend(turns.iter().map(|t| format!("Turn {t} TTFT p50 / p90 (s)")));
        let rows = data
            .levels
            .iter()
            .map(|l| {
                let mut row = vec![l.label.clone()];
                row.extend(turns.iter().map(|t| {
                    l.prompt
                        .ttft_by_turn
                        .get(t)
                        .map(|(_, p50, p90)| format!("{} / {}", fmt_num(*p50), fmt_num(*p90)))
                        .unwrap_or_default()
                }));
                row
            })
            .collect();
        out.push(Block::Para(
            "TTFT by conversation turn (does the prefix cache help later turns?):".into(),
        ));
        out.push(Block::Table(Table { headers, rows }));
    }
    if paras.is_empty() && out.is_empty() {
        return out;
    }
    let mut blocks = vec![Block::Heading("Workload".into())];
    blocks.extend(paras.into_iter().map(Block::Para));
    blocks.extend(out);
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(intended: f64, server: f64, cached: f64, turn: f64, ttft: f64) -> RequestRow {
        RequestRow {
            completed: true,
            intended_prompt_tokens: Some(intended),
            prompt_tokens: Some(server),
            server_cached_tokens: Some(cached),
            turn: Some(turn),
            ttft_s: Some(ttft),
            ..RequestRow::default()
        }
    }

    #[test]
    fn figures_compare_lengths_and_split_ttft_by_turn() {
        let f = PromptFigures::from_rows(&[
            row(100.0, 110.0, 0.0, 1.0, 0.5),
            row(200.0, 210.0, 150.0, 2.0, 0.1),
            row(200.0, 210.0, 150.0, 2.0, 0.3),
        ]);
        assert_eq!(f.compared, 3);
        assert_eq!(f.intended_mean, Some(500.0 / 3.0));
        assert_eq!(f.ttft_by_turn[&1], (1, 0.5, 0.5));
        assert_eq!(f.ttft_by_turn[&2], (2, 0.1, 0.3));
        assert_eq!(f.cached_mean, Some(100.0));
        let mut data = RunData::default();
        let mut level = super::super::load::LevelRow {
            label: "2".into(),
            ..Default::default()
        };
        level.prompt = f;
        data.levels.push(level);
        let s = length_check(&data).unwrap();
        assert!(s.contains("10 tokens more per"), "{s}");
        assert!(!blocks(&data).is_empty());
    }
}
