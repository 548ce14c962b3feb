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
                self_check: None,
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
        // Acknowledged records are gone, even while their segment is still on disk.
        let mut from = after.max(self.lock().acked) + 1;
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
    use crate::spool::SpoolConfig;
    use std::path::Path;
    use tokengun_common::{OutcomeKind, Progress, RequestRecord, ServerTimings, TokenSource};

    fn p(cycle_id: u32) -> RecordBody {
        RecordBody::Progress(Progress {
            cycle_id,
            ..Progress::default()
        })
    }

    fn req(cycle_id: u32, request_id: u32, outcome: OutcomeKind, end_ns: u64) -> RecordBody {
        RecordBody::Request(Box::new(RequestRecord {
            cycle_id,
            request_id,
            prompt_index: 0,
            workload: Default::default(),
            target_index: 0,
            intended_start_ns: 0,
            dispatched_ns: 1,
            sent_ns: 1,
            first_byte_ns: Some(2),
            first_token_ns: Some(3),
            first_answer_ns: Some(3),
            last_token_ns: Some(4),
            end_ns,
            status_code: Some(200),
            outcome,
            error: String::new(),
            output_tokens: 2,
            token_source: TokenSource::Counted,
            counted_tokens: 2,
            utf8_merged_tokens: 0,
            reasoning_tokens: 0,
            prompt_tokens: None,
            server: ServerTimings::default(),
            done_reason: "stop".into(),
            timeline: Vec::new(),
        }))
    }

    fn seqs(v: Vec<Record>) -> Vec<u64> {
        v.into_iter().map(|r| r.seq).collect()
    }

    fn small(dir: &Path, segment_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            segment_bytes,
            ..SpoolConfig::new(dir)
        }
    }

    fn segments(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tgspool"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replays_after_any_seq_and_trims_on_ack() {
        let log = RecordLog::new();
        for i in 1..=5 {
            assert_eq!(log.append(p(i)), u64::from(i));
        }
        assert_eq!(seqs(log.after(0, 10)), vec![1, 2, 3, 4, 5]);
        assert_eq!(seqs(log.after(3, 10)), vec![4, 5]);
        assert_eq!(seqs(log.after(1, 2)), vec![2, 3]);
        log.ack(2);
        assert_eq!(seqs(log.after(0, 10)), vec![3, 4, 5]);
        assert_eq!(seqs(log.after(4, 10)), vec![5]);
        assert_eq!(seqs(log.after(5, 10)), Vec::<u64>::new());
        assert_eq!(log.counts(), (5, 2, 3));
    }

    #[test]
    fn spool_round_trip_restart_continues_seq_and_replays_after_any_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut written = Vec::new();
        {
            let (log, found) = RecordLog::open(small(dir.path(), 300)).unwrap();
            assert_eq!((found.records, found.last_seq), (0, 0));
            for i in 1..=40 {
                let body = if i % 3 == 0 {
                    req(1, i, OutcomeKind::Completed, 7)
                } else {
                    p(i)
                };
                written.push(Record {
                    seq: log.append(body.clone()),
                    body,
                });
            }
            log.sync();
        }
        assert!(segments(dir.path()).len() > 2, "{:?}", segments(dir.path()));
        let (log, found) = RecordLog::open(small(dir.path(), 300)).unwrap();
        assert_eq!((found.records, found.last_seq, found.acked), (40, 40, 0));
        assert!(found.unfinished.is_none());
        // Every record reads back from disk as written, from any starting point.
        assert_eq!(log.after(0, 100), written);
        for after in [0, 1, 7, 13, 26, 39, 40] {
            let got = seqs(log.after(after, 100));
            assert_eq!(got, (after + 1..=40).collect::<Vec<_>>(), "after {after}");
        }
        assert_eq!(seqs(log.after(5, 3)), vec![6, 7, 8]);
        assert_eq!(log.append(p(99)), 41);
        assert_eq!(seqs(log.after(38, 100)), vec![39, 40, 41]);
        assert_eq!(log.counts().0, 41);
    }

    #[test]
    fn a_torn_last_frame_is_cut_off_and_the_seq_continues() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = RecordLog::open(SpoolConfig::new(dir.path())).unwrap();
            for i in 1..=5 {
                log.append(p(i));
            }
        }
        let seg = dir.path().join(&segments(dir.path())[0]);
        let whole = std::fs::metadata(&seg).unwrap().len();
        // A crash in the middle of the sixth frame: its header and half its payload.
        let torn = crate::spool::frame(&Record { seq: 6, body: p(6) });
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes.extend_from_slice(&torn[..torn.len() / 2 + 4]);
        std::fs::write(&seg, &bytes).unwrap();
        let (log, found) = RecordLog::open(SpoolConfig::new(dir.path())).unwrap();
        assert_eq!(found.last_seq, 5);
        assert_eq!(found.truncated_bytes, (torn.len() / 2 + 4) as u64);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), whole);
        assert_eq!(log.append(p(6)), 6);
        assert_eq!(seqs(log.after(0, 10)), vec![1, 2, 3, 4, 5, 6]);
        drop(log);
        // A flipped byte inside a frame that is not last is damage, not a torn write: refused.
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[crate::spool::MAGIC.len() + 9] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let err = RecordLog::open(SpoolConfig::new(dir.path())).err().unwrap();
        assert!(err.to_string().contains("move"), "{err}");
    }

    #[test]
    fn ack_deletes_whole_acknowledged_segments_only() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = RecordLog::open(small(dir.path(), 80)).unwrap();
        for i in 1..=30 {
            log.append(p(i));
        }
        let before = segments(dir.path());
        assert!(before.len() >= 4, "{before:?}");
        let first_of = |n: &str| n.trim_end_matches(".tgspool").parse::<u64>().unwrap();
        // Acknowledging into the middle of the second segment removes only the first.
        let second = first_of(&before[1]);
        log.ack(second + 1);
        assert_eq!(segments(dir.path()), before[1..].to_vec());
        assert_eq!(seqs(log.after(0, 100)).first(), Some(&(second + 2)));
        log.ack(30);
        // The segment being appended to stays.
        assert_eq!(segments(dir.path()).len(), 1);
        assert_eq!(log.counts(), (30, 30, 0));
        log.sync();
        drop(log);
        let (log, found) = RecordLog::open(small(dir.path(), 80)).unwrap();
        assert_eq!((found.last_seq, found.acked), (30, 30));
        assert_eq!(log.append(p(31)), 31);
        assert_eq!(seqs(log.after(30, 10)), vec![31]);
    }

    #[test]
    fn an_unfinished_cycle_is_closed_as_recovered_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = RecordLog::open(small(dir.path(), 300)).unwrap();
            log.append(RecordBody::CycleStarted {
                cycle_id: 3,
                started_unix_ns: 1,
                origin_mono_ns: 1_000,
            });
            log.append(req(3, 1, OutcomeKind::Completed, 50));
            log.append(p(3));
            log.append(req(3, 2, OutcomeKind::HttpError, 90));
            log.append(req(3, 3, OutcomeKind::Completed, 70));
            // Acknowledging everything keeps the running cycle's segments: a restart counts them.
            log.ack(5);
        }
        let (log, found) = RecordLog::open(small(dir.path(), 300)).unwrap();
        let u = found.unfinished.unwrap();
        assert_eq!((u.cycle_id, u.requests, u.failed), (3, 3, 1));
        let last = log.after(5, 10);
        assert_eq!(seqs(last.clone()), vec![6]);
        let RecordBody::CycleDone(d) = &last[0].body else {
            panic!("{last:?}")
        };
        assert_eq!(
            *d,
            CycleDone {
                cycle_id: 3,
                requests: 3,
                completed: 2,
                failed: 1,
                aborted: true,
                ended_mono_ns: 1_090,
                recovered: true,
                self_check: None,
            }
        );
        drop(log);
        // Closed once: the next restart finds nothing to close.
        let (_, found) = RecordLog::open(small(dir.path(), 300)).unwrap();
        assert!(found.unfinished.is_none());
        assert_eq!(found.last_seq, 6);
    }

    #[test]
    fn a_spool_folder_serves_one_agent_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let _held = RecordLog::open(SpoolConfig::new(dir.path())).unwrap();
        let err = RecordLog::open(SpoolConfig::new(dir.path())).err().unwrap();
        assert!(err.to_string().contains("--spool-dir"), "{err}");
    }

    #[test]
    fn stale_segments_expire_even_unacknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = RecordLog::open(SpoolConfig {
            keep: Duration::from_secs(3600),
            ..small(dir.path(), 200)
        })
        .unwrap();
        for i in 1..=20 {
            log.append(p(i));
        }
        log.expire(SystemTime::now());
        assert_eq!(seqs(log.after(0, 100)).len(), 20);
        log.expire(SystemTime::now() + Duration::from_secs(7200));
        assert!(segments(dir.path()).is_empty());
        assert!(log.after(0, 100).is_empty());
        // Appends go on, into a new segment.
        assert_eq!(log.append(p(21)), 21);
        assert_eq!(seqs(log.after(0, 100)), vec![21]);
    }

    #[test]
    fn the_agent_id_is_kept_in_the_spool_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(crate::spool::agent_id(dir.path(), "a-1").unwrap(), "a-1");
        assert_eq!(crate::spool::agent_id(dir.path(), "b-2").unwrap(), "a-1");
    }

    #[test]
    fn the_default_spool_folder_follows_systemd_then_xdg_then_home() {
        use crate::spool::default_dir;
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_string())
            }
        };
        let listen: std::net::SocketAddr = "127.0.0.1:7411".parse().unwrap();
        let all = env(&[
            ("STATE_DIRECTORY", "/var/lib/tokengun-agent:/x"),
            ("XDG_STATE_HOME", "/s"),
            ("HOME", "/h"),
        ]);
        assert_eq!(
            default_dir(all, listen).unwrap(),
            Path::new("/var/lib/tokengun-agent")
        );
        let xdg = env(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")]);
        assert_eq!(
            default_dir(xdg, listen).unwrap(),
            Path::new("/s/tokengun-agent/127.0.0.1-7411")
        );
        let home = env(&[("HOME", "/h")]);
        assert_eq!(
            default_dir(home, listen).unwrap(),
            Path::new("/h/.local/state/tokengun-agent/127.0.0.1-7411")
        );
        // Another listen address, another folder; IPv6 without colons in the name.
        let v6: std::net::SocketAddr = "[::1]:7412".parse().unwrap();
        assert_eq!(
            default_dir(home, v6).unwrap(),
            Path::new("/h/.local/state/tokengun-agent/__1-7412")
        );
        assert!(default_dir(env(&[]), listen).is_none());
    }
}
