//! `tokengun run`'s workload flags (the `[workload]` plan table): token lengths by a local
//! tokenizer, output lengths, shared prefixes.

use crate::plan::synth::WorkloadPlan;
use clap::Args;
use std::path::PathBuf;

/// Flags that make or shape the prompts; each overrides its `[workload]` key.
#[derive(Args, Debug, Default, Clone)]
pub struct WorkloadArgs {
    /// A local Hugging Face tokenizer.json: prompt lengths are counted, and made, exactly by it
    /// [default: none, lengths approximate at 4 characters a token].
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Synthetic prompts of this many input tokens: N, uniform:MIN-MAX, normal:MEAN,SD or
    /// lognormal:MEDIAN,SIGMA (seeded); instead of --prompt/--prompts.
    #[arg(long, value_name = "DIST")]
    pub input_tokens: Option<String>,
    /// Output tokens each request asks for (same forms), with ignore_eos/min_tokens where the
    /// API has them, so outputs run to their length.
    #[arg(long, value_name = "DIST")]
    pub output_tokens: Option<String>,
    /// How many synthetic prompts --input-tokens makes [default: 64].
    #[arg(long, value_name = "N")]
    pub prompt_count: Option<u32>,
    /// A system prompt of this many tokens put before the prompts (prefix caching).
    #[arg(long, value_name = "TOKENS")]
    pub shared_prefix_tokens: Option<u32>,
    /// The share of prompts (0-1] that carry the shared prefix [default: 1].
    #[arg(long, value_name = "SHARE")]
    pub shared_prefix_fraction: Option<f64>,
    /// Distinct shared prefixes, prompt i taking prefix i mod G [default: 1].
    #[arg(long, value_name = "G")]
    pub shared_prefix_groups: Option<u32>,
    /// Turns per conversation: each sends its history and the answers it got; a level then
    /// counts conversations [default: none, independent requests].
    #[arg(long, value_name = "K")]
    pub turns: Option<u32>,
    /// Between an answer and the conversation's next turn, e.g. 2s [default: 0s].
    #[arg(long, value_name = "DURATION")]
    pub think_time: Option<String>,
    /// Think times exponential around --think-time (seeded) instead of fixed.
    #[arg(long)]
    pub think_exponential: bool,
    /// Replay a trace: Mooncake JSONL (timestamp ms, input_length, output_length, hash_ids) or
    /// CSV (timestamp,input_tokens,output_tokens), as one open-loop level.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Trace offsets multiplied by this: 2 replays twice as slow, 0.5 twice as fast [default: 1].
    #[arg(long, value_name = "FACTOR")]
    pub time_scale: Option<f64>,
    /// Find the highest concurrency (closed/burst) or rate (open) meeting the SLO, by bracketing
    /// then bisection, instead of running --levels: `slo`.
    #[arg(long, value_name = "MODE", value_parser = ["slo"])]
    pub search: Option<String>,
    /// The search's first level [default: 1].
    #[arg(long, value_name = "LEVEL")]
    pub search_start: Option<f64>,
    /// The search's lowest level [default: 1; 0.1 req/s for rates].
    #[arg(long, value_name = "LEVEL")]
    pub search_min: Option<f64>,
    /// The search's highest level [default: 1024; 1000 req/s for rates].
    #[arg(long, value_name = "LEVEL")]
    pub search_max: Option<f64>,
    /// The search's SLO includes TTFT p99 at most this, e.g. 2s [default: not included].
    #[arg(long, value_name = "DURATION")]
    pub search_ttft_p99: Option<String>,
    /// Share of a level's requests that must meet --slo-tokens-per-s/--slo-ttft [default: 0.95].
    #[arg(long, value_name = "SHARE")]
    pub search_good_share: Option<f64>,
    /// Runs the answer needs, all meeting the SLO [default: 2].
    #[arg(long, value_name = "N")]
    pub search_repeats: Option<u32>,
}

impl WorkloadArgs {
    /// The `[search]` settings given as flags, None when none was.
    pub fn search_plan(&self) -> Option<crate::plan::search_keys::SearchPlan> {
        let s = crate::plan::search_keys::SearchPlan {
            mode: self.search.clone(),
            start: self.search_start,
            min: self.search_min,
            max: self.search_max,
            ttft_p99: self.search_ttft_p99.clone(),
            good_share: self.search_good_share,
            repeats: self.search_repeats,
            ..Default::default()
        };
        (s != crate::plan::search_keys::SearchPlan::default()).then_some(s)
    }

    /// The `[workload]` settings given as flags, None when none was.
    pub fn as_plan(&self) -> Option<WorkloadPlan> {
        let w = WorkloadPlan {
            tokenizer: self.tokenizer.clone(),
            input_tokens: self.input_tokens.clone(),
            output_tokens: self.output_tokens.clone(),
            count: self.prompt_count,
            shared_prefix_tokens: self.shared_prefix_tokens,
            shared_prefix_fraction: self.shared_prefix_fraction,
            shared_prefix_groups: self.shared_prefix_groups,
            turns: self.turns,
            think_time: self.think_time.clone(),
            think: self.think_exponential.then(|| "exponential".to_string()),
            trace: self.trace.clone(),
            time_scale: self.time_scale,
        };
        (w != WorkloadPlan::default()).then_some(w)
    }
}
