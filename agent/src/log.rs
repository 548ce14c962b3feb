//! The agent's record log: every record gets the next sequence number and is kept until the
//! controller acknowledges it, so a reconnecting controller can replay what it missed. With a
//! [`spool`](crate::spool) it is written to disk before anyone sees it and survives a restart.

use crate::spool::{self, Recovered, Spool, SpoolConfig, SpoolError};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokengun_common::{CycleDone, Record, RecordBody};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// With a spool, at most this many bytes of recent records stay cached in memory; older ones are
/// read back from disk.
pub const TAIL_MAX_BYTES: usize = 16 * 1024 * 1024;
/// How often stale spool segments are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

/// Append-only log of sequenced records, in memory or spooled to disk. Appends happen once per
/// request and per progress tick, never per token.
pub struct RecordLog {
    inner: Mutex<Inner>,
    last_seq: watch::Sender<u64>,
}

struct Inner {
    next_seq: u64,
    acked: u64,
    /// Recent unacknowledged records, oldest first (all of them without a spool).
    tail: VecDeque<Record>,
    tail_bytes: usize,
    spool: Option<Spool>,
    /// A spool write failed: from then on records stay in memory only (logged once).
    spool_failed: bool,
    /// Seq of the running cycle's CycleStarted: its segments stay until it is done, so a restart
    /// can count its requests.
    open_cycle: Option<(u32, u64)>,
    /// The last acknowledged seq saved to the spool folder.
    acked_saved: u64,
}

impl Default for RecordLog {
    fn default() -> Self {
        Self::new()
    }
}

fn body_bytes(r: &Record) -> usize {
    // A cheap size estimate for the memory bound (the exact size is the frame's).
    match &r.body {
        RecordBody::Request(q) => 256 + q.timeline.len() * 16 + q.error.len(),
        RecordBody::Progress(p) => 128 + p.live.len() * 64,
        RecordBody::Monitor(_) => 1024,
        _ => 64,
    }
}

impl RecordLog {
    /// An empty in-memory log; the first record gets seq 1.
    pub fn new() -> Self {
        Self::with(1, 0, None, None)
    }

