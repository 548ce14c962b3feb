//! What a run's workload was (`run.json`'s `workload`): where its prompts came from, how many and
//! how large, whether their token lengths are exact, and what output lengths were asked for, so
//! the report can say what the lengths mean and whether the server was made to honour them.

use serde::{Deserialize, Serialize};

/// The workload of a run, as compiled before its first level.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadInfo {
    /// `prompt`, `builtin`, `synthetic`, `tokens` (made to token lengths), `trace`, or the file.
    pub source: String,
    /// The file's format (`plain text`, `JSONL`, `ShareGPT JSON`, `Mooncake JSONL`, `CSV`), or
    /// empty.
    #[serde(default)]
    pub format: String,
    pub prompts: usize,
    /// Bytes of prompt text and options the plan carries to each agent.
    pub bytes: usize,
    /// The tokenizer.json that counted or made the prompts, if any.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// `exact` (tokenizer), `approximate` (4 characters a token), or `unknown` (prompts as
    /// written, not counted).
    pub input_lengths: String,
    /// The input length distribution asked for (`512`, `uniform:128-1024`, ...), if any.
    #[serde(default)]
    pub input_tokens: Option<String>,
    /// The output length distribution asked for; such outputs are asked to run to their length
    /// (`ignore_eos`, `min_tokens`) where the API has a way.
    #[serde(default)]
    pub output_tokens: Option<String>,
    /// Shared system prompt: its tokens and how it is shared (`all`, `50%`, `4 groups`).
    #[serde(default)]
    pub shared_prefix: Option<String>,
    /// Trace replay: requests, span and time scale, in words.
    #[serde(default)]
    pub trace: Option<String>,
    /// Conversations: turns and think time, in words.
    #[serde(default)]
    pub conversation: Option<String>,
    /// Intended prompt tokens, mean over the prompts that say.
    #[serde(default)]
    pub input_tokens_mean: Option<f64>,
}
