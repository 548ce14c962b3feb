//! Findings from what Ollama says it has loaded (`/api/ps`, registered in `FINDINGS`): a model
//! that ran partly on the CPU, and models unloaded and loaded again mid-sweep; and requests
//! refused because its queue was full (HTTP 503), told apart from other errors.

use super::Ctx;
use crate::report::util::fmt_num;

/// A model with at least this share outside GPU memory runs partly on the CPU.
const CPU_SHARE: f64 = 0.01;

/// The first level where a loaded model sat partly outside GPU memory.
pub(super) fn cpu_offload(c: &Ctx<'_>) -> Option<String> {
    let l = c
        .levels
        .iter()
        .find(|l| l.cpu_share_max.is_some_and(|s| s >= CPU_SHARE))?;
    Some(format!(
        "From level {} on, Ollama held {}% of a loaded model outside GPU memory (/api/ps size_vram against size): it ran partly on the CPU, which caps its tokens/s; a smaller quantisation, a shorter context (num_ctx) or fewer parallel slots (OLLAMA_NUM_PARALLEL) would keep it in VRAM",
        l.label,
        fmt_num(l.cpu_share_max.unwrap_or(0.0) * 100.0)
    ))
}

/// Models that were unloaded and loaded again during the sweep.
pub(super) fn reloads(c: &Ctx<'_>) -> Option<String> {
    let hit: Vec<String> = c
        .levels
        .iter()
        .filter(|l| !l.reloaded_models.is_empty())
        .map(|l| format!("{} at level {}", l.reloaded_models.join(", "), l.label))
        .collect();
    (!hit.is_empty()).then(|| {
        format!(
            "Ollama unloaded and loaded again {} mid-sweep: those levels' TTFT holds a model load; keep the model loaded (keep_alive, --keep-alive 30m) or leave memory for it (OLLAMA_MAX_LOADED_MODELS)",
            hit.join("; ")
        )
    })
}

/// Requests Ollama refused because its queue was full (HTTP 503), apart from other errors.
pub(super) fn queue_full(c: &Ctx<'_>) -> Option<String> {
    let hit: Vec<(String, u64)> = c
        .levels
        .iter()
        .filter_map(|l| {
            let n: u64 = l
                .errors_by_kind
                .split(';')
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| *k == tokengun_common::record::QUEUE_FULL_KIND)
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum();
            (n > 0).then(|| (l.label.clone(), n))
        })
        .collect();
    let (first, n) = hit.first()?;
    Some(format!(
        "The server refused {} request(s) as queue full (HTTP 503), first {n} at level {first}: its wait queue (OLLAMA_MAX_QUEUE on Ollama) was exhausted, not the model; these are counted apart from other errors",
        hit.iter().map(|h| h.1).sum::<u64>()
    ))
}

#[cfg(test)]
mod tests {
    use crate::report::findings::{FindingOptions, compute};
    use crate::report::load::LevelRow;

    fn level(label: &str) -> LevelRow {
        let mut l = LevelRow {
            label: label.into(),
            x: label.parse().unwrap_or(1.0),
            ..LevelRow::default()
        };
        l.cycle.requests = 4;
        l.cycle.completed = 4;
        l.cycle.schedule_valid = true;
        l
    }

    #[test]
    fn reloads_and_a_full_queue_are_said_with_their_levels() {
        let mut levels = vec![level("1"), level("8"), level("16")];
        levels[1].reloaded_models = vec!["qwen3:8b".into()];
        levels[2].cycle.errors_by_kind = "queue_full=5;http_error=1".into();
        let f = compute(&levels, &FindingOptions::default(), false);
        let all = f.statements.join("\n");
        assert!(all.contains("loaded again qwen3:8b at level 8"), "{all}");
        assert!(all.contains("refused 5 request(s) as queue full"), "{all}");
        assert!(all.contains("at level 16"), "{all}");
        let quiet = compute(&[level("1")], &FindingOptions::default(), false);
        assert!(!quiet.statements.join(" ").contains("queue full"));
    }
}
