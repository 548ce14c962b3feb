//! The live table of a cycle's in-flight requests, for the controller's console: one slot per
//! request, updated with relaxed atomics at most once per stream chunk, and read (a bounded
//! number of rows) only when progress is reported.
//!
//! Cost on the hot path: a lock on the table when a request starts and when it ends (an insert
//! and a removal in a B-tree), and two relaxed atomic stores per content chunk. Nothing per
//! token, nothing allocated per chunk.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokengun_common::{LivePhase, LiveRequest};

/// "Not yet" in an offset slot (no real offset reaches it: that is 584 years).
const NONE: u64 = u64::MAX;

fn opt(v: u64) -> Option<u64> {
    (v != NONE).then_some(v)
}

/// One in-flight request's moments so far; offsets are ns from the cycle origin.
#[derive(Debug)]
pub struct LiveSlot {
    request_id: u32,
    intended_start_ns: u64,
    dispatched_ns: u64,
    sent_ns: AtomicU64,
    first_byte_ns: AtomicU64,
    first_token_ns: AtomicU64,
    tokens: AtomicU64,
}

impl LiveSlot {
    /// The request went to the HTTP client.
    pub fn sent(&self, at_ns: u64) {
        self.sent_ns.store(at_ns, Ordering::Relaxed);
    }

    /// The response's first byte arrived.
    pub fn first_byte(&self, at_ns: u64) {
        self.first_byte_ns.store(at_ns, Ordering::Relaxed);
    }

    /// A content chunk carrying `tokens` arrived at `at_ns`; `first` when it is the first one.
    pub fn tokens(&self, at_ns: u64, tokens: u32, first: bool) {
        if first {
            self.first_token_ns.store(at_ns, Ordering::Relaxed);
        }
        self.tokens.fetch_add(u64::from(tokens), Ordering::Relaxed);
    }

    fn read(&self) -> LiveRequest {
        let tokens = self.tokens.load(Ordering::Relaxed);
        let first_token_ns = opt(self.first_token_ns.load(Ordering::Relaxed));
        LiveRequest {
            request_id: self.request_id,
            // The two figures are separate atomics: either one says tokens have come.
            phase: if tokens > 0 || first_token_ns.is_some() {
                LivePhase::InProgress
            } else {
                LivePhase::Waiting
            },
            tokens,
            intended_start_ns: self.intended_start_ns,
            dispatched_ns: self.dispatched_ns,
            sent_ns: opt(self.sent_ns.load(Ordering::Relaxed)),
            first_byte_ns: opt(self.first_byte_ns.load(Ordering::Relaxed)),
            first_token_ns,
        }
    }
}

/// Every in-flight request of one cycle, by request id.
#[derive(Debug, Default)]
pub struct LiveRequests {
    slots: Mutex<BTreeMap<u32, Arc<LiveSlot>>>,
}

/// A request's place in the table; leaving it (dropping this) removes the request.
pub struct LiveEntry<'a> {
    table: &'a LiveRequests,
    slot: Arc<LiveSlot>,
}

impl std::ops::Deref for LiveEntry<'_> {
    type Target = LiveSlot;
    fn deref(&self) -> &LiveSlot {
        &self.slot
    }
}

impl Drop for LiveEntry<'_> {
    fn drop(&mut self) {
        self.table.lock().remove(&self.slot.request_id);
    }
}

impl LiveRequests {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, Arc<LiveSlot>>> {
        // Inserts and removals cannot leave the map half-changed, so poison is moot.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a request that was just dispatched.
    pub fn enter(
        &self,
        request_id: u32,
        intended_start_ns: u64,
        dispatched_ns: u64,
    ) -> LiveEntry<'_> {
        let slot = Arc::new(LiveSlot {
            request_id,
            intended_start_ns,
            dispatched_ns,
            sent_ns: AtomicU64::new(NONE),
            first_byte_ns: AtomicU64::new(NONE),
            first_token_ns: AtomicU64::new(NONE),
            tokens: AtomicU64::new(0),
        });
        self.lock().insert(request_id, slot.clone());
        LiveEntry { table: self, slot }
    }

    /// The first `max` in-flight requests by request id (the oldest), and how many more there are.
    pub fn snapshot(&self, max: usize) -> (Vec<LiveRequest>, u32) {
        let g = self.lock();
        let rows = g.values().take(max).map(|s| s.read()).collect();
        let omitted = u32::try_from(g.len().saturating_sub(max)).unwrap_or(u32::MAX);
        (rows, omitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_lists_the_oldest_in_flight_and_counts_the_rest() {
        let table = LiveRequests::default();
        let entries: Vec<_> = (1..=5u32)
            .rev()
            .map(|id| table.enter(id, 0, u64::from(id)))
            .collect();
        let e3 = &entries[2]; // request 3
        e3.sent(5);
        e3.first_byte(7);
        e3.tokens(9, 2, true);
        e3.tokens(11, 1, false);
        let (rows, omitted) = table.snapshot(3);
        assert_eq!(
            rows.iter().map(|r| r.request_id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(omitted, 2);
        assert_eq!(rows[0].phase, LivePhase::Waiting);
        assert_eq!(rows[0].sent_ns, None);
        assert_eq!(
            rows[2],
            LiveRequest {
                request_id: 3,
                phase: LivePhase::InProgress,
                tokens: 3,
                intended_start_ns: 0,
                dispatched_ns: 3,
                sent_ns: Some(5),
                first_byte_ns: Some(7),
                first_token_ns: Some(9),
            }
        );
        drop(entries);
        assert_eq!(table.snapshot(3), (Vec::new(), 0));
    }
}
