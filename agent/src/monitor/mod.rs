//! The agent's monitors: which sources exist here (probe), and a sampling session that appends
//! process, machine and power samples to the record log while a controller is attached.
//!
//! To add a power source:
//! 1. one file here with a type implementing [`PowerSource`] and a
//!    `detect(&MonitorSpec) -> Result<Found, MonitorError>` that finds it or says why not (as
//!    [`MonitorError::Unavailable`] and friends: the words users read in `tokengun-agent probe`
//!    and run.json); a platform-only source gates its code with `#[cfg(target_os = "...")]` and
//!    has a `detect` for the other platforms that says which platform it needs (see nvml.rs);
//! 2. its name in `tokengun_common::sources` (`SOURCE_*`, as run.json spells it) and one line in
//!    [`POWER_SOURCES`];
//! 3. a parser test on output recorded from the real tool or hardware, kept in
//!    agent/tests/fixtures/power (copied from the shared fixtures folder, with its provenance in
//!    the README there), as nvml.rs and powermetrics.rs have; readings use the metric names of
//!    `tokengun_common::monitor::metric`.

pub mod amdgpu;
mod error;
pub mod ioreport;
mod machine;
pub mod nvml;
// Parsing powermetrics' output is plain Rust, tested on every platform; only macOS runs it.
pub mod ollama_ps;
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub mod powermetrics;
pub mod process;
pub mod prometheus;
pub mod rapl;
mod sysfs;

pub use error::MonitorError;

use crate::clock;
use crate::log::RecordLog;
use process::ProcessSampler;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokengun_common::sources::Watch;
use tokengun_common::sources::{Admit, PowerChoice};
pub use tokengun_common::sources::{
    SOURCE_AMDGPU, SOURCE_IOREPORT, SOURCE_NVML, SOURCE_POWERMETRICS, SOURCE_PROCESS, SOURCE_RAPL,
};
use tokengun_common::{MonitorBatch, PowerReading, RecordBody, SourceStatus};

#[cfg(test)]
mod tests;
use tokio_util::sync::CancellationToken;

/// Sampling stops when no controller has called for this long (and no results stream is open):
/// an agent does not watch on for a controller that vanished.
pub const MONITOR_LEASE: Duration = Duration::from_secs(60);

/// Default and bounds of the sampling intervals.
pub const DEFAULT_PROCESS_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_POWER_INTERVAL: Duration = Duration::from_millis(200);
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// A power or accelerator source that can be read now.
pub trait PowerSource: Send {
    /// Appends the readings of `t_ns` (stream sources append what arrived since last time).
    fn sample(&mut self, t_ns: u64, out: &mut Vec<PowerReading>) -> Result<(), MonitorError>;
}

/// A power source found on this machine: what the probe says of it, and the source to sample.
pub struct Found {
    /// What was found (`gpu0: NVIDIA H100 80GB HBM3`), for run.json and the probe.
    pub detail: String,
    pub source: Box<dyn PowerSource>,
}

impl Found {
    /// `source`, found as `detail` says.
    pub fn new(detail: String, source: impl PowerSource + 'static) -> Self {
        Self {
            detail,
            source: Box::new(source),
        }
    }
}

/// Finds one power source on this machine, or says why it is not there.
pub type Detect = fn(&MonitorSpec) -> Result<Found, MonitorError>;

/// Every power source, by name, in the order the probe lists them: the one registration of each.
/// IOReport comes before powermetrics: `--power auto` uses powermetrics only when IOReport failed.
pub const POWER_SOURCES: &[(&str, Detect)] = &[
    (SOURCE_IOREPORT, ioreport::detect),
    (SOURCE_POWERMETRICS, powermetrics::detect),
    (SOURCE_NVML, nvml::detect),
    (SOURCE_AMDGPU, amdgpu::detect),
    (SOURCE_RAPL, rapl::detect),
];

/// What to watch and how often.
#[derive(Debug, Clone)]
pub struct MonitorSpec {
    pub watch_process: Vec<String>,
    pub target_url: String,
    /// The server's Prometheus endpoint, scraped every `process_interval`; empty: none.
    pub server_metrics_url: String,
    pub process_interval: Duration,
    pub power_interval: Duration,
    pub power: bool,
    /// `--power`: which Apple Silicon source (and whether any power source at all).
    pub power_choice: PowerChoice,
    /// powermetrics may go through `sudo -n` (set by [`detect_power`] from `power_choice`).
    #[cfg_attr(not(target_os = "macos"), allow(dead_code))]
    pub allow_sudo: bool,
    /// Name pattern to fall back on when the listener cannot be seen (e.g. `ollama`).
    pub server_hint: String,
    /// Root of sysfs (`/sys`; tests point it elsewhere).
    pub sys_root: PathBuf,
}

