//! The agent's record log: every record gets the next sequence number and is kept until the
//! controller acknowledges it, so a reconnecting controller can replay what it missed.

use std::collections::VecDeque;
use std::sync::Mutex;
use tokengun_common::{Record, RecordBody};
use tokio::sync::watch;

/// Append-only, in-memory for now (an on-disk spool replaces the deque without changing callers).
/// Appends happen once per request and per progress tick, never per token.
pub struct RecordLog {
    inner: Mutex<Inner>,
    last_seq: watch::Sender<u64>,
}

struct Inner {
    next_seq: u64,
    acked: u64,
    kept: VecDeque<Record>,
}

impl Default for RecordLog {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordLog {
    /// An empty log; the first record gets seq 1.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                next_seq: 1,
                acked: 0,
                kept: VecDeque::new(),
            }),
            last_seq: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the deque half-changed, so poison is moot.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record and returns its sequence number.
    pub fn append(&self, body: RecordBody) -> u64 {
        let seq = {
            let mut g = self.lock();
            let seq = g.next_seq;
            g.next_seq += 1;
            g.kept.push_back(Record { seq, body });
            seq
        };
        self.last_seq.send_replace(seq);
        seq
    }

    /// Up to `max` kept records with seq > `after`, oldest first.
    pub fn after(&self, after: u64, max: usize) -> Vec<Record> {
        let g = self.lock();
        let start = match g.kept.front() {
            Some(first) if after >= first.seq => {
                usize::try_from(after - first.seq + 1).unwrap_or(usize::MAX)
            }
            _ => 0,
        };
        g.kept.iter().skip(start).take(max).cloned().collect()
    }

    /// Drops records up to and including `seq`.
    pub fn ack(&self, seq: u64) {
        let mut g = self.lock();
        while g.kept.front().is_some_and(|r| r.seq <= seq) {
            g.kept.pop_front();
        }
        g.acked = g.acked.max(seq);
    }

    /// (last seq handed out, last seq acknowledged, records kept).
    pub fn counts(&self) -> (u64, u64, usize) {
        let g = self.lock();
        (g.next_seq - 1, g.acked, g.kept.len())
    }

    /// Wakes when a record is appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last_seq.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokengun_common::Progress;

    fn p(cycle_id: u32) -> RecordBody {
        RecordBody::Progress(Progress {
            cycle_id,
            ..Progress::default()
        })
    }

    #[test]
    fn replays_after_any_seq_and_trims_on_ack() {
        let log = RecordLog::new();
        for i in 1..=5 {
            assert_eq!(log.append(p(i)), u64::from(i));
        }
        let seqs = |v: Vec<Record>| v.into_iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(log.after(0, 10)), vec![1, 2, 3, 4, 5]);
        assert_eq!(seqs(log.after(3, 10)), vec![4, 5]);
        assert_eq!(seqs(log.after(1, 2)), vec![2, 3]);
        log.ack(2);
        assert_eq!(seqs(log.after(0, 10)), vec![3, 4, 5]);
        assert_eq!(seqs(log.after(4, 10)), vec![5]);
        assert_eq!(seqs(log.after(5, 10)), Vec::<u64>::new());
        assert_eq!(log.counts(), (5, 2, 3));
    }
}
