//! The agent's on-disk spool: every record as a CRC-checked, length-delimited protobuf frame in
//! append-only segment files, so records outlive a crash, a restart and a lost controller.
//!
//! Layout of `DIR`: `lock` (held while an agent uses the spool), `agent-id`, `acked` (the last
//! acknowledged seq, advisory), and segments `<first seq, 20 digits>.tgspool`. A segment starts
//! with [`MAGIC`], then frames: payload length (u32 LE), CRC32 of the payload (u32 LE), payload
//! (a prost-encoded `tokengun.v1.Record`). Each frame is written with one `write` before its
//! record becomes visible (so a killed process loses nothing); `fsync` is batched (see
//! [`SYNC_EVERY`]), so a power loss can lose the last fraction of a second.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokengun_common::{Record, RecordBody};
use tokengun_proto as pb;

/// Every segment begins with these bytes (format version 1).
pub const MAGIC: &[u8; 8] = b"TGSPOOL1";
/// A segment is closed and a new one begun beyond this size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// How often written records are fsynced (also at every CycleDone and at shutdown).
pub const SYNC_EVERY: Duration = Duration::from_millis(100);
/// Default for how long unacknowledged records are kept.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(24 * 3600);
/// One index entry per this many records of a segment (a replay seeks to the nearest one).
const INDEX_EVERY: u64 = 128;
/// A frame larger than this is corruption, not a record.
const MAX_FRAME_BYTES: u32 = 256 * 1024 * 1024;
const SEGMENT_EXT: &str = "tgspool";

/// Where and how the agent spools its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// The spool folder (made if missing).
    pub dir: PathBuf,
    /// Unacknowledged records older than this are dropped (the controller is gone for good).
    pub keep: Duration,
    /// Segment size, bytes, before a new segment is begun.
    pub segment_bytes: u64,
}

impl SpoolConfig {
    /// A spool in `dir` with the default keep time and segment size.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            keep: DEFAULT_KEEP,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// The spool could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "spool folder {dir} is in use by another tokengun-agent; give each agent its own --spool-dir"
    )]
    Locked { dir: PathBuf },
    #[error(
        "spool segment {path} is damaged at byte {offset} ({reason}) and is not the last one, so this is not a torn write; move {dir} aside to start a fresh spool"
    )]
    Corrupt {
        path: PathBuf,
        dir: PathBuf,
        offset: u64,
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub first_seq: u64,
    /// Last seq written to it (first_seq - 1 while empty).
    pub last_seq: u64,
    pub path: PathBuf,
    /// (seq, byte offset of its frame), every [`INDEX_EVERY`] records.
    index: Vec<(u64, u64)>,
    bytes: u64,
    /// When its last record was written.
    pub modified: SystemTime,
}

impl Segment {
    fn is_empty(&self) -> bool {
        self.last_seq < self.first_seq
    }

    /// Where to start reading for `seq` (the nearest indexed frame at or before it).
    fn offset_for(&self, seq: u64) -> u64 {
        let i = self.index.partition_point(|&(s, _)| s <= seq);
        if i == 0 {
            MAGIC.len() as u64
        } else {
            self.index[i - 1].1
        }
    }
}

/// What opening a spool found in it.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Records found (all segments).
    pub records: u64,
    /// The last seq found (0: empty).
    pub last_seq: u64,
    /// Bytes of a torn last frame cut off.
    pub truncated_bytes: u64,
    /// The last acknowledged seq, as last saved.
    pub acked: u64,
    /// A cycle started but not done: (cycle_id, seq of its CycleStarted, requests recorded,
    /// of which failed, last end on the agent's old monotonic clock).
    pub unfinished: Option<Unfinished>,
}

/// A cycle the spool shows started but not done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unfinished {
    pub cycle_id: u32,
    pub started_seq: u64,
    pub requests: u32,
    pub failed: u32,
    /// origin_mono_ns + the latest request end (the old process's clock).
    pub last_end_mono_ns: u64,
    origin_mono_ns: u64,
}

