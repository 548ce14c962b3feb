//! The units a cycle's schedule releases: what one request sends ([`Selected`]), how it ended
//! ([`Fired`]), and an open loop's arrivals (the rate's, or a trace's with their prompts).

use bytes::Bytes;
use std::time::Duration;
use tokengun_common::CyclePlan;
use tokengun_common::schedule::Arrivals;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What one request sends: its prompt, the body, and its place in a conversation.
pub(crate) struct Selected {
    pub prompt: usize,
    pub body: Bytes,
    /// 1-based; 0 when not a conversation.
    pub conversation: u32,
    pub turn: u32,
    /// Keep the answer's text (a later turn sends it back).
    pub keep_answer: bool,
}

/// How one request ended, for whatever comes after it.
pub(crate) struct Fired {
    pub ended: Instant,
    pub failed: bool,
    /// The answer text, when it was kept.
    pub answer: String,
}

/// An open loop's arrivals, offsets from the origin, each with the prompt a trace gives it.
pub(crate) fn arrivals(
    plan: &CyclePlan,
) -> Box<dyn Iterator<Item = (Duration, Option<usize>)> + Send + '_> {
    let trace = &plan.workload;
    if trace.trace_at_ms.is_empty() {
        Box::new(
            Arrivals::new(plan.arrival, plan.rate_per_s, plan.duration, plan.seed)
                .map(|at| (at, None)),
        )
    } else {
        // A trace's arrivals replace the rate's schedule; arrival i sends prompt i (the trace
        // compiled one prompt per arrival, in order).
        Box::new(
            trace
                .trace_at_ms
                .iter()
                .enumerate()
                .map(|(i, ms)| (Duration::from_millis(*ms), Some(i))),
        )
    }
}

/// Joins every finished worker; returns how many panicked (they wrote no record).
pub(crate) fn reap(workers: &mut JoinSet<()>) -> u32 {
    let mut lost = 0;
    while let Some(r) = workers.try_join_next() {
        if r.is_err() {
            lost += 1;
        }
    }
    lost
}
