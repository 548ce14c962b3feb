//! Domain types and pure logic shared by the controller and the agent: no I/O but the run
//! folder's writers and readers (`run_dir`) and the credential-file readers.
#![forbid(unsafe_code)]

pub mod credentials;
pub mod file_error;
pub mod metrics;
pub mod models;
pub mod monitor;
pub mod plan;
pub mod record;
pub mod run_dir;
pub mod schedule;
pub mod server;
pub mod sources;
pub mod stats;
pub mod transport;

pub use monitor::{MonitorBatch, PowerReading, ProcessReading, ProcessRole, SourceStatus};
pub use plan::{
    Api, Arrival, CyclePlan, CycleWorkload, LoadShape, PlanError, PromptSpec, RequestOptions,
    TargetPolicy,
};
pub use record::{
    AgentSelfCheck, CycleDone, LIVE_REQUESTS_MAX, LivePhase, LiveRequest, OutcomeKind, Progress,
    Record, RecordBody, RequestRecord, RequestWorkload, ServerTimings, TokenChunk, TokenSource,
};
pub use stats::{CycleInfo, CycleStats, CycleSummary, Percentiles, Slo};

/// The study's model, prompt, levels and target: tokengun's defaults.
pub mod defaults {
    /// Default Ollama address.
    pub const TARGET: &str = "http://127.0.0.1:11434";
    /// The study's model.
    pub const MODEL: &str = "deepseek-r1:7b";
    /// The study's prompt.
    pub const PROMPT: &str = "What is the philosophical definition of time?";
    /// The study's ten concurrency levels.
    pub const LEVELS: &[u32] = &[1, 2, 4, 8, 12, 16, 24, 32, 64, 128];
    /// The shorter sweep used by `run --sim` so the demo finishes in seconds.
    pub const SIM_LEVELS: &[u32] = &[1, 2, 4, 8];
    /// Per-request tokens/s at or above which a request counts toward goodput (the study's bar).
    pub const SLO_TOKENS_PER_S: f64 = 10.0;
}

/// Turns a model name into a folder name the way the study did (`deepseek-r1:7b` -> `deepseek-r1-7b`).
pub fn path_safe(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('.').to_string();
    if s.is_empty() { "_".to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_safe_matches_the_study() {
        assert_eq!(path_safe("deepseek-r1:7b"), "deepseek-r1-7b");
        assert_eq!(
            path_safe("library/llama3.2:latest"),
            "library-llama3.2-latest"
        );
        assert_eq!(path_safe(".."), "_");
        assert_eq!(path_safe("a/../b"), "a-..-b");
    }
}
