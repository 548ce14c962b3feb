//! Records and cycle descriptions shared by the stats modules' tests.

use super::CycleInfo;
use crate::record::{OutcomeKind, RequestRecord, ServerTimings, TokenChunk, TokenSource};

/// A completed request sent at `start_ms` with `n` tokens `gap_ms` apart from `first_ms`.
pub(crate) fn done(id: u32, start_ms: u64, first_ms: u64, n: u32, gap_ms: u64) -> RequestRecord {
    let timeline: Vec<TokenChunk> = (0..n)
        .map(|i| TokenChunk {
            offset_ns: (first_ms + u64::from(i) * gap_ms) * 1_000_000,
            tokens: 1,
        })
        .collect();
    RequestRecord {
        cycle_id: 1,
        request_id: id,
        prompt_index: 0,
        workload: Default::default(),
        target_index: 0,
        intended_start_ns: start_ms * 1_000_000,
        dispatched_ns: start_ms * 1_000_000,
        sent_ns: start_ms * 1_000_000,
        first_byte_ns: Some(first_ms * 1_000_000),
        first_token_ns: timeline.first().map(|c| c.offset_ns),
        first_answer_ns: timeline.first().map(|c| c.offset_ns),
        last_token_ns: timeline.last().map(|c| c.offset_ns),
        end_ns: timeline
            .last()
            .map_or(start_ms * 1_000_000 + 1, |c| c.offset_ns),
        status_code: Some(200),
        outcome: OutcomeKind::Completed,
        error: String::new(),
        output_tokens: u64::from(n),
        token_source: TokenSource::Server,
        counted_tokens: u64::from(n),
        utf8_merged_tokens: 0,
        reasoning_tokens: 0,
        prompt_tokens: Some(5),
        server: ServerTimings::default(),
        done_reason: "stop".into(),
        timeline,
    }
}

/// A burst cycle of `level` requests.
pub(super) fn info(level: u32) -> CycleInfo {
    CycleInfo {
        model: "m".into(),
        shape: "burst".into(),
        level: level.to_string(),
        concurrency: level,
        rate_per_s: None,
        expected_requests: level,
        window_ns: None,
    }
}