    fn with(next_seq: u64, acked: u64, spool: Option<Spool>, open: Option<(u32, u64)>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                next_seq,
                acked,
                tail: VecDeque::new(),
                tail_bytes: 0,
                spool,
                spool_failed: false,
                open_cycle: open,
                acked_saved: acked,
            }),
            last_seq: watch::Sender::new(next_seq - 1),
        }
    }

    /// Opens the spool in `cfg.dir` (made if missing): sequence numbers continue after the last
    /// record found, a torn last record is cut off, and a cycle found started but not done is
    /// closed with a CycleDone marked aborted and recovered.
    pub fn open(cfg: SpoolConfig) -> Result<(Self, Recovered), SpoolError> {
        let (spool, found) = Spool::open(cfg, |_| {})?;
        let log = Self::with(
            found.last_seq + 1,
            found.acked,
            Some(spool),
            found.unfinished.map(|u| (u.cycle_id, u.started_seq)),
        );
        if let Some(u) = found.unfinished {
            tracing::warn!(
                "cycle {} was running when this agent stopped: closing it as aborted and recovered ({} requests recorded; any in flight then are lost)",
                u.cycle_id,
                u.requests
            );
            log.append(RecordBody::CycleDone(CycleDone {
                cycle_id: u.cycle_id,
                requests: u.requests,
                completed: u.requests - u.failed,
                failed: u.failed,
                aborted: true,
                ended_mono_ns: u.last_end_mono_ns,
                recovered: true,
            }));
        }
        Ok((log, found))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the deque half-changed, so poison is moot.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record and returns its sequence number. With a spool the record is written to
    /// it first (and fsynced at once when it is a CycleDone).
    pub fn append(&self, body: RecordBody) -> u64 {
        let seq = {
            let mut g = self.lock();
            let g = &mut *g;
            let seq = g.next_seq;
            g.next_seq += 1;
            let rec = Record { seq, body };
            match &rec.body {
                RecordBody::CycleStarted { cycle_id, .. } => g.open_cycle = Some((*cycle_id, seq)),
                RecordBody::CycleDone(d) if g.open_cycle.is_some_and(|(c, _)| c == d.cycle_id) => {
                    g.open_cycle = None;
                }
                _ => {}
            }
            if let Some(sp) = g.spool.as_mut().filter(|_| !g.spool_failed) {
                let mut written = sp.append(&rec);
                if written.is_ok() && matches!(rec.body, RecordBody::CycleDone(_)) {
                    written = sp.sync_now();
                }
                if let Err(e) = written {
                    g.spool_failed = true;
                    tracing::error!(
                        "{e}: records are kept in memory only from seq {seq} on (a restart loses them)"
                    );
                }
            }
            g.tail_bytes += body_bytes(&rec);
            g.tail.push_back(rec);
            if g.spool.is_some() && !g.spool_failed {
                while g.tail_bytes > TAIL_MAX_BYTES && g.tail.len() > 1 {
                    if let Some(r) = g.tail.pop_front() {
                        g.tail_bytes -= body_bytes(&r);
                    }
                }
            }
            seq
        };
        self.last_seq.send_replace(seq);
        seq
    }

    /// Up to `max` kept records with seq > `after`, oldest first (read from the spool when they
    /// are no longer cached in memory).
    pub fn after(&self, after: u64, max: usize) -> Vec<Record> {
        let mut from = after + 1;
        let mut out = Vec::new();
        // A few rounds at most: a segment removed by an ack while being read is skipped over.
        for _ in 0..4 {
            let disk = {
                let g = self.lock();
                match g.tail.front() {
                    Some(first) if from >= first.seq => {
                        let skip = usize::try_from(from - first.seq).unwrap_or(usize::MAX);
                        out.extend(g.tail.iter().skip(skip).take(max - out.len()).cloned());
                        return out;
                    }
                    _ => {}
                }
                let upto = g.tail.front().map_or(g.next_seq - 1, |f| f.seq - 1);
                match g.spool.as_ref().and_then(|s| s.locate(from)) {
                    Some((path, offset, last)) if from <= upto => {
                        Some((path, offset, last.min(upto)))
                    }
                    _ => None,
                }
            };
            let Some((path, offset, upto)) = disk else {
                // Nothing on disk: the memory tail (if any) starts later.
                let g = self.lock();
                let skip = g.tail.front().map_or(0, |f| {
                    usize::try_from(from.saturating_sub(f.seq)).unwrap_or(0)
                });
                out.extend(g.tail.iter().skip(skip).take(max - out.len()).cloned());
                return out;
            };
            match spool::read_range(&path, offset, from, upto, max - out.len()) {
                Ok(recs) => {
                    let got = recs.last().map(|r| r.seq);
                    out.extend(recs);
                    if out.len() >= max {
                        return out;
                    }
                    from = got.map_or(upto + 1, |s| s + 1).max(from);
                }
                Err(e) => {
                    // Removed meanwhile (acknowledged or expired), or damaged since it was opened.
                    if std::fs::metadata(&path).is_ok() {
                        tracing::error!(
                            "cannot read spool segment {}: {e}; skipping to seq {}",
                            path.display(),
                            upto + 1
                        );
                    }
                    from = upto + 1;
                }
            }
        }
        out
    }

    /// Drops records up to and including `seq`; with a spool, deletes the segments they fill.
    pub fn ack(&self, seq: u64) {
        let mut g = self.lock();
        let seq = seq.min(g.next_seq - 1);
        while g.tail.front().is_some_and(|r| r.seq <= seq) {
            if let Some(r) = g.tail.pop_front() {
                g.tail_bytes -= body_bytes(&r);
            }
        }
        g.acked = g.acked.max(seq);
        let (acked, open) = (g.acked, g.open_cycle.map(|(_, s)| s));
        if let Some(sp) = g.spool.as_mut() {
            sp.remove_through(acked, open);
        }
    }

    /// (last seq handed out, last seq acknowledged, records kept in memory).
    pub fn counts(&self) -> (u64, u64, usize) {
        let g = self.lock();
        (g.next_seq - 1, g.acked, g.tail.len())
    }

    /// Wakes when a record is appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last_seq.subscribe()
    }

    /// Fsyncs what was written since the last call and saves the acknowledged seq (no-op
    /// without a spool).
    pub fn sync(&self) {
        let (file, acked, dir) = {
            let mut g = self.lock();
            let g = &mut *g;
            let Some(sp) = g.spool.as_mut() else { return };
            let acked = (g.acked != g.acked_saved).then_some(g.acked);
            g.acked_saved = g.acked;
            (sp.take_dirty(), acked, sp.cfg.dir.clone())
        };
        if let Some(f) = file {
            if let Err(e) = f.sync_data() {
                tracing::error!("cannot fsync the spool in {}: {e}", dir.display());
            }
        }
        if let Some(a) = acked {
            Spool::save_acked(&dir, a);
        }
    }

    /// Drops spool segments whose records are older than the keep time, acknowledged or not.
    pub fn expire(&self, now: SystemTime) {
        let mut g = self.lock();
        let Some(sp) = g.spool.as_mut() else { return };
        let first = sp.segments.first().map_or(0, |s| s.first_seq);
        let dropped = sp.expire(now);
        if dropped == 0 {
            return;
        }
        let keep = humantime::format_duration(sp.cfg.keep).to_string();
        while g.tail.front().is_some_and(|r| r.seq <= dropped) {
            if let Some(r) = g.tail.pop_front() {
                g.tail_bytes -= body_bytes(&r);
            }
        }
        if dropped > g.acked {
            tracing::warn!(
                "dropped unacknowledged records {}..={dropped} older than --spool-keep {keep}: no controller fetched them",
                first.max(g.acked + 1)
            );
        }
    }

    /// Fsyncs every [`spool::SYNC_EVERY`] and expires stale segments until `stop`, then syncs
    /// a last time.
    pub fn spawn_syncer(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(spool::SYNC_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_expire = tokio::time::Instant::now();
            log.expire(SystemTime::now());
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => break,
                }
                let l = log.clone();
                let expire = last_expire.elapsed() >= EXPIRE_EVERY;
                if expire {
                    last_expire = tokio::time::Instant::now();
                }
                let _ = tokio::task::spawn_blocking(move || {
                    l.sync();
                    if expire {
                        l.expire(SystemTime::now());
                    }
                })
                .await;
            }
            let l = log.clone();
            let _ = tokio::task::spawn_blocking(move || l.sync()).await;
        })
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