impl Default for MonitorSpec {
    fn default() -> Self {
        Self {
            watch_process: Vec::new(),
            target_url: String::new(),
            server_metrics_url: String::new(),
            process_interval: DEFAULT_PROCESS_INTERVAL,
            power_interval: DEFAULT_POWER_INTERVAL,
            power: true,
            power_choice: PowerChoice::Auto,
            allow_sudo: false,
            server_hint: String::new(),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

fn status(source: &str, r: Result<String, MonitorError>) -> SourceStatus {
    let (available, detail) = match r {
        Ok(d) => (true, d),
        Err(e) => (false, e.to_string()),
    };
    SourceStatus {
        source: source.into(),
        available,
        detail,
    }
}

/// Whether the agent runs as root (only macOS asks: powermetrics needs it).
fn is_root() -> bool {
    #[cfg(target_os = "macos")]
    return tokengun_macos::system::is_root();
    #[cfg(not(target_os = "macos"))]
    false
}

/// Finds every power source of this machine that `--power` admits: the ones that work, and why
/// the others do not (or were not tried).
pub fn detect_power(spec: &MonitorSpec) -> (Vec<SourceStatus>, Vec<Box<dyn PowerSource>>) {
    let mut statuses = Vec::new();
    let mut sources = Vec::new();
    let root = is_root();
    let mut ioreport_found = false;
    for (name, detect) in POWER_SOURCES {
        // Off a Mac the Apple sources say so themselves ("macOS only"), whatever --power chose.
        let apple = *name == SOURCE_IOREPORT || *name == SOURCE_POWERMETRICS;
        let admit = if apple && !cfg!(target_os = "macos") && spec.power_choice != PowerChoice::None
        {
            Admit::Try { sudo: false }
        } else {
            spec.power_choice.admits(name, root, ioreport_found)
        };
        let sudo = match admit {
            Admit::Try { sudo } => sudo,
            Admit::Skip(why) => {
                statuses.push(status(name, Err(MonitorError::Unavailable(why.into()))));
                continue;
            }
        };
        let spec = MonitorSpec {
            allow_sudo: sudo,
            ..spec.clone()
        };
        match detect(&spec) {
            Ok(found) => {
                ioreport_found |= *name == SOURCE_IOREPORT;
                statuses.push(status(name, Ok(found.detail)));
                sources.push(found.source);
            }
            Err(why) => statuses.push(status(name, Err(why))),
        }
    }
    (statuses, sources)
}

/// The one line saying which power source is used and why (`power: ioreport (--power auto)`,
/// `power: IOReport GPU energy counter reads 0 on this machine: using powermetrics`, `no power
/// source (--power auto): ...`).
pub fn power_line(choice: PowerChoice, statuses: &[SourceStatus]) -> String {
    let s: Vec<(&str, bool, &str)> = statuses
        .iter()
        .filter(|s| s.source != SOURCE_PROCESS)
        .map(|s| (s.source.as_str(), s.available, s.detail.as_str()))
        .collect();
    choice.summary(&s)
}

/// Whether a URL's host is this machine.
fn local_port(target_url: &str) -> Option<u16> {
    let (host, port) = tokengun_common::plan::parse_target(target_url).ok()?;
    let host = host.as_str();
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    local.then_some(port)
}

/// What to watch: the user's patterns, else the process listening on a local target's port,
/// else the server hint; with a note when nothing can be watched.
pub fn choose_watch(spec: &MonitorSpec) -> Result<(Vec<Watch>, Vec<String>), MonitorError> {
    let mut notes = Vec::new();
    if !spec.watch_process.is_empty() {
        let w = spec
            .watch_process
            .iter()
            .map(|s| Watch::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((w, notes));
    }
    if spec.target_url.is_empty() {
        return Ok((Vec::new(), notes));
    }
    let Some(port) = local_port(&spec.target_url) else {
        notes.push(format!(
            "target {} is not on this machine: its processes are not watched (run an agent on the server's host, or pass --watch-process)",
            spec.target_url
        ));
        return Ok((Vec::new(), notes));
    };
    let pids = process::listeners(port);
    if !pids.is_empty() {
        return Ok((pids.into_iter().map(Watch::Pid).collect(), notes));
    }
    if !spec.server_hint.is_empty() {
        let w = Watch::parse(&regex::escape(&spec.server_hint))?;
        return Ok((vec![w], notes));
    }
    notes.push(match process::anything_listens(port) {
        Some(false) => format!(
            "nothing listens on port {port} yet, and no server name is known: pass --watch-process NAME"
        ),
        _ => format!(
            "cannot see which process listens on port {port} (another user's process? run the agent as root) and no server name is known: pass --watch-process NAME"
        ),
    });
    Ok((Vec::new(), notes))
}

/// Probes every source (starting nothing that lasts) and says what would be watched.
pub fn probe(spec: &MonitorSpec) -> (Vec<SourceStatus>, Vec<String>) {
    let mut statuses = Vec::new();
    let mut watching = Vec::new();
    match choose_watch(spec).and_then(|(w, notes)| Ok((ProcessSampler::new(w)?, notes))) {
        Ok((mut sampler, notes)) => {
            let mut n = Vec::new();
            let rows = sampler.sample(clock::mono_ns(), &mut n);
            for r in rows.iter().skip(1) {
                watching.push(format!(
                    "{} (pid {}, {})",
                    r.name,
                    r.pid.unwrap_or(0),
                    r.role.as_str()
                ));
            }
            let detail = if sampler.describe().is_empty() {
                "machine only".to_string()
            } else {
                format!(
                    "{}: {} found",
                    sampler.describe().join(", "),
                    rows.len() - 1
                )
            };
            statuses.push(status(SOURCE_PROCESS, Ok(detail)));
            watching.extend(notes);
            watching.extend(n);
        }
        Err(e) => statuses.push(status(SOURCE_PROCESS, Err(e))),
    }
    if spec.power {
        let power = detect_power(spec).0;
        watching.push(power_line(spec.power_choice, &power));
        statuses.extend(power);
    }
    (statuses, watching)
}

/// When a controller last called, and how many results streams are open: the monitor's lease.
#[derive(Debug, Default)]
pub struct Contact {
    last_ns: AtomicU64,
    streams: AtomicUsize,
}

impl Contact {
    /// A controller called now.
    pub fn touch(&self) {
        self.last_ns.store(clock::mono_ns(), Ordering::Relaxed);
    }

    /// A results stream opened; the guard closes it.
    pub fn stream_open(self: &Arc<Self>) -> StreamGuard {
        self.streams.fetch_add(1, Ordering::Relaxed);
        self.touch();
        StreamGuard(self.clone())
    }

    fn expired(&self, lease: Duration) -> bool {
        self.streams.load(Ordering::Relaxed) == 0
            && clock::mono_ns().saturating_sub(self.last_ns.load(Ordering::Relaxed))
                > u64::try_from(lease.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Counts an open results stream until dropped.
pub struct StreamGuard(Arc<Contact>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// What a started session watches.
#[derive(Debug, Clone)]
pub struct Started {
    pub now_mono_ns: u64,
    pub sources: Vec<SourceStatus>,
    pub watching: Vec<String>,
}

struct Session {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Scraping the server's metrics, when a URL was given.
    scrape: Option<tokio::task::JoinHandle<()>>,
}

impl Session {
    async fn end(self) {
        self.cancel.cancel();
        let _ = self.task.await;
        if let Some(s) = self.scrape {
            let _ = s.await;
        }
    }
}

/// The agent's one monitoring session (a new start replaces the old one).
#[derive(Default)]
pub struct Monitor {
    session: tokio::sync::Mutex<Option<Session>>,
}

impl Monitor {
    /// Starts sampling into `log`; Err when the spec is invalid (e.g. a bad pattern).
    pub async fn start(
        &self,
        spec: MonitorSpec,
        log: Arc<RecordLog>,
        contact: Arc<Contact>,
        client: &crate::http::HttpClient,
    ) -> Result<Started, MonitorError> {
        let mut guard = self.session.lock().await;
        if let Some(old) = guard.take() {
            old.end().await;
        }
        let spec2 = spec.clone();
        // Process scans and source probes block: off the runtime the load runs on.
        let (sampler, watch_notes, sources, statuses) = tokio::task::spawn_blocking(move || {
            let (watch, notes) = choose_watch(&spec2)?;
            let (statuses, sources) = if spec2.power {
                detect_power(&spec2)
            } else {
                (Vec::new(), Vec::new())
            };
            Ok::<_, MonitorError>((ProcessSampler::new(watch)?, notes, sources, statuses))
        })
        .await??;
        let mut watching = sampler.describe();
        watching.extend(watch_notes.iter().cloned());
        let mut statuses = statuses;
        statuses.insert(
            0,
            status(
                SOURCE_PROCESS,
                Ok(if watching.is_empty() {
                    "machine only".into()
                } else {
                    watching.join("; ")
                }),
            ),
        );
        let cancel = CancellationToken::new();
        // Unavailable sources are in `statuses` (and run.json); only surprises become notes: on a
        // Mac (or under an explicit --power) which power source is used, and why.
        let mut first_notes = watch_notes;
        if spec.power && (cfg!(target_os = "macos") || spec.power_choice != PowerChoice::Auto) {
            first_notes.push(power_line(spec.power_choice, &statuses));
        }
        let scrape = (!spec.server_metrics_url.is_empty()).then(|| {
            tokio::spawn(prometheus::scrape_loop(prometheus::Scrape {
                client: client.clone(),
                url: spec.server_metrics_url.clone(),
                interval: spec.process_interval.max(MIN_INTERVAL),
                log: log.clone(),
                contact: contact.clone(),
                cancel: cancel.clone(),
            }))
        });
        let task = tokio::spawn(sample_loop(
            spec,
            sampler,
            sources,
            first_notes,
            log,
            contact,
            cancel.clone(),
        ));
        *guard = Some(Session {
            cancel,
            task,
            scrape,
        });
        Ok(Started {
            now_mono_ns: clock::mono_ns(),
            sources: statuses,
            watching,
        })
    }

    /// Stops sampling once its last batch is logged.
    pub async fn stop(&self) {
        if let Some(s) = self.session.lock().await.take() {
            s.end().await;
        }
    }
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn sample_loop(
    spec: MonitorSpec,
    sampler: ProcessSampler,
    sources: Vec<Box<dyn PowerSource>>,
    first_notes: Vec<String>,
    log: Arc<RecordLog>,
    contact: Arc<Contact>,
    cancel: CancellationToken,
) {
    let sampler: Shared<ProcessSampler> = Arc::new(Mutex::new(sampler));
    let sources: Shared<Vec<Box<dyn PowerSource>>> = Arc::new(Mutex::new(sources));
    let said: Shared<std::collections::HashSet<String>> = Arc::default();
    let has_power = !lock(&sources).is_empty();
    let mut proc_tick = tokio::time::interval(spec.process_interval.max(MIN_INTERVAL));
    let mut power_tick = tokio::time::interval(spec.power_interval.max(MIN_INTERVAL));
    proc_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    power_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if !first_notes.is_empty() {
        log.append(RecordBody::Monitor(Box::new(MonitorBatch {
            notes: first_notes,
            ..MonitorBatch::default()
        })));
    }
    loop {
        let job: Box<dyn FnOnce() -> MonitorBatch + Send> = tokio::select! {
            () = cancel.cancelled() => break,
            _ = proc_tick.tick() => {
                if contact.expired(MONITOR_LEASE) {
                    tracing::warn!("no controller for {MONITOR_LEASE:?}: monitoring stops");
                    break;
                }
                let sampler = sampler.clone();
                Box::new(move || {
                    let mut b = MonitorBatch::default();
                    b.processes = lock(&sampler).sample(clock::mono_ns(), &mut b.notes);
                    b
                })
            }
            _ = power_tick.tick(), if has_power => {
                let (sources, said) = (sources.clone(), said.clone());
                Box::new(move || {
                    let mut b = MonitorBatch::default();
                    let t = clock::mono_ns();
                    for s in lock(&sources).iter_mut() {
                        if let Err(e) = s.sample(t, &mut b.power) {
                            let text = e.to_string();
                            if lock(&said).insert(text.clone()) {
                                b.notes.push(text);
                            }
                        }
                    }
                    b
                })
            }
        };
        match tokio::task::spawn_blocking(job).await {
            Ok(b) if !(b.power.is_empty() && b.processes.is_empty() && b.notes.is_empty()) => {
                log.append(RecordBody::Monitor(Box::new(b)));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!("monitor sample failed: {e}");
                break;
            }
        }
    }
}
