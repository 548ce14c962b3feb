//! Findings from the server's own account (registered in `FINDINGS`): what a level's TTFT was
//! made of, model loads kept out of the TTFT percentiles, and whether the server's token counts
//! agree with the stream's.

use super::{Ctx, pct};
use crate::report::load::LevelRow;
use crate::report::util::{fmt_num, fmt_s};
use tokengun_common::stats::ServerAccount;

/// A part of TTFT at or above this share of it dominates.
const DOMINANT_SHARE: f64 = 0.6;

fn account(l: &LevelRow) -> Option<&ServerAccount> {
    l.server_account.as_ref()
}

/// The TTFT parts of a level (queue, load, prefill), mean seconds, when it has a breakdown.
fn ttft_parts(l: &LevelRow) -> Option<[f64; 3]> {
    let a = account(l).filter(|a| a.breakdown_requests > 0)?;
    Some([
        a.queue_s_mean.unwrap_or(0.0),
        a.load_s_mean.unwrap_or(0.0),
        a.prefill_s_mean.unwrap_or(0.0),
    ])
}

/// The highest whole level whose TTFT one part dominates: queue (add slots), load, or prefill.
pub(super) fn ttft_breakdown(c: &Ctx<'_>) -> Option<String> {
    let (l, parts) = c
        .whole
        .iter()
        .rev()
        .find_map(|l| ttft_parts(l).map(|p| (*l, p)))?;
    let total: f64 = parts.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let (i, part) = parts.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
    let share = part / total;
    if share < DOMINANT_SHARE {
        return Some(format!(
            "TTFT at {} (mean {}): queue {}, model load {}, prefill {}, by the server's own timings; no part dominates.",
            c.name(l),
            fmt_s(total),
            fmt_s(parts[0]),
            fmt_s(parts[1]),
            fmt_s(parts[2])
        ));
    }
    let advice = match i {
        0 => {
            "requests waited for a free slot before the server started on them: add slots (llama.cpp -np, OLLAMA_NUM_PARALLEL) or send less at once"
        }
        1 => {
            "the server was loading the model: warm it up first or keep it loaded longer (keep_alive)"
        }
        _ => {
            "the server was evaluating prompts: shorter prompts, a prompt cache, or faster prefill hardware"
        }
    };
    Some(format!(
        "TTFT at {} is {} {} (mean {} of {}, by the server's own timings): {advice}.",
        c.name(l),
        pct(share),
        ["queue", "model load", "prefill"][i],
        fmt_s(*part),
        fmt_s(total),
    ))
}

/// Requests that paid a model load: reported apart, kept out of the TTFT percentiles.
pub(super) fn model_loads(c: &Ctx<'_>) -> Option<String> {
    let loaded: Vec<(&LevelRow, &ServerAccount)> = c
        .levels
        .iter()
        .filter_map(|l| account(l).filter(|a| a.model_loads > 0).map(|a| (l, a)))
        .collect();
    let n: u32 = loaded.iter().map(|(_, a)| a.model_loads).sum();
    let (at, longest) = loaded
        .iter()
        .filter_map(|(l, a)| a.model_load_max_s.map(|s| (*l, s)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    Some(format!(
        "{n} request(s) paid a model load (the longest {}, at {}): their TTFT measures the load, so they are left out of the TTFT percentiles and counted apart (cycles.csv model_loads).",
        fmt_s(longest),
        c.name(at)
    ))
}

/// Whether the server's output token counts agree with the tokens seen in the streams.
pub(super) fn token_truth(c: &Ctx<'_>) -> Option<String> {
    let accounts: Vec<&ServerAccount> = c.levels.iter().filter_map(account).collect();
    let sum = |f: fn(&ServerAccount) -> u32| accounts.iter().map(|a| f(a)).sum::<u32>();
    let checked = sum(|a| a.token_checked);
    if checked == 0 {
        return None;
    }
    let (end, mismatch) = (sum(|a| a.token_end_token), sum(|a| a.token_mismatch));
    let merged = sum(|a| a.token_utf8_merged);
    let mut notes = Vec::new();
    if end > 0 {
        notes.push(format!(
            "{end} of them count one more, the end-of-sequence token the server adds on a stop, which carries no text"
        ));
    }
    if merged > 0 {
        notes.push(format!(
            "{merged} had tokens held back inside a multi-byte character and sent with the next token's event, so the stream showed fewer events than tokens; tokengun counts those tokens at those events"
        ));
    }
    let end_note = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    if mismatch == 0 {
        let per_chunk = accounts
            .iter()
            .filter_map(|a| a.tokens_per_chunk)
            .fold(0.0, f64::max);
        let chunks = if per_chunk <= 0.0 {
            String::new()
        } else if per_chunk <= 1.0 + 1e-9 {
            " Every streamed event carried one token.".to_string()
        } else {
            format!(
                " Streamed events carried up to {} tokens each on average in a level.",
                fmt_num(per_chunk)
            )
        };
        return Some(format!(
            "Token counts: the server's own count agrees with the tokens seen in the stream for all {checked} requests it counted{end_note}.{chunks}"
        ));
    }
    let per_chunk = accounts
        .iter()
        .filter(|a| a.token_mismatch > 0)
        .filter_map(|a| a.tokens_per_chunk)
        .fold(0.0, f64::max);
    let why = if per_chunk > 1.05 {
        format!(
            " The server sent up to {} tokens per event: it packs several tokens into one chunk (batched streaming or speculative decoding). The token figures use the server's count, and ITL spreads the extra tokens evenly over each request's events, so it is per token (exact only where each event's count is known).",
            fmt_num(per_chunk)
        )
    } else {
        " Events were lost or counted twice: check the stream (request_summary.csv TokenAgreement names each request).".into()
    };
    Some(format!(
        "Token counts differ: for {mismatch} of {checked} requests the server's count is not the tokens seen in the stream{end_note}.{why}"
    ))
}

/// The server's own metrics say requests waited: the highest level at which it held some back.
pub(super) fn server_waiting(c: &Ctx<'_>) -> Option<String> {
    let (l, n) = c
        .whole
        .iter()
        .rev()
        .find_map(|l| l.server_waiting_max.filter(|n| *n >= 1.0).map(|n| (*l, n)))?;
    let first = c
        .whole
        .iter()
        .find(|l| l.server_waiting_max.is_some_and(|n| n >= 1.0))
        .map_or_else(|| c.name(l), |f| c.name(f));
    Some(format!(
        "The server's own metrics (server_metrics.csv) show requests waiting for a slot from {first} on: up to {} at {}. Requests beyond its slots queue inside the server, so their TTFT includes that wait.",
        fmt_num(n),
        c.name(l)
    ))
}
