//! Per-cycle statistics from request records: counts, throughput, goodput, and latency
//! percentiles from HDR histograms that merge exactly (percentiles are never averaged).
//!
//! `histogram` holds the latency distributions, `slo` the goodput objective, `cycle` the
//! mergeable accumulator, `summary` the cycle's row, `self_check` whether tokengun limited it, `server` the server's own account beside the
//! client's.

mod cycle;
mod histogram;
mod self_check;
mod server;
mod slo;
mod summary;
mod targets;

#[cfg(test)]
pub(crate) mod test_util;

pub use cycle::{CycleStats, FOLD_EDGES};
pub use histogram::{LatencyHistogram, Percentiles};
pub use self_check::{
    AGENT_CPU_LIMIT_SHARE, LOOP_DELAY_LIMIT_MS, SEND_LAG_LIMIT_S, self_check_verdict,
};
pub use server::{
    Breakdown, MODEL_LOAD_NS, ServerAccount, ServerTally, TokenAgreement, breakdown,
    paid_model_load, place_server_tokens, token_agreement,
};
pub use slo::Slo;
pub use summary::{AgentCycle, CycleInfo, CycleSummary};
pub use targets::{TargetCycle, TargetTally, imbalance};