impl Unfinished {
    /// Follows one record of the scan.
    fn track(open: &mut Option<Unfinished>, r: &Record) {
        match &r.body {
            RecordBody::CycleStarted {
                cycle_id,
                origin_mono_ns,
                ..
            } => {
                *open = Some(Unfinished {
                    cycle_id: *cycle_id,
                    started_seq: r.seq,
                    requests: 0,
                    failed: 0,
                    last_end_mono_ns: *origin_mono_ns,
                    origin_mono_ns: *origin_mono_ns,
                });
            }
            RecordBody::CycleDone(d) if open.is_some_and(|o| o.cycle_id == d.cycle_id) => {
                *open = None;
            }
            RecordBody::Request(q) => {
                if let Some(o) = open.as_mut().filter(|o| o.cycle_id == q.cycle_id) {
                    o.requests += 1;
                    if q.outcome.is_failure() {
                        o.failed += 1;
                    }
                    o.last_end_mono_ns = o
                        .last_end_mono_ns
                        .max(o.origin_mono_ns.saturating_add(q.end_ns));
                }
            }
            _ => {}
        }
    }
}

/// The open spool: its segments, the last one being appended to.
pub(crate) struct Spool {
    pub cfg: SpoolConfig,
    pub segments: Vec<Segment>,
    /// The last segment, open for appends (None: the next append begins a new segment).
    active: Option<File>,
    /// Written since the last fsync.
    dirty: bool,
    /// Held for the spool's life: one agent per spool.
    _lock: File,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.{SEGMENT_EXT}"))
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    // Makes a new or removed segment's name durable (not possible, nor needed, on every OS).
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Takes the spool's lock for this process's life (released when the file closes, even at a
/// crash).
#[cfg(unix)]
fn lock_exclusive(lock: &File, dir: &Path, lock_path: &Path) -> Result<(), SpoolError> {
    use rustix::fs::{FlockOperation, flock};
    match flock(lock, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(SpoolError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(e) => Err(io_err(lock_path)(e.into())),
    }
}

/// Elsewhere no lock is taken: one agent per spool folder is up to the operator.
#[cfg(not(unix))]
fn lock_exclusive(_lock: &File, _dir: &Path, _lock_path: &Path) -> Result<(), SpoolError> {
    Ok(())
}

/// Encodes one frame: length, CRC32, payload.
pub(crate) fn frame(r: &Record) -> Vec<u8> {
    let payload = prost::Message::encode_to_vec(&pb::Record::from(r));
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Reads one frame; Ok(None) at a clean end of file, Err(reason) for a torn or damaged frame.
fn read_frame(r: &mut impl Read) -> Result<Option<(Record, u64)>, String> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(format!("frame header cut short after {got} bytes")),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_FRAME_BYTES {
        return Err(format!("frame length {len} is implausible"));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)
        .map_err(|e| format!("frame of {len} bytes cut short ({e})"))?;
    if crc32fast::hash(&payload) != crc {
        return Err("CRC mismatch".into());
    }
    let wire: pb::Record = prost::Message::decode(payload.as_slice())
        .map_err(|e| format!("undecodable record: {e}"))?;
    let rec = Record::try_from(wire).map_err(|e| format!("unusable record: {e}"))?;
    Ok(Some((rec, 8 + u64::from(len))))
}

impl Spool {
    /// Opens (or creates) the spool in `cfg.dir`, checks every frame, cuts off a torn last
    /// frame, and returns the spool with what it found; `each` sees every record in seq order.
    pub fn open(
        cfg: SpoolConfig,
        mut each: impl FnMut(&Record),
    ) -> Result<(Self, Recovered), SpoolError> {
        let dir = cfg.dir.clone();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        lock_exclusive(&lock, &dir, &lock_path)?;
        let mut firsts = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let Some(stem) = name
                .to_str()
                .and_then(|n| n.strip_suffix(&format!(".{SEGMENT_EXT}")))
            else {
                continue;
            };
            if let Ok(first) = stem.parse::<u64>() {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut found = Recovered::default();
        let mut segments = Vec::new();
        let mut open_cycle = None;
        let count = firsts.len();
        for (i, first_seq) in firsts.into_iter().enumerate() {
            let path = segment_path(&dir, first_seq);
            let last = i + 1 == count;
            let seg = Self::scan(&path, &dir, first_seq, last, &mut found, |r| {
                Unfinished::track(&mut open_cycle, r);
                each(r);
            })?;
            if let Some(seg) = seg {
                if seg.first_seq <= found.last_seq && found.last_seq > 0 && i > 0 {
                    // Overlapping segments cannot come from this agent: refuse to guess.
                    return Err(SpoolError::Corrupt {
                        path,
                        dir,
                        offset: 0,
                        reason: "its first seq overlaps the previous segment".into(),
                    });
                }
                if !seg.is_empty() {
                    found.last_seq = seg.last_seq;
                }
                segments.push(seg);
            }
        }
        found.unfinished = open_cycle;
        found.acked = fs::read_to_string(dir.join("acked"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
            .min(found.last_seq);
        if let Some(first) = segments.first() {
            found.acked = found.acked.max(first.first_seq - 1);
        } else {
            found.acked = found.last_seq;
        }
        // Appends go to a fresh segment: the old last one stays as written.
        Ok((
            Self {
                cfg,
                segments,
                active: None,
                dirty: false,
                _lock: lock,
            },
            found,
        ))
    }

    /// Checks one segment; returns None for an empty last segment (removed).
    fn scan(
        path: &Path,
        dir: &Path,
        first_seq: u64,
        last: bool,
        found: &mut Recovered,
        mut each: impl FnMut(&Record),
    ) -> Result<Option<Segment>, SpoolError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        let modified = file
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        let mut rd = BufReader::with_capacity(1 << 20, &file);
        let mut seg = Segment {
            first_seq,
            last_seq: first_seq - 1,
            path: path.to_path_buf(),
            index: Vec::new(),
            bytes: 0,
            modified,
        };
        let mut magic = [0u8; 8];
        let bad = match rd.read_exact(&mut magic) {
            Ok(()) if &magic == MAGIC => None,
            Ok(()) => Some((0, "not a tokengun spool segment".to_string())),
            Err(e) => Some((0, format!("no segment header ({e})"))),
        };
        let mut offset = MAGIC.len() as u64;
        let bad = bad.or_else(|| {
            loop {
                match read_frame(&mut rd) {
                    Ok(None) => return None,
                    Ok(Some((rec, len))) => {
                        if rec.seq != seg.last_seq + 1 {
                            return Some((
                                offset,
                                format!("seq {} where {} was due", rec.seq, seg.last_seq + 1),
                            ));
                        }
                        if (rec.seq - first_seq) % INDEX_EVERY == 0 {
                            seg.index.push((rec.seq, offset));
                        }
                        seg.last_seq = rec.seq;
                        found.records += 1;
                        each(&rec);
                        offset += len;
                    }
                    Err(reason) => return Some((offset, reason)),
                }
            }
        });
        seg.bytes = offset;
        if let Some((at, reason)) = bad {
            if !last {
                return Err(SpoolError::Corrupt {
                    path: path.to_path_buf(),
                    dir: dir.to_path_buf(),
                    offset: at,
                    reason,
                });
            }
            // A crash mid-write: cut the torn frame off.
            let len = file.metadata().map_err(io_err(path))?.len();
            found.truncated_bytes = len.saturating_sub(at);
            tracing::warn!(
                "spool {}: cut off {} bytes of a torn last record ({reason})",
                path.display(),
                found.truncated_bytes
            );
            if at <= MAGIC.len() as u64 && seg.is_empty() {
                drop(rd);
                fs::remove_file(path).map_err(io_err(path))?;
                sync_dir(dir)?;
                return Ok(None);
            }
            file.set_len(at).map_err(io_err(path))?;
            file.sync_all().map_err(io_err(path))?;
        }
        if last && seg.is_empty() {
            drop(rd);
            fs::remove_file(path).map_err(io_err(path))?;
            sync_dir(dir)?;
            return Ok(None);
        }
        Ok(Some(seg))
    }

    /// Writes `r` (its seq following the last one); the frame is in the OS's hands on return.
    pub fn append(&mut self, r: &Record) -> Result<(), SpoolError> {
        let frame = frame(r);
        let len = frame.len() as u64;
        let full = self.segments.last().is_some_and(|s| {
            !s.is_empty() && s.bytes + len > self.cfg.segment_bytes.max(MAGIC.len() as u64 + 1)
        });
        if self.active.is_none() || full {
            self.rotate(r.seq)?;
        }
        let (Some(file), Some(seg)) = (self.active.as_mut(), self.segments.last_mut()) else {
            return Ok(());
        };
        file.write_all(&frame).map_err(io_err(&seg.path))?;
        if (r.seq - seg.first_seq) % INDEX_EVERY == 0 {
            seg.index.push((r.seq, seg.bytes));
        }
        seg.bytes += len;
        seg.last_seq = r.seq;
        seg.modified = SystemTime::now();
        self.dirty = true;
        Ok(())
    }

    /// Closes the active segment (fsynced) and begins one whose first record is `first_seq`.
    fn rotate(&mut self, first_seq: u64) -> Result<(), SpoolError> {
        if let Some(old) = self.active.take() {
            old.sync_data().map_err(io_err(
                &self
                    .segments
                    .last()
                    .map_or(PathBuf::new(), |s| s.path.clone()),
            ))?;
        }
        let path = segment_path(&self.cfg.dir, first_seq);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all(MAGIC).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        sync_dir(&self.cfg.dir)?;
        self.segments.push(Segment {
            first_seq,
            last_seq: first_seq - 1,
            path,
            index: Vec::new(),
            bytes: MAGIC.len() as u64,
            modified: SystemTime::now(),
        });
        self.active = Some(file);
        Ok(())
    }

    /// A handle to fsync outside the log's lock, when anything was written since the last one.
    pub fn take_dirty(&mut self) -> Option<File> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        self.active.as_ref().and_then(|f| f.try_clone().ok())
    }

    /// Fsyncs the active segment now.
    pub fn sync_now(&mut self) -> Result<(), SpoolError> {
        if let (Some(f), Some(seg)) = (self.active.as_ref(), self.segments.last()) {
            f.sync_data().map_err(io_err(&seg.path))?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Removes segments whose every record is at or below `through` (never the one being
    /// appended to, nor any at or after `keep_from`); returns how many.
    pub fn remove_through(&mut self, through: u64, keep_from: Option<u64>) -> usize {
        let active = usize::from(self.active.is_some());
        let removable = self.segments.len().saturating_sub(active);
        let n = self.segments[..removable]
            .iter()
            .take_while(|s| s.last_seq <= through && keep_from.is_none_or(|k| s.last_seq < k))
            .count();
        self.remove_first(n)
    }

    /// Removes segments whose last record is older than the keep time; returns the last seq
    /// dropped (0: none).
    pub fn expire(&mut self, now: SystemTime) -> u64 {
        let keep = self.cfg.keep;
        let old = |s: &Segment| now.duration_since(s.modified).is_ok_and(|age| age > keep);
        let n = self.segments.iter().take_while(|s| old(s)).count();
        if n == 0 {
            return 0;
        }
        if n == self.segments.len() {
            // Even the segment being appended to is stale: close it, the next append begins anew.
            self.active = None;
        }
        let last = self.segments[n - 1].last_seq;
        self.remove_first(n);
        last
    }

    fn remove_first(&mut self, n: usize) -> usize {
        let mut removed = 0;
        for seg in self.segments.drain(..n) {
            match fs::remove_file(&seg.path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => removed += 1,
                Err(e) => tracing::warn!("cannot remove spool segment {}: {e}", seg.path.display()),
            }
        }
        if removed > 0 {
            if let Err(e) = sync_dir(&self.cfg.dir) {
                tracing::warn!("{e}");
            }
        }
        removed
    }

    /// Where records from `seq` on lie on disk: (segment path, offset, its last seq), or None
    /// when no kept segment holds `seq` or any later record.
    pub fn locate(&self, seq: u64) -> Option<(PathBuf, u64, u64)> {
        let seg = self
            .segments
            .iter()
            .find(|s| !s.is_empty() && s.last_seq >= seq)?;
        let from = seq.max(seg.first_seq);
        Some((seg.path.clone(), seg.offset_for(from), seg.last_seq))
    }

    /// Saves the last acknowledged seq (advisory: a restart replays from the oldest kept record
    /// without it).
    pub fn save_acked(dir: &Path, acked: u64) {
        let tmp = dir.join("acked.tmp");
        let done = fs::write(&tmp, format!("{acked}\n"))
            .and_then(|()| fs::rename(&tmp, dir.join("acked")));
        if let Err(e) = done {
            tracing::warn!("cannot save the acknowledged seq in {}: {e}", dir.display());
        }
    }
}

/// Reads records with seq in `from..=upto` from a segment, starting at `offset`, at most `max`.
pub(crate) fn read_range(
    path: &Path,
    offset: u64,
    from: u64,
    upto: u64,
    max: usize,
) -> Result<Vec<Record>, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| e.to_string())?;
    let mut rd = BufReader::with_capacity(256 * 1024, file);
    let mut out = Vec::new();
    while out.len() < max {
        match read_frame(&mut rd)? {
            None => break,
            Some((r, _)) if r.seq > upto => break,
            Some((r, _)) if r.seq >= from => out.push(r),
            Some(_) => {}
        }
    }
    Ok(out)
}

/// The agent's id, kept in `dir/agent-id` so a restarted agent is recognisably the same one;
/// `fallback` is saved there on first use.
pub fn agent_id(dir: &Path, fallback: &str) -> Result<String, SpoolError> {
    let path = dir.join("agent-id");
    match fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path)(e)),
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    fs::write(&path, format!("{fallback}\n")).map_err(io_err(&path))?;
    Ok(fallback.to_string())
}

/// The spool folder when `--spool-dir` is not given: `$STATE_DIRECTORY` (set by systemd's
/// `StateDirectory=`, one per unit; its first entry), else a folder per listen address (so two
/// agents on one host each have their own) under `$XDG_STATE_HOME/tokengun-agent`, else under
/// `~/.local/state/tokengun-agent`: `127.0.0.1-7411` for `127.0.0.1:7411`, `__1-7411` for
/// `[::1]:7411`. None when not even `$HOME` is set.
pub fn default_dir(
    env: impl Fn(&str) -> Option<String>,
    listen: std::net::SocketAddr,
) -> Option<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(s) = set("STATE_DIRECTORY") {
        return s.split(':').next().map(PathBuf::from);
    }
    let base = match set("XDG_STATE_HOME") {
        Some(x) => Path::new(&x).join("tokengun-agent"),
        None => Path::new(&set("HOME")?).join(".local/state/tokengun-agent"),
    };
    let name = format!(
        "{}-{}",
        listen.ip().to_string().replace(':', "_"),
        listen.port()
    );
    Some(base.join(name))
}

/// Whether `dir` holds a spool of the layout before per-address folders (its `agent-id` right
/// in the base folder), which an agent on the new default path no longer reads.
pub fn old_default_spool(per_address: &Path) -> Option<PathBuf> {
    let base = per_address.parent()?;
    base.join("agent-id").is_file().then(|| base.to_path_buf())
}
