//! The orchestrator: validates the plan, brings up the simulator and agent if asked, checks the
//! target, then runs the sweep cycle by cycle, writing each cycle's results as soon as it ends.

use crate::console::{Console, summary_line};
use crate::link::{AgentAuth, AgentInfo, AgentLink, ClockMap, LinkError, TargetInfo};
use crate::monitoring::{MonitorInfo, MonitorSink};
use crate::output::{
    CycleWriter, Manifest, OutDirError, RunDir, RunStatus, default_run_id, probe_writable,
};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokengun_agent::backend::ollama::model_available;
use tokengun_agent::{AgentConfig, LocalAgent, TargetPolicy};
use tokengun_common::plan::parse_target;
use tokengun_common::{
    Api, Arrival, CycleDone, CycleInfo, CyclePlan, CycleSummary, LoadShape, PlanError, Progress,
    PromptSpec, Record, RecordBody, RequestOptions, RequestRecord, Slo,
};
use tokengun_simulator::{SimConfig, SimHandle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often records already written are acknowledged to the agent during a cycle.
const ACK_EVERY: Duration = Duration::from_secs(2);

/// Clock probes per agent; the lowest-delay one is kept.
const CLOCK_PROBES: usize = 8;
/// Several agents start this far ahead of the Start calls (plus four worst round trips).
const START_LEAD: Duration = Duration::from_millis(150);
/// One reconnection attempt to a lost agent.
const RECONNECT_TRY: Duration = Duration::from_secs(2);
/// How long to wait for an agent to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After an abort, how long in-flight requests get to be recorded.
const ABORT_GRACE: Duration = Duration::from_secs(10);
/// Silence on the results stream longer than this, while a cycle runs, means the agent is lost
/// (progress records arrive every 250 ms).
const SILENCE_LIMIT: Duration = Duration::from_secs(10);

/// One level of a sweep: a concurrency, or (open loops) a rate with an optional in-flight cap.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Level {
    /// Burst/closed: requests at once. Open: in-flight cap (0 = none).
    pub concurrency: u32,
    /// Open: requests per second.
    pub rate_per_s: Option<f64>,
}

/// Everything a run needs, compiled and validated from a plan file and flags.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    pub target: String,
    /// None: ask the agent to find out (Ollama, else OpenAI-style).
    pub api: Option<Api>,
    pub model: String,
    pub prompts: Vec<PromptSpec>,
    pub shape: LoadShape,
    pub levels: Vec<Level>,
    /// Closed/open: how long each level keeps starting requests.
    pub duration: Duration,
    pub arrival: Arrival,
    /// A phase before the first level whose requests are not counted (zero = none).
    pub warmup: Duration,
    pub seed: u64,
    /// Agent addresses; empty = an agent inside this process.
    pub agents: Vec<String>,
    /// Credentials for remote agents (TLS, client certificate, token).
    pub agent_auth: AgentAuth,
    pub out: PathBuf,
    pub run_id: Option<String>,
    pub request_timeout: Duration,
    pub options: RequestOptions,
    pub extra_body_json: String,
    pub slo: Slo,
    /// Stop the sweep after a level whose error rate (0..1) exceeds this.
    pub stop_on_error_rate: Option<f64>,
    /// Serve the built-in simulator and aim at it instead of `target` (not kept in plan.json: a
    /// simulator dies with its controller, so such a run cannot be resumed).
    #[serde(skip)]
    pub sim: Option<SimConfig>,
    /// Process, machine and power sampling.
    pub monitor: MonitorConfig,
    /// Several agents: a level is divided among them, or run by each.
    pub split: Split,
    /// Several agents: what a lost agent does to the sweep.
    pub on_agent_loss: OnAgentLoss,
    /// How long a lost remote agent is waited for before its cycle closes without it.
    pub reconnect_wait: Duration,
    /// Write the study's per-request throughput CSVs (records.pb has the timelines anyway).
    pub throughput_csv: bool,
    /// Settings given that this plan does not use, said once at the start.
    pub warnings: Vec<String>,
}

/// How a level is applied to several agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// A level N is divided among the agents (N/k each, the remainder to the first ones; rates
    /// divided evenly).
    #[default]
    Total,
    /// Every agent runs the whole level.
    PerAgent,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::PerAgent => "per-agent",
        }
    }
}

/// What losing one of several agents does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnAgentLoss {
    /// The sweep goes on with the others; cycles it missed say so.
    #[default]
    Continue,
    /// The sweep stops (results so far kept, run marked partial).
    Stop,
}

/// What the agent samples besides the load, and the idle baseline.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MonitorConfig {
    pub enabled: bool,
    /// Empty: the agent picks the target's server.
    pub watch_process: Vec<String>,
    pub process_interval: Duration,
    pub power_interval: Duration,
    /// Idle power measured before the sweep (zero = none; only with a power source).
    pub baseline: Duration,
}

impl MonitorConfig {
    pub const DEFAULT_PROCESS_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_POWER_INTERVAL: Duration = Duration::from_millis(200);
    pub const DEFAULT_BASELINE: Duration = Duration::from_secs(5);
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            watch_process: Vec::new(),
            process_interval: Self::DEFAULT_PROCESS_INTERVAL,
            power_interval: Self::DEFAULT_POWER_INTERVAL,
            baseline: Self::DEFAULT_BASELINE,
        }
    }
}

/// A run could not start, or broke off.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Output(#[from] OutDirError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("cannot start the simulator: {0}")]
    Sim(#[from] tokengun_simulator::SimError),
    #[error("cannot start the in-process agent: {0}")]
    Agent(#[from] tokengun_agent::AgentError),
    #[error(
        "target {target} is unreachable ({reason}); is the server running? start it (e.g. `ollama serve`) or pass --target, or try --sim"
    )]
    TargetUnreachable { target: String, reason: String },
    #[error(
        "model {model:?} is not on {target}; it has: {available}. Pull it (`ollama pull {model}`) or pass --model with one of those"
    )]
    ModelMissing {
        model: String,
        target: String,
        available: String,
    },
    #[error(
        "level {level} is above the limit of agent {agent} ({max} concurrent requests); lower --levels or restart the agent with a higher --max-concurrency"
    )]
    AboveAgentLimit { level: u32, agent: String, max: u32 },
    #[error(
        "agent {agent} is still running cycle {cycle} of another run; wait for it to end (at most that run's --request-timeout) and try again"
    )]
    AgentBusy { agent: String, cycle: u32 },
    #[error("{0}")]
    Monitor(String),
    #[error("cannot resume {0}")]
    Resume(String),
    #[error(transparent)]
    Records(#[from] tokengun_proto::stored::StoredError),
    #[error("interrupted before any load was sent")]
    Interrupted,
    #[error(
        "the run stopped early: {reason}. Results collected so far are in {run_dir} (marked partial)"
    )]
    Broken { reason: String, run_dir: PathBuf },
}

/// What a finished (or interrupted) run produced.
#[derive(Debug)]
pub struct RunReport {
    pub run_dir: PathBuf,
    pub status: RunStatus,
    pub cycles: Vec<CycleSummary>,
}

/// One agent of the run, as the controller sees it.
struct Member {
    /// `agent1`, `agent2`... in the order given (the only agent: `agent1`).
    label: String,
    link: AgentLink,
    info: AgentInfo,
    /// Its clock against ours, from the lowest-delay probe.
    clock: Option<ClockMap>,
    /// Last record seen, and last acknowledged.
    last_seq: u64,
    acked: u64,
    /// Bumped at each (re)connection of its results stream: older streams' items are ignored.
    stream_no: u64,
    alive: bool,
    /// Its index in the monitor sink.
    monitor: Option<usize>,
    /// Its monitor's origin (agent clock) for the baseline.
    monitor_origin: u64,
    _local: Option<LocalAgent>,
}

impl Member {
    /// Acknowledges what was seen, without waiting: a silent agent must not stall the loop that
    /// notices its silence. A lost ack only means the agent keeps records a little longer.
    fn ack_in_background(&mut self) {
        if !self.alive || self.last_seq <= self.acked {
            return;
        }
        let (link, seq) = (self.link.clone(), self.last_seq);
        self.acked = seq;
        tokio::spawn(async move {
            if let Err(e) = link.ack(seq).await {
                tracing::warn!("ack failed: {e}");
            }
        });
    }
}

/// A record (or a broken stream) from member `.0`'s stream generation `.1`.
type Event = (usize, u64, Result<Record, LinkError>);

struct Started {
    _sim: Option<SimHandle>,
    members: Vec<Member>,
    target: String,
    auth: AgentAuth,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    /// This cycle's scheduled start, on this machine's clock (several agents).
    scheduled_start: Option<std::time::Instant>,
}

impl Started {
    /// (Re)opens member `i`'s results stream after its last seen record.
    async fn open_stream(&mut self, i: usize) -> Result<(), LinkError> {
        let m = &mut self.members[i];
        m.stream_no += 1;
        let (stream_no, tx) = (m.stream_no, self.events_tx.clone());
        let mut rx = m.link.results(m.last_seq).await?;
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                if tx.send((i, stream_no, item)).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }

    /// Tries once to reach a lost member again (same agent id); true when it is back.
    async fn reconnect(&mut self, i: usize) -> bool {
        let addr = self.members[i].info.address.clone();
        let Ok(link) = AgentLink::connect_with(&addr, RECONNECT_TRY, &self.auth).await else {
            return false;
        };
        let Ok(info) = link.hello(false).await else {
            return false;
        };
        if info.agent_id != self.members[i].info.agent_id {
            tracing::warn!(
                "{addr} answers as agent {} (was {}): its records are not these",
                info.agent_id,
                self.members[i].info.agent_id
            );
            return false;
        }
        self.members[i].link = link;
        if self.open_stream(i).await.is_err() {
            return false;
        }
        self.members[i].alive = true;
        true
    }

    fn alive(&self) -> impl Iterator<Item = (usize, &Member)> {
        self.members.iter().enumerate().filter(|(_, m)| m.alive)
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The plan of cycle `cycle_id` at `level`, with `shape` and `duration` (warm-up differs).
fn cycle_plan(
    cfg: &RunConfig,
    target: &str,
    cycle_id: u32,
    level: Level,
    shape: LoadShape,
    duration: Duration,
) -> CyclePlan {
    CyclePlan {
        cycle_id,
        shape,
        concurrency: level.concurrency,
        rate_per_s: level.rate_per_s.unwrap_or(0.0),
        arrival: cfg.arrival,
        duration,
        seed: cfg.seed,
        target_url: target.to_string(),
        api: cfg.api.unwrap_or(Api::OllamaGenerate),
        model: cfg.model.clone(),
        prompts: cfg.prompts.clone(),
        request_timeout: cfg.request_timeout,
        options: cfg.options.clone(),
        extra_body_json: cfg.extra_body_json.clone(),
    }
}

/// The warm-up phase: the first level as a closed loop (open: at its rate) for `warmup`.
fn warmup_plan(cfg: &RunConfig, target: &str) -> Option<CyclePlan> {
    let first = *cfg.levels.first()?;
    let shape = if cfg.shape == LoadShape::Open {
        LoadShape::Open
    } else {
        LoadShape::Closed
    };
    (!cfg.warmup.is_zero()).then(|| cycle_plan(cfg, target, 1, first, shape, cfg.warmup))
}

/// Everything that can be checked without a network: every cycle's plan is valid.
fn validate(cfg: &RunConfig) -> Result<(), RunError> {
    if cfg.levels.is_empty() {
        return Err(PlanError::NoLevels.into());
    }
    // The simulator's address is known only once it runs; any valid URL stands in for it here.
    let target = if cfg.sim.is_some() {
        "http://127.0.0.1:1"
    } else {
        parse_target(&cfg.target)?;
        &cfg.target
    };
    for (i, &level) in cfg.levels.iter().enumerate() {
        let id = u32::try_from(i + 2).unwrap_or(u32::MAX);
        cycle_plan(cfg, target, id, level, cfg.shape, cfg.duration).validate()?;
    }
    if let Some(w) = warmup_plan(cfg, target) {
        w.validate()?;
    }
    for w in &cfg.monitor.watch_process {
        tokengun_agent::monitor::process::Watch::parse(w).map_err(RunError::Monitor)?;
    }
    Ok(())
}

/// The agents' addresses: each `--agent` as given, except a host name that resolves to several
/// addresses (a Kubernetes headless Service), which stands for an agent at each.
async fn expand_agents(agents: &[String], tls: bool) -> Vec<String> {
    let mut out = Vec::new();
    for a in agents {
        let trimmed = a
            .trim()
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let is_ip = trimmed.rsplit_once(':').is_some_and(|(h, _)| {
            h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok()
        });
        if !is_ip && !tls {
            if let Ok(addrs) = tokio::net::lookup_host(trimmed).await {
                let mut v: Vec<String> = addrs.map(|s| s.to_string()).collect();
                v.sort();
                v.dedup();
                if v.len() > 1 {
                    out.extend(v);
                    continue;
                }
            }
        }
        out.push(a.clone());
    }
    out
}

/// Level `level` as agent `k` of `n` runs it: split (`total`) or whole (`per-agent`).
fn share(level: Level, k: usize, n: usize, split: Split) -> Level {
    if split == Split::PerAgent || n <= 1 {
        return level;
    }
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    let k32 = u32::try_from(k).unwrap_or(u32::MAX);
    let part = |total: u32| total / n32 + u32::from(k32 < total % n32);
    match level.rate_per_s {
        Some(r) => Level {
            // An in-flight cap is split too, rounding up so the total is never below it.
            concurrency: if level.concurrency == 0 {
                0
            } else {
                level.concurrency.div_ceil(n32)
            },
            rate_per_s: Some(r / n as f64),
        },
        None => Level {
            concurrency: part(level.concurrency),
            rate_per_s: None,
        },
    }
}

async fn bring_up(cfg: &RunConfig) -> Result<Started, RunError> {
    let sim = match &cfg.sim {
        Some(sim_cfg) => {
            let mut sim_cfg = sim_cfg.clone();
            if !sim_cfg.models.contains(&cfg.model) {
                sim_cfg.models.push(cfg.model.clone());
            }
            Some(SimHandle::start("127.0.0.1:0", sim_cfg).await?)
        }
        None => None,
    };
    let target = sim
        .as_ref()
        .map_or_else(|| cfg.target.clone(), SimHandle::url);
    let addrs = expand_agents(&cfg.agents, cfg.agent_auth.ca.is_some()).await;
    let mut plan: Vec<(String, Option<LocalAgent>)> = Vec::new();
    if addrs.is_empty() {
        // The user is the controller here: the in-process agent fires where it is told.
        let a = LocalAgent::start(AgentConfig {
            targets: TargetPolicy::Any,
            max_concurrency: tokengun_common::plan::MAX_LEVEL,
            ..AgentConfig::default()
        })
        .await?;
        plan.push((a.addr().to_string(), Some(a)));
    } else {
        plan.extend(addrs.into_iter().map(|a| (a, None)));
    }
    let n = plan.len();
    let (events_tx, events) = mpsc::channel(8192);
    let mut members = Vec::new();
    for (k, (addr, local)) in plan.into_iter().enumerate() {
        let in_process = local.is_some();
        let auth = if in_process {
            AgentAuth::default()
        } else {
            cfg.agent_auth.clone()
        };
        let link = AgentLink::connect_with(&addr, CONNECT_TIMEOUT, &auth).await?;
        let info = link.hello(in_process).await?;
        if let Some(level) = cfg
            .levels
            .iter()
            .map(|&l| share(l, k, n, cfg.split))
            .find(|l| l.concurrency > info.max_concurrency)
        {
            return Err(RunError::AboveAgentLimit {
                level: level.concurrency,
                agent: addr,
                max: info.max_concurrency,
            });
        }
        let clock = if n > 1 {
            Some(link.clock_offset(CLOCK_PROBES).await?)
        } else {
            None
        };
        members.push(Member {
            label: format!("agent{}", k + 1),
            link,
            info,
            clock,
            last_seq: 0,
            acked: 0,
            stream_no: 0,
            alive: true,
            monitor: None,
            monitor_origin: 0,
            _local: local,
        });
    }
    Ok(Started {
        _sim: sim,
        members,
        target,
        auth: cfg.agent_auth.clone(),
        events_tx,
        events,
        scheduled_start: None,
    })
}

/// Runs the whole sweep. `stop` cancels it cleanly (Ctrl-C): the running cycle is aborted, every
/// record already collected is written, and the run is marked interrupted.
pub async fn run(
    cfg: RunConfig,
    console: &mut Console,
    stop: CancellationToken,
) -> Result<RunReport, RunError> {
    validate(&cfg)?;
    probe_writable(&cfg.out)?;
    // Ctrl-C while agents and the target are checked: nothing was sent, nothing to keep.
    let (up, target_info) = tokio::select! {
        r = prepare_run(&cfg, false) => r?,
        () = stop.cancelled() => return Err(RunError::Interrupted),
    };
    let mut cfg = cfg;
    let listed = model_available(&cfg.model, &target_info.models);
    let first = &up.members[0].link;
    // Ollama knows exactly what it has, whichever API is used; llama.cpp serves any name.
    let ollama_behind = !listed
        && target_info.api.family() == "openai"
        && first
            .preflight(&up.target, Some(Api::OllamaGenerate))
            .await
            .is_ok();
    if !listed
        && target_info.api.family() == "openai"
        && !target_info.models.is_empty()
        && !ollama_behind
    {
        // Some OpenAI-style servers (llama.cpp) serve their one model under any name.
        cfg.warnings.push(format!(
            "model {:?} is not in {}/v1/models ({}); sending it anyway",
            cfg.model,
            up.target,
            target_info.models.join(", ")
        ));
    } else if !listed {
        return Err(RunError::ModelMissing {
            model: cfg.model.clone(),
            target: up.target.clone(),
            available: if target_info.models.is_empty() {
                "no models at all".into()
            } else {
                target_info.models.join(", ")
            },
        });
    }
    cfg.api = Some(target_info.api);
    run_sweep(cfg, up, target_info, console, stop, None).await
}

/// Takes up a run whose controller was lost (killed, its machine rebooted): the agents kept
/// running the cycle it was in and hold every record it had not acknowledged; records.pb holds
/// the rest. That cycle is completed from both, then the sweep goes on. Monitoring is not
/// resumed.
pub async fn resume(
    run_dir: &std::path::Path,
    console: &mut Console,
    stop: CancellationToken,
) -> Result<RunReport, RunError> {
    let bad = |why: String| RunError::Resume(format!("{}: {why}", run_dir.display()));
    let read = |name: &str| {
        std::fs::read(run_dir.join(name)).map_err(|e| {
            bad(format!(
                "cannot read {name} ({e}); only runs of this tokengun version with remote agents can be resumed"
            ))
        })
    };
    let mut cfg: RunConfig = serde_json::from_slice(&read("plan.json")?)
        .map_err(|e| bad(format!("plan.json is not a run plan ({e})")))?;
    let manifest: Manifest = serde_json::from_slice(&read("run.json")?)
        .map_err(|e| bad(format!("run.json is not a tokengun manifest ({e})")))?;
    if cfg.agents.is_empty() {
        return Err(bad(
            "it used the agent inside the controller, which ended with it: nothing is left to replay"
                .into(),
        ));
    }
    if manifest.status == RunStatus::Complete {
        return Err(bad("the run is already complete".into()));
    }
    let stored = tokengun_proto::stored::read_all(&run_dir.join("records.pb"))?;
    // The phase it broke off in: after the warm-up (if it ran) and the cycles written.
    let warmup_planned = !cfg.warmup.is_zero();
    let phase = usize::from(warmup_planned && manifest.warmup.is_some()) + manifest.cycles.len();
    let cycle_id = if warmup_planned && manifest.warmup.is_none() {
        1
    } else {
        u32::try_from(manifest.cycles.len() + 2).unwrap_or(u32::MAX)
    };
    let phases = usize::from(warmup_planned) + cfg.levels.len();
    if phase >= phases {
        return Err(bad("every level already has its results".into()));
    }
    cfg.monitor.enabled = false;
    let (mut up, _) = prepare_run(&cfg, true).await?;
    let mut started = false;
    let mut heads = Vec::new();
    for (k, m) in up.members.iter_mut().enumerate() {
        let Some(was) = manifest.agents.get(k) else {
            return Err(bad(format!("{} was not in the run", m.link.addr())));
        };
        if was.agent_id != m.info.agent_id {
            return Err(bad(format!(
                "{} now answers as agent {} but the run's agent was {}: its records are not there",
                m.link.addr(),
                m.info.agent_id,
                was.agent_id
            )));
        }
        let (state, running, head) = m.link.status().await?;
        started |= state == "running" && running == cycle_id;
        heads.push(head);
        // Replay from what records.pb holds of it (never before the run's own first record).
        let kept = stored
            .iter()
            .filter(|(a, _)| *a == m.label)
            .map(|(_, r)| r.seq)
            .max()
            .unwrap_or(0);
        m.last_seq = kept.max(was.first_seq);
        m.acked = m.last_seq;
        m.stream_no += 1; // the streams prepare_run opened start from the wrong place
    }
    for i in 0..up.members.len() {
        up.open_stream(i).await?;
    }
    let of_cycle = |r: &Record| match &r.body {
        RecordBody::CycleStarted { cycle_id: c, .. } => *c == cycle_id,
        RecordBody::Request(q) => q.cycle_id == cycle_id,
        RecordBody::CycleDone(d) => d.cycle_id == cycle_id,
        _ => false,
    };
    let mut stored: Vec<(String, Record, bool)> = stored
        .into_iter()
        .filter(|(_, r)| of_cycle(r))
        .map(|(a, r)| (a, r, true))
        .collect();
    // What the agents recorded while no controller listened, up to where they stand now: the
    // cycle's records among them say whether it started.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while up
        .members
        .iter()
        .zip(&heads)
        .any(|(m, &head)| m.last_seq < head)
    {
        let ev = tokio::select! {
            ev = up.events.recv() => ev,
            () = tokio::time::sleep_until(deadline) => {
                return Err(bad("the agents did not replay their records within 15 s".into()));
            }
        };
        let Some((i, no, item)) = ev else { break };
        if no != up.members[i].stream_no {
            continue;
        }
        let rec = item?;
        if rec.seq <= up.members[i].last_seq {
            continue;
        }
        up.members[i].last_seq = rec.seq;
        if of_cycle(&rec) {
            stored.push((up.members[i].label.clone(), rec, false));
        }
    }
    started |= stored
        .iter()
        .any(|(_, r, _)| matches!(r.body, RecordBody::CycleStarted { .. }));
    let mut manifest = manifest;
    manifest.status = RunStatus::Running;
    manifest.ended_at = None;
    manifest.notes.push(format!(
        "resumed at {} from cycle {cycle_id} ({} record(s) of it were on disk); monitoring was not resumed",
        now_rfc3339(),
        stored.len()
    ));
    let mut dir = RunDir::reopen(run_dir)?;
    dir.set_throughput_csv(cfg.throughput_csv);
    dir.write_manifest(&manifest)?;
    console.line(&format!(
        "resuming {} at cycle {cycle_id}: {} agent(s) back, {} record(s) of that cycle on disk",
        run_dir.display(),
        up.members.len(),
        stored.len()
    ));
    let target_info = TargetInfo {
        server_version: manifest.server_version.clone(),
        models: Vec::new(),
        api: manifest.api,
    };
    cfg.api = Some(manifest.api);
    run_sweep(
        cfg,
        up,
        target_info,
        console,
        stop,
        Some(Resumed {
            dir,
            manifest,
            at: ResumeAt {
                phase,
                stored,
                started,
            },
        }),
    )
    .await
}

/// Brings up the simulator and agents, checks the target from every agent (each applies it on
/// its own host), and finds where each agent's record stream stands (an agent serves run after
/// run; its sequence numbers go on across them).
async fn prepare_run(cfg: &RunConfig, resuming: bool) -> Result<(Started, TargetInfo), RunError> {
    let mut up = bring_up(cfg).await?;
    let mut found: Option<TargetInfo> = None;
    for m in &mut up.members {
        let (state, cycle, last_seq) = m.link.status().await?;
        // A resumed run's agents may still be running its cycle.
        if state == "running" && !resuming {
            return Err(RunError::AgentBusy {
                agent: m.link.addr().to_string(),
                cycle,
            });
        }
        m.last_seq = last_seq;
        m.acked = last_seq;
        let api = found.as_ref().map(|t| t.api).or(cfg.api);
        let info = m
            .link
            .preflight(&up.target, api)
            .await
            .map_err(|e| match e {
                LinkError::Refused {
                    code: tonic::Code::Unavailable,
                    message,
                    ..
                } => RunError::TargetUnreachable {
                    target: up.target.clone(),
                    reason: message,
                },
                other => other.into(),
            })?;
        if let Some(first) = &found {
            if !model_available(&cfg.model, &info.models)
                && model_available(&cfg.model, &first.models)
            {
                return Err(RunError::ModelMissing {
                    model: cfg.model.clone(),
                    target: format!("{} (seen from {})", up.target, m.link.addr()),
                    available: info.models.join(", "),
                });
            }
        } else {
            found = Some(info);
        }
    }
    for i in 0..up.members.len() {
        up.open_stream(i).await?;
    }
    let info = found.ok_or(RunError::Plan(PlanError::NoLevels))?;
    Ok((up, info))
}

async fn run_sweep(
    cfg: RunConfig,
    up: Started,
    target_info: TargetInfo,
    console: &mut Console,
    stop: CancellationToken,
    resumed: Option<Resumed>,
) -> Result<RunReport, RunError> {
    if let Some(r) = resumed {
        return sweep(
            cfg,
            up,
            target_info,
            console,
            stop,
            r.dir,
            r.manifest,
            Some(r.at),
        )
        .await;
    }
    let run_id = cfg
        .run_id
        .clone()
        .unwrap_or_else(|| default_run_id(SystemTime::now()));
    let mut dir = RunDir::create(&cfg.out, &run_id, cfg.run_id.is_none())?;
    dir.set_throughput_csv(cfg.throughput_csv);
    let run_id = dir
        .root()
        .file_name()
        .map_or(run_id, |n| n.to_string_lossy().into_owned());
    let labels: Vec<String> = cfg.levels.iter().map(Level::label).collect();
    let many = up.members.len() > 1;
    let mut manifest = Manifest {
        tool: "tokengun".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        run_id,
        status: RunStatus::Running,
        started_at: now_rfc3339(),
        ended_at: None,
        controller_host: gethostname::gethostname().to_string_lossy().into_owned(),
        target: up.target.clone(),
        api: target_info.api,
        model: cfg.model.clone(),
        prompt: cfg
            .prompts
            .first()
            .map(|p| p.text.clone())
            .unwrap_or_default(),
        prompt_count: cfg.prompts.len(),
        shape: cfg.shape,
        levels: labels.clone(),
        duration_ms: (cfg.shape != LoadShape::Burst).then(|| ms(cfg.duration)),
        arrival: cfg.arrival,
        warmup_ms: ms(cfg.warmup),
        seed: cfg.seed,
        request_timeout_ms: ms(cfg.request_timeout),
        extra_body_json: cfg.extra_body_json.clone(),
        slo: cfg.slo,
        stop_on_error_rate: cfg.stop_on_error_rate.map(|f| f * 100.0),
        server_version: target_info.server_version.clone(),
        simulator: cfg.sim.as_ref().map(sim_manifest),
        agents: up
            .members
            .iter()
            .map(|m| {
                let mut info = m.info.clone();
                info.label = m.label.clone();
                info.clock_uncertainty_ms = m.clock.map(|c| c.rtt.as_secs_f64() * 1e3 / 2.0);
                info.first_seq = m.last_seq;
                info
            })
            .collect(),
        split: many.then(|| cfg.split.as_str().to_string()),
        monitor: None,
        warmup: None,
        cycles: Vec::new(),
        stop_reason: None,
        notes: Vec::new(),
    };
    for w in &cfg.warnings {
        console.line(&format!("warning: {w}"));
        manifest.notes.push(format!("warning: {w}"));
    }
    dir.write_manifest(&manifest)?;
    console.agents(
        up.members
            .iter()
            .map(|m| m.link.addr().to_string())
            .collect(),
    );
    console.line(&format!(
        "tokengun {} · target {} ({}) · model {} · {} levels {} · results in {}",
        env!("CARGO_PKG_VERSION"),
        up.target,
        target_info
            .server_version
            .as_deref()
            .map_or_else(|| "version unknown".to_string(), |v| format!("server {v}")),
        cfg.model,
        cfg.shape.as_str(),
        labels.join(","),
        dir.root().display()
    ));
    if many {
        console.line(&format!(
            "{} agents ({}), levels {}",
            up.members.len(),
            up.members
                .iter()
                .map(|m| format!("{} {}", m.label, m.link.addr()))
                .collect::<Vec<_>>()
                .join(", "),
            if cfg.split == Split::Total {
                "split among them"
            } else {
                "applied to each"
            }
        ));
    }

    dir.write_plan(&cfg)?;
    sweep(cfg, up, target_info, console, stop, dir, manifest, None).await
}

/// Where a resumed run takes up: the phase it broke off in, and what records.pb holds of it.
struct ResumeAt {
    phase: usize,
    /// (agent, record, already in records.pb).
    stored: Vec<(String, Record, bool)>,
    /// The agents had started that phase's cycle (it is collected, not started again).
    started: bool,
}

/// A run folder taken up again after its controller was lost.
struct Resumed {
    dir: RunDir,
    manifest: Manifest,
    at: ResumeAt,
}

/// Runs the sweep's phases into `dir` (from `resume.phase` when resuming).
// The run's parts, all owned here for the length of the sweep.
#[allow(clippy::too_many_arguments)]
async fn sweep(
    cfg: RunConfig,
    mut up: Started,
    target_info: TargetInfo,
    console: &mut Console,
    stop: CancellationToken,
    mut dir: RunDir,
    mut manifest: Manifest,
    mut resume: Option<ResumeAt>,
) -> Result<RunReport, RunError> {
    let labels: Vec<String> = cfg.levels.iter().map(Level::label).collect();
    let many = up.members.len() > 1;
    let mut broken: Option<String> = None;
    let mut monitor = if cfg.monitor.enabled {
        start_monitoring(&cfg, &mut up, target_info.api, &dir, console, &mut manifest).await?
    } else {
        None
    };
    let baseline_power_w = match monitor.as_mut() {
        Some(sink) if sink.has_power() && !cfg.monitor.baseline.is_zero() => {
            let w = measure_baseline(&cfg.monitor, &mut up, sink, console, &stop).await;
            if let Some(info) = manifest.monitor.as_mut() {
                info.baseline_power_w = w;
                info.baseline_s = Some(cfg.monitor.baseline.as_secs_f64());
            }
            w
        }
        _ => None,
    };
    dir.write_manifest(&manifest)?;
    let warmup = warmup_plan(&cfg, &up.target);
    let phases: Vec<(Level, CyclePlan)> = warmup
        .iter()
        .map(|w| {
            (
                Level {
                    concurrency: w.concurrency,
                    rate_per_s: (w.shape == LoadShape::Open).then_some(w.rate_per_s),
                },
                w.clone(),
            )
        })
        .chain(cfg.levels.iter().enumerate().map(|(i, &level)| {
            let id = u32::try_from(i + 2).unwrap_or(u32::MAX);
            (
                level,
                cycle_plan(&cfg, &up.target, id, level, cfg.shape, cfg.duration),
            )
        }))
        .collect();
    let first_phase = resume.as_ref().map_or(0, |r| r.phase);
    for (index, (level, plan)) in phases.into_iter().enumerate().skip(first_phase) {
        if stop.is_cancelled() {
            break;
        }
        let taken_up = resume.take().filter(|r| r.started);
        let is_warmup = warmup.is_some() && index == 0;
        let level_index = index.saturating_sub(usize::from(warmup.is_some()));
        // Agents lost earlier get one more chance before each cycle.
        for i in 0..up.members.len() {
            if !up.members[i].alive && up.reconnect(i).await {
                let note = format!(
                    "{} ({}) is back before cycle {}",
                    up.members[i].label,
                    up.members[i].link.addr(),
                    plan.cycle_id
                );
                console.line(&format!("  {note}"));
                manifest.notes.push(note);
            }
        }
        let alive: Vec<usize> = up.alive().map(|(i, _)| i).collect();
        if alive.is_empty() {
            broken = Some("every agent was lost".into());
            break;
        }
        if is_warmup {
            console.warmup_start(&plan_words(&plan));
        } else {
            console.cycle_start(
                level_index,
                cfg.levels.len(),
                &plan_words(&plan),
                &cfg.model,
            );
        }
        let level_label = if is_warmup {
            "warmup".to_string()
        } else {
            labels[level_index].clone()
        };
        // Each agent's share of the level; agents with nothing to do sit this cycle out.
        let mut parts: Vec<MemberCycle> = Vec::new();
        for (k, &i) in alive.iter().enumerate() {
            let l = share(level, k, alive.len(), cfg.split);
            if l.concurrency == 0 && l.rate_per_s.is_none_or(|r| r <= 0.0) {
                continue;
            }
            let mut p = plan.clone();
            p.concurrency = l.concurrency;
            p.rate_per_s = l.rate_per_s.unwrap_or(0.0);
            // The warm-up's requests are measured but not written: its figures go to run.json.
            let writer = if is_warmup {
                None
            } else {
                let sub = many.then_some(up.members[i].label.as_str());
                Some(dir.begin_cycle(target_info.api, &cfg.model, &level_label, sub)?)
            };
            parts.push(MemberCycle::new(i, p, writer));
        }
        let window_ns = (plan.shape != LoadShape::Burst)
            .then(|| u64::try_from(plan.duration.as_nanos()).unwrap_or(u64::MAX));
        let mut sink = CycleSink {
            // Peak-concurrency edges older than any request can still be in flight (timeout, a
            // lost agent's replay, a minute's margin) are folded: an hours-long level stays small.
            stats: tokengun_common::CycleStats::with_window(window_ns)
                .fold_after(cfg.request_timeout + cfg.reconnect_wait + Duration::from_secs(60)),
            slo: cfg.slo,
            table: Vec::new(),
            keep_all_rows: plan.shape == LoadShape::Burst,
        };
        if let Some(r) = taken_up {
            // The agents ran this cycle while no controller listened: what records.pb holds of
            // it is written again, the rest is replayed by the agents.
            for (agent, rec, on_disk) in r.stored {
                let Some(k) = parts
                    .iter()
                    .position(|p| up.members[p.member].label == agent)
                else {
                    continue;
                };
                if !on_disk {
                    dir.store(&agent, &rec)?;
                }
                let clock = up.members[parts[k].member].clock;
                parts[k].apply(rec.body, &plan, clock, None, &mut sink, console)?;
            }
            for p in &mut parts {
                p.last_heard = tokio::time::Instant::now();
            }
            console.line(&format!(
                "  taking up cycle {} where the lost controller left it",
                plan.cycle_id
            ));
        } else if let Err(e) = start_cycle(&mut up, &mut parts, many).await {
            broken = Some(e);
            break;
        }
        for pc in parts.iter().filter(|p| p.lost.is_some()) {
            let note = format!(
                "{} lost before cycle {} started ({}); the cycle runs without it",
                up.members[pc.member].label,
                plan.cycle_id,
                pc.lost.as_deref().unwrap_or_default()
            );
            console.line(&format!("  warning: {note}"));
            manifest.notes.push(note);
        }
        if cfg.on_agent_loss == OnAgentLoss::Stop && parts.iter().any(|p| p.lost.is_some()) {
            broken = Some("an agent was lost before the cycle and --on-agent-loss is stop".into());
            for p in parts.iter().filter(|p| p.lost.is_none()) {
                let _ = up.members[p.member].link.abort(plan.cycle_id).await;
            }
            break;
        }
        if let Some(m) = monitor.as_mut() {
            m.set_label(&level_label);
        }
        collect_cycle(
            &mut up,
            &mut dir,
            &cfg,
            &plan,
            &mut parts,
            &mut sink,
            monitor.as_mut(),
            console,
            &stop,
        )
        .await?;
        let lost: Vec<&MemberCycle> = parts.iter().filter(|p| p.lost.is_some()).collect();
        for p in &lost {
            console.agent_lost(p.member);
            let note = format!(
                "cycle {}: {} ({}) was lost: {}{}",
                plan.cycle_id,
                up.members[p.member].label,
                up.members[p.member].link.addr(),
                p.lost.as_deref().unwrap_or_default(),
                if p.recovered {
                    "; it came back and its records were replayed"
                } else {
                    ""
                }
            );
            manifest.notes.push(note);
        }
        // A cycle closed by an agent's restart is a loss (below), not an abort by the agent.
        let aborted = parts
            .iter()
            .any(|p| p.done.is_some_and(|d| d.aborted && !d.recovered));
        let gaps: u64 = parts.iter().map(|p| p.gaps).sum();
        let partial = !lost.is_empty() || aborted || gaps > 0 || stop.is_cancelled();
        let mut lost_after: Option<String> = None;
        let expected: u32 = parts.iter().map(MemberCycle::expected_requests).sum();
        let info = CycleInfo {
            model: cfg.model.clone(),
            shape: plan.shape.as_str().to_string(),
            level: level_label,
            concurrency: plan.concurrency,
            rate_per_s: (plan.shape == LoadShape::Open).then_some(plan.rate_per_s),
            window_ns,
            expected_requests: expected,
        };
        let mut summary = CycleSummary::from_stats(&info, &sink.stats, &cfg.slo, partial);
        // Was tokengun itself the bottleneck? Each agent measured its own CPU and loop delay.
        let checks: Vec<_> = parts.iter().filter_map(|p| p.done?.self_check).collect();
        summary.apply_self_checks(&checks);
        if many {
            let starts: Vec<f64> = parts.iter().filter_map(|p| p.start_offset_s).collect();
            summary.start_spread_s = starts
                .iter()
                .copied()
                .reduce(f64::max)
                .zip(starts.iter().copied().reduce(f64::min))
                .map(|(hi, lo)| hi - lo);
            summary.agents = parts
                .iter()
                .map(|p| tokengun_common::stats::AgentCycle {
                    agent: up.members[p.member].label.clone(),
                    address: up.members[p.member].link.addr().to_string(),
                    requests: p.expected_requests(),
                    completed: p.completed,
                    failed: p.failed,
                    output_tokens: p.output_tokens,
                    start_offset_s: p.start_offset_s,
                    lost: p.lost.is_some(),
                    recovered: p.recovered,
                })
                .collect();
        }
        if let Some(m) = monitor.as_mut() {
            let windows: Vec<(usize, u64, u64)> = parts
                .iter()
                .filter_map(|p| {
                    let mi = up.members[p.member].monitor?;
                    Some((mi, p.origin_mono_ns?, p.done?.ended_mono_ns))
                })
                .collect();
            // The power reading that closes a window comes one interval after the cycle.
            if m.has_power() && !windows.is_empty() {
                let wait = cfg.monitor.power_interval * 3 + Duration::from_millis(500);
                let w2 = windows.clone();
                if let Err(e) = pump(
                    &mut up,
                    m,
                    |m, _| w2.iter().all(|&(mi, _, to)| m.power_reached(mi, to)),
                    wait,
                    &stop,
                )
                .await
                {
                    lost_after = Some(e);
                }
            }
            let f = m.cycle_figures(&windows, summary.output_tokens, baseline_power_w);
            summary.energy = f.energy;
            summary.server = f.server;
            summary.gpu_busy_pct_mean = f.gpu_busy_pct_mean;
            summary.gpu_freq_mhz_mean = f.gpu_freq_mhz_mean;
            m.set_label("");
            m.flush()?;
            for n in m.drain_notes() {
                console.line(&format!("  note: {n}"));
                manifest.notes.push(n);
            }
        }
        if gaps > 0 {
            manifest.notes.push(format!(
                "cycle {}: {gaps} record(s) missing from the agents' streams",
                plan.cycle_id
            ));
        }
        if is_warmup {
            console.line(&format!("  {}", summary_line(&summary)));
            manifest.warmup = Some(summary);
        } else {
            for p in &mut parts {
                if let Some(w) = p.writer.as_mut() {
                    w.flush()?;
                }
            }
            dir.flush_records(true)?;
            dir.append_cycle(&summary)?;
            console.cycle_end(&summary, &sink.table, sink.stats.requests as usize);
            if let Some(line) = crate::console::monitor_line(&summary) {
                console.line(&line);
            }
            if let Some(line) = crate::console::self_check_line(&summary) {
                console.line(&line);
            }
            if let Some(sp) = summary.start_spread_s {
                console.line(&format!(
                    "  {} agents started within {:.1} ms of each other",
                    summary.agents.len(),
                    sp * 1e3
                ));
            }
            manifest.cycles.push(summary);
        }
        dir.write_manifest(&manifest)?;
        // Everything up to here is on disk: the agents may forget it.
        for p in &parts {
            if p.gaps == 0 {
                up.members[p.member].ack_in_background();
            }
        }
        let unrecovered: Vec<&MemberCycle> = parts
            .iter()
            .filter(|p| p.lost.is_some() && !p.recovered)
            .collect();
        if let Some(reason) = lost_after {
            broken = Some(reason);
            break;
        }
        if !unrecovered.is_empty()
            && (!many || cfg.on_agent_loss == OnAgentLoss::Stop || up.alive().next().is_none())
        {
            broken = unrecovered[0].lost.clone();
            break;
        }
        if aborted {
            if !stop.is_cancelled() {
                let who = parts
                    .iter()
                    .filter(|p| p.done.is_some_and(|d| d.aborted && !d.recovered))
                    .map(|p| up.members[p.member].link.addr().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                broken = Some(format!(
                    "agent {who} aborted cycle {} on its own (was it stopped?)",
                    plan.cycle_id
                ));
            }
            break;
        }
        if let (Some(limit), Some(last)) = (cfg.stop_on_error_rate, manifest.cycles.last()) {
            if !is_warmup && last.error_rate > limit {
                let reason = format!(
                    "level {} failed {:.1}% of its requests, above --stop-on-error-rate {:.1}%",
                    last.level,
                    last.error_rate * 100.0,
                    limit * 100.0
                );
                console.line(&format!("\n■ sweep stopped: {reason}"));
                manifest.stop_reason = Some(reason);
                break;
            }
        }
    }
    if let Some(m) = monitor.as_mut() {
        finish_monitoring(&mut up, m).await;
        for n in m.drain_notes() {
            manifest.notes.push(n);
        }
        m.flush()?;
    }
    // A stop asked for by the user is an interruption, even if the agent then misbehaved.
    manifest.status = if stop.is_cancelled() {
        RunStatus::Interrupted
    } else if broken.is_some() {
        RunStatus::Partial
    } else {
        RunStatus::Complete
    };
    if let Some(reason) = &broken {
        manifest.notes.push(format!("run stopped early: {reason}"));
    }
    let broken = broken.filter(|_| !stop.is_cancelled());
    manifest.ended_at = Some(now_rfc3339());
    dir.write_manifest(&manifest)?;
    console.sweep_table(&manifest.cycles);
    if let Some(reason) = broken {
        return Err(RunError::Broken {
            reason,
            run_dir: dir.root().to_path_buf(),
        });
    }
    Ok(RunReport {
        run_dir: dir.root().to_path_buf(),
        status: manifest.status,
        cycles: manifest.cycles,
    })
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// "8 concurrent requests", "8 requests kept in flight for 60s", "2.5 requests/s for 60s".
fn plan_words(p: &CyclePlan) -> String {
    let dur = humantime::format_duration(p.duration);
    match p.shape {
        LoadShape::Burst => format!(
            "{} concurrent request{}",
            p.concurrency,
            if p.concurrency == 1 { "" } else { "s" }
        ),
        LoadShape::Closed => format!("{} requests kept in flight for {dur}", p.concurrency),
        LoadShape::Open => format!(
            "{} requests/s ({:?}) for {dur}{}",
            tokengun_common::plan::format_rate(p.rate_per_s),
            p.arrival,
            if p.concurrency > 0 {
                format!(", at most {} in flight", p.concurrency)
            } else {
                String::new()
            }
        ),
    }
}

/// One agent's part of a cycle.
struct MemberCycle {
    member: usize,
    plan: CyclePlan,
    writer: Option<CycleWriter>,
    done: Option<CycleDone>,
    origin_mono_ns: Option<u64>,
    /// Its cycle origin against the scheduled start, on this machine's clock (several agents).
    start_offset_s: Option<f64>,
    lost: Option<String>,
    /// Lost, then reconnected and replayed.
    recovered: bool,
    /// Until when a lost agent is waited for.
    reconnect_until: Option<tokio::time::Instant>,
    gaps: u64,
    last_heard: tokio::time::Instant,
    requests: u32,
    completed: u32,
    failed: u32,
    output_tokens: u64,
}

impl MemberCycle {
    fn new(member: usize, plan: CyclePlan, writer: Option<CycleWriter>) -> Self {
        Self {
            member,
            plan,
            writer,
            done: None,
            origin_mono_ns: None,
            start_offset_s: None,
            lost: None,
            recovered: false,
            reconnect_until: None,
            gaps: 0,
            last_heard: tokio::time::Instant::now(),
            requests: 0,
            completed: 0,
            failed: 0,
            output_tokens: 0,
        }
    }

    /// Takes one of this agent's records of `plan`'s cycle: its start, a request (written and
    /// counted), its end. Returns a progress record for the caller to merge; records of other
    /// cycles are ignored.
    fn apply(
        &mut self,
        body: RecordBody,
        plan: &CyclePlan,
        clock: Option<ClockMap>,
        scheduled: Option<std::time::Instant>,
        sink: &mut CycleSink,
        console: &mut Console,
    ) -> Result<Option<Progress>, OutDirError> {
        match body {
            RecordBody::CycleStarted {
                cycle_id,
                started_unix_ns,
                origin_mono_ns,
            } if cycle_id == plan.cycle_id => {
                self.origin_mono_ns = Some(origin_mono_ns);
                if let (Some(c), Some(t0)) = (clock, scheduled) {
                    let local = c.local_at(origin_mono_ns);
                    self.start_offset_s = Some(if local >= t0 {
                        (local - t0).as_secs_f64()
                    } else {
                        -(t0 - local).as_secs_f64()
                    });
                }
                if let Some(w) = self.writer.as_mut() {
                    w.set_origin(started_unix_ns);
                }
            }
            RecordBody::Request(r) if r.cycle_id == plan.cycle_id => {
                console.request_done(&r);
                self.requests += 1;
                if r.outcome == tokengun_common::OutcomeKind::Completed {
                    self.completed += 1;
                    self.output_tokens += r.output_tokens;
                } else {
                    self.failed += 1;
                }
                if let Some(w) = self.writer.as_mut() {
                    w.record(&r)?;
                }
                sink.take(*r);
            }
            RecordBody::Progress(pr) if pr.cycle_id == plan.cycle_id => return Ok(Some(pr)),
            RecordBody::CycleDone(d) if d.cycle_id == plan.cycle_id => {
                if d.recovered {
                    // The agent restarted mid-cycle: what was in flight then is gone.
                    self.lost
                        .get_or_insert_with(|| "the agent restarted mid-cycle".into());
                    self.recovered = true;
                }
                self.done = Some(d);
            }
            _ => {} // records of an earlier cycle, already counted
        }
        Ok(None)
    }

    /// Requests this part should account for: the agent's own count when its cycle end came, a
    /// burst's planned size when it did not, or when an agent restart lost what was in flight (the
    /// restarted agent knows only the requests it recorded).
    fn expected_requests(&self) -> u32 {
        let planned = if self.plan.shape == LoadShape::Burst {
            self.plan.concurrency
        } else {
            self.requests
        };
        match self.done {
            Some(d) if d.recovered => d.requests.max(planned),
            Some(d) => d.requests,
            None => planned,
        }
    }

    /// Nothing more will come from this agent for this cycle.
    fn finished(&self, now: tokio::time::Instant) -> bool {
        self.done.is_some()
            || (self.lost.is_some() && self.reconnect_until.is_none_or(|u| now >= u))
    }
}

/// Prepares every part, then starts them together: with several agents, at one instant a little
/// ahead, mapped onto each agent's clock. A part whose agent fails is marked lost; Err only when
/// every agent failed.
async fn start_cycle(
    up: &mut Started,
    parts: &mut [MemberCycle],
    many: bool,
) -> Result<(), String> {
    for p in parts.iter_mut() {
        let m = &mut up.members[p.member];
        if let Err(e) = m.link.prepare(&p.plan).await {
            p.lost = Some(e.to_string());
            m.alive = false;
        }
    }
    let mut lead = Duration::ZERO;
    if many {
        // Fresh offsets: monotonic clocks drift apart over a long sweep.
        for p in parts.iter().filter(|p| p.lost.is_none()) {
            let m = &mut up.members[p.member];
            if let Ok(c) = m.link.clock_offset(CLOCK_PROBES).await {
                m.clock = Some(c);
            }
        }
        let worst_rtt = parts
            .iter()
            .filter_map(|p| up.members[p.member].clock.map(|c| c.rtt))
            .max()
            .unwrap_or_default();
        lead = START_LEAD + worst_rtt * 4;
    }
    let t0 = std::time::Instant::now() + lead;
    let starts = parts.iter().filter(|p| p.lost.is_none()).map(|p| {
        let m = &up.members[p.member];
        let at = if many {
            m.clock.map_or(0, |c| c.agent_ns_at(t0))
        } else {
            0
        };
        let link = m.link.clone();
        let id = p.plan.cycle_id;
        async move { link.start(id, at).await }
    });
    let results = futures_util::future::join_all(starts).await;
    let mut it = results.into_iter();
    for p in parts.iter_mut().filter(|p| p.lost.is_none()) {
        if let Some(Err(e)) = it.next() {
            p.lost = Some(e.to_string());
            up.members[p.member].alive = false;
        }
        p.last_heard = tokio::time::Instant::now();
    }
    if parts.iter().all(|p| p.lost.is_some()) {
        return Err(parts
            .first()
            .and_then(|p| p.lost.clone())
            .unwrap_or_else(|| "no agent could start the cycle".into()));
    }
    // Each part's start offset is found when its CycleStarted arrives (see collect_cycle).
    for p in parts.iter_mut() {
        p.start_offset_s = None;
    }
    up.scheduled_start = Some(t0);
    Ok(())
}

/// Where a cycle's request records go as they arrive, across agents: the merged statistics
/// (from raw records, never from per-agent percentiles) and (bounded) the console's table rows.
struct CycleSink {
    stats: tokengun_common::CycleStats,
    slo: Slo,
    /// Table rows without their timelines.
    table: Vec<RequestRecord>,
    keep_all_rows: bool,
}

impl CycleSink {
    fn take(&mut self, mut r: RequestRecord) {
        self.stats.add(&r, &self.slo);
        if self.keep_all_rows || self.table.len() <= crate::console::TABLE_MAX_ROWS {
            // The table needs the rate: keep the first chunk, one holding the tokens between, and
            // the last (tokens_per_s spans first to last), not the whole timeline.
            if r.timeline.len() > 3 {
                let first = r.timeline[0];
                let last = r.timeline[r.timeline.len() - 1];
                let between: u32 = r.timeline[1..r.timeline.len() - 1]
                    .iter()
                    .map(|c| c.tokens)
                    .sum();
                r.timeline = vec![
                    first,
                    tokengun_common::TokenChunk {
                        offset_ns: last.offset_ns,
                        tokens: between,
                    },
                    last,
                ];
            }
            self.table.push(r);
        }
    }
}

/// Sums the agents' latest progress into one.
fn merged_progress(latest: &[Option<Progress>]) -> Option<Progress> {
    let mut it = latest.iter().flatten();
    let mut acc = it.next()?.clone();
    for p in it {
        acc.in_flight += p.in_flight;
        acc.completed += p.completed;
        acc.failed += p.failed;
        acc.tokens += p.tokens;
        acc.elapsed_ns = acc.elapsed_ns.max(p.elapsed_ns);
        acc.live.extend(p.live.iter().cloned());
        acc.live_omitted += p.live_omitted;
    }
    Some(acc)
}

/// Reads every participating agent's records until each has ended its part of the cycle (or was
/// lost and not back within --reconnect-wait), writing them as they come.
// The fleet, the plan, the parts, the sinks and the stop token are all this loop's to drive.
#[allow(clippy::too_many_arguments)]
async fn collect_cycle(
    up: &mut Started,
    dir: &mut RunDir,
    cfg: &RunConfig,
    plan: &CyclePlan,
    parts: &mut [MemberCycle],
    sink: &mut CycleSink,
    mut monitor: Option<&mut MonitorSink>,
    console: &mut Console,
    stop: &CancellationToken,
) -> Result<(), RunError> {
    let mut abort_deadline: Option<tokio::time::Instant> = None;
    // Records on disk are acknowledged as the cycle goes, so the agents' logs stay small.
    let mut ack_tick = tokio::time::interval(ACK_EVERY);
    ack_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let part_of: std::collections::HashMap<usize, usize> = parts
        .iter()
        .enumerate()
        .map(|(k, p)| (p.member, k))
        .collect();
    let mut progress: Vec<Option<Progress>> = vec![None; parts.len()];
    let reconnect_wait = if up.members.iter().any(|m| m._local.is_some()) {
        Duration::ZERO
    } else {
        cfg.reconnect_wait
    };
    loop {
        let now = tokio::time::Instant::now();
        if parts.iter().all(|p| p.finished(now)) {
            break;
        }
        let grace = async {
            match abort_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = up.events.recv() => {
                let Some((i, stream_no, item)) = ev else { break };
                if stream_no != up.members[i].stream_no {
                    continue; // an older stream of a reconnected agent
                }
                let k = part_of.get(&i).copied();
                let rec = match item {
                    Ok(r) => r,
                    Err(e) => {
                        up.members[i].alive = false;
                        if let Some(k) = k {
                            let p = &mut parts[k];
                            if p.done.is_none() && p.lost.is_none() {
                                p.lost = Some(e.to_string());
                                p.reconnect_until = Some(tokio::time::Instant::now() + reconnect_wait);
                                if reconnect_wait > Duration::ZERO {
                                    console.line(&format!(
                                        "  {} lost ({e}); waiting up to {} for it to come back",
                                        up.members[i].label,
                                        humantime::format_duration(reconnect_wait)
                                    ));
                                }
                            }
                        }
                        continue;
                    }
                };
                let m = &mut up.members[i];
                if rec.seq <= m.last_seq {
                    continue; // a replayed duplicate
                }
                let gap = rec.seq - m.last_seq - 1;
                m.last_seq = rec.seq;
                if let RecordBody::Monitor(b) = rec.body {
                    if let (Some(ms), Some(mi)) = (monitor.as_deref_mut(), m.monitor) {
                        ms.take(mi, *b)?;
                        console.set_monitor(Some(ms.snapshot()));
                    }
                    continue;
                }
                let Some(k) = k else { continue };
                let stored = match &rec.body {
                    RecordBody::CycleStarted { cycle_id, .. } => *cycle_id == plan.cycle_id,
                    RecordBody::Request(r) => r.cycle_id == plan.cycle_id,
                    RecordBody::CycleDone(d) => d.cycle_id == plan.cycle_id,
                    _ => false,
                };
                if stored {
                    dir.store(&up.members[i].label, &rec)?;
                }
                let p = &mut parts[k];
                p.last_heard = tokio::time::Instant::now();
                if gap > 0 {
                    p.gaps += gap;
                    console.dropped(k, gap);
                }
                if let RecordBody::CycleStarted {
                    cycle_id,
                    origin_mono_ns,
                    ..
                } = &rec.body
                    && *cycle_id == plan.cycle_id
                    && let (Some(ms), Some(mi)) = (monitor.as_deref_mut(), up.members[i].monitor)
                {
                    ms.begin_window(mi, *origin_mono_ns);
                }
                let clock = up.members[i].clock;
                match p.apply(rec.body, plan, clock, up.scheduled_start, sink, console) {
                    Ok(Some(pr)) => {
                        progress[k] = Some(pr);
                        if let Some(all) = merged_progress(&progress) {
                            console.progress(plan, &all);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // The disk refused: stop the load rather than measure into nothing.
                        for q in parts.iter() {
                            let _ = up.members[q.member].link.abort(plan.cycle_id).await;
                        }
                        return Err(e.into());
                    }
                }
            }
            () = stop.cancelled(), if abort_deadline.is_none() => {
                console.stopping();
                abort_deadline = Some(tokio::time::Instant::now() + ABORT_GRACE);
                for p in parts.iter_mut().filter(|p| p.done.is_none() && p.lost.is_none()) {
                    if let Err(e) = up.members[p.member].link.abort(plan.cycle_id).await {
                        p.lost = Some(format!("abort failed: {e}"));
                    }
                }
                // A user's stop does not wait for lost agents.
                for p in parts.iter_mut() {
                    p.reconnect_until = None;
                }
            }
            () = grace => {
                for p in parts.iter_mut().filter(|p| p.done.is_none() && p.lost.is_none()) {
                    p.lost = Some(format!("the agent did not finish the aborted cycle within {ABORT_GRACE:?}"));
                }
                break;
            }
            _ = check.tick() => {
                let now = tokio::time::Instant::now();
                for p in parts.iter_mut() {
                    if p.done.is_none() && p.lost.is_none() && now - p.last_heard > SILENCE_LIMIT {
                        p.lost = Some(format!("no word from the agent for {SILENCE_LIMIT:?}"));
                        p.reconnect_until = Some(now + reconnect_wait);
                        up.members[p.member].alive = false;
                    }
                }
                // Lost agents are tried again while they are waited for.
                let retry: Vec<usize> = parts
                    .iter()
                    .filter(|p| p.done.is_none() && p.lost.is_some() && p.reconnect_until.is_some_and(|u| now < u))
                    .map(|p| p.member)
                    .collect();
                for i in retry {
                    if !up.members[i].alive && up.reconnect(i).await {
                        if let Some(&k) = part_of.get(&i) {
                            parts[k].recovered = true;
                            parts[k].last_heard = tokio::time::Instant::now();
                            console.line(&format!(
                                "  {} is back: replaying its records from #{}",
                                up.members[i].label,
                                up.members[i].last_seq + 1
                            ));
                        }
                    }
                }
            }
            _ = ack_tick.tick() => {
                for p in parts.iter_mut() {
                    if let Some(w) = p.writer.as_mut() {
                        w.flush()?;
                    }
                }
                if let Some(m) = monitor.as_deref_mut() {
                    m.flush()?;
                }
                dir.flush_records(false)?;
                for p in parts.iter() {
                    if p.gaps == 0 {
                        up.members[p.member].ack_in_background();
                    }
                }
            }
        }
    }
    Ok(())
}

/// Starts every agent's monitors and the run's monitor files. A monitor that cannot start is a
/// warning: the load is measured without it.
async fn start_monitoring(
    cfg: &RunConfig,
    up: &mut Started,
    api: Api,
    dir: &RunDir,
    console: &mut Console,
    manifest: &mut Manifest,
) -> Result<Option<MonitorSink>, RunError> {
    let spec = tokengun_proto::MonitorSpec {
        watch_process: cfg.monitor.watch_process.clone(),
        target_url: up.target.clone(),
        process_interval_ms: ms(cfg.monitor.process_interval),
        power_interval_ms: ms(cfg.monitor.power_interval),
        power: true,
        server_hint: if api.family() == "ollama" {
            "ollama".into()
        } else {
            String::new()
        },
    };
    let mut sink = MonitorSink::new(dir.root());
    let mut info = MonitorInfo {
        sources: Vec::new(),
        watching: Vec::new(),
        process_interval_ms: ms(cfg.monitor.process_interval),
        power_interval_ms: ms(cfg.monitor.power_interval),
        baseline_s: None,
        baseline_power_w: None,
    };
    let many = up.members.len() > 1;
    for m in &mut up.members {
        let reply = match m.link.start_monitor(spec.clone()).await {
            Ok(r) => r,
            Err(LinkError::Refused {
                code: tonic::Code::InvalidArgument,
                message,
                ..
            }) => {
                // A bad --watch-process pattern: the user's mistake, said before any load.
                return Err(RunError::Monitor(message));
            }
            Err(e) => {
                let w = format!("monitoring is off on {} for this run: {e}", m.label);
                console.line(&format!("warning: {w}"));
                manifest.notes.push(w);
                continue;
            }
        };
        let sources: Vec<tokengun_common::SourceStatus> =
            reply.sources.into_iter().map(Into::into).collect();
        let power: Vec<String> = sources
            .iter()
            .filter(|s| s.available && s.source != tokengun_agent::monitor::SOURCE_PROCESS)
            .map(|s| format!("{} ({})", s.source, s.detail))
            .collect();
        let prefix = if many {
            format!("{}: ", m.label)
        } else {
            String::new()
        };
        console.line(&format!(
            "monitor: {prefix}{} · power: {}",
            if reply.watching.is_empty() {
                "machine only".to_string()
            } else {
                reply.watching.join("; ")
            },
            if power.is_empty() {
                "none found (run.json monitor.sources, or `tokengun-agent probe`, says why)"
                    .to_string()
            } else {
                power.join(", ")
            }
        ));
        m.monitor = Some(sink.add_agent(&m.label, reply.now_mono_ns, !power.is_empty())?);
        m.monitor_origin = reply.now_mono_ns;
        info.sources.extend(sources.into_iter().map(|mut s| {
            if many {
                s.detail = format!("{}: {}", m.label, s.detail);
            }
            s
        }));
        info.watching
            .extend(reply.watching.into_iter().map(|w| format!("{prefix}{w}")));
    }
    if up.members.iter().all(|m| m.monitor.is_none()) {
        return Ok(None);
    }
    manifest.monitor = Some(info);
    Ok(Some(sink))
}

/// Reads records until `done(sink, events)` holds, `wait` passes or the user stops: monitor
/// records are taken, others (none are expected between cycles) only advance the sequence.
/// Ok(true): done held; Err: every stream broke.
async fn pump(
    up: &mut Started,
    sink: &mut MonitorSink,
    mut done: impl FnMut(&MonitorSink, &[Member]) -> bool,
    wait: Duration,
    stop: &CancellationToken,
) -> Result<bool, String> {
    let deadline = tokio::time::Instant::now() + wait;
    while !done(sink, &up.members) {
        tokio::select! {
            ev = up.events.recv() => match ev {
                Some((i, stream_no, item)) if stream_no == up.members[i].stream_no => match item {
                    Ok(r) if r.seq > up.members[i].last_seq => {
                        up.members[i].last_seq = r.seq;
                        if let (RecordBody::Monitor(b), Some(mi)) = (r.body, up.members[i].monitor) {
                            sink.take(mi, *b).map_err(|e| e.to_string())?;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        up.members[i].alive = false;
                        if up.alive().next().is_none() {
                            return Err(e.to_string());
                        }
                    }
                },
                Some(_) => {}
                None => return Err("the results streams ended".into()),
            },
            () = tokio::time::sleep_until(deadline) => return Ok(false),
            () = stop.cancelled() => return Ok(false),
        }
    }
    Ok(true)
}

/// Measures idle power before the sweep (summed over agents); None when it could not be.
async fn measure_baseline(
    m: &MonitorConfig,
    up: &mut Started,
    sink: &mut MonitorSink,
    console: &mut Console,
    stop: &CancellationToken,
) -> Option<f64> {
    console.line(&format!(
        "measuring idle power for {} before the sweep (--baseline)…",
        humantime::format_duration(m.baseline)
    ));
    sink.set_label("baseline");
    let span = u64::try_from(m.baseline.as_nanos()).unwrap_or(u64::MAX);
    let windows: Vec<(usize, u64, u64)> = up
        .members
        .iter()
        .filter_map(|mb| Some((mb.monitor?, mb.monitor_origin, mb.monitor_origin + span)))
        .collect();
    let wait = m.baseline + m.power_interval * 3 + Duration::from_secs(1);
    let w2 = windows.clone();
    let r = pump(
        up,
        sink,
        |s, _| w2.iter().all(|&(i, _, end)| s.power_reached(i, end)),
        wait,
        stop,
    )
    .await;
    sink.set_label("");
    if let Err(e) = r {
        tracing::warn!("baseline: {e}");
        return None;
    }
    let parts: Vec<f64> = windows
        .iter()
        .filter_map(|&(i, from, to)| sink.energy(i, from, to).map(|w| w.mean_power_w))
        .collect();
    let w = (!parts.is_empty()).then(|| parts.iter().sum::<f64>());
    match w {
        Some(w) => console.line(&format!("  idle power {w:.1} W")),
        None => console.line("  idle power: no readings came; net figures are left out"),
    }
    w
}

/// Stops the agents' monitors and takes their last records (not from lost agents).
async fn finish_monitoring(up: &mut Started, sink: &mut MonitorSink) {
    let mut targets = Vec::new();
    for (i, m) in up.members.iter().enumerate().filter(|(_, m)| m.alive) {
        match m.link.stop_monitor().await {
            Ok(seq) => targets.push((i, seq)),
            Err(e) => tracing::warn!("stopping the monitor of {} failed: {e}", m.label),
        }
    }
    // Not cancellable: a Ctrl-C has already stopped the load; these are its last samples.
    let never = CancellationToken::new();
    let t2 = targets.clone();
    let _ = pump(
        up,
        sink,
        |_, members| {
            t2.iter()
                .all(|&(i, seq)| members[i].last_seq >= seq || !members[i].alive)
        },
        Duration::from_secs(5),
        &never,
    )
    .await;
    for (i, _) in targets {
        let m = &mut up.members[i];
        if m.alive && m.last_seq > m.acked {
            if let Err(e) = m.link.ack(m.last_seq).await {
                tracing::warn!("ack failed: {e}");
            } else {
                m.acked = m.last_seq;
            }
        }
    }
}

fn ms_f(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn sim_manifest(c: &SimConfig) -> serde_json::Value {
    let e = &c.engine;
    serde_json::json!({
        "models": c.models,
        "flavor": format!("{:?}", c.flavor),
        "slots": e.slots,
        "queue_limit": e.queue_limit,
        "step_base_ms": ms_f(e.step_base),
        "step_per_seq_ms": ms_f(e.step_per_seq),
        "prefill_base_ms": ms_f(e.prefill_base),
        "prefill_per_token_ms": ms_f(e.prefill_per_token),
        "prefill_stalls": e.prefill_stalls,
        "load_time_ms": ms_f(e.load_time),
        "jitter_sigma": e.jitter_sigma,
        "output": match c.output {
            tokengun_simulator::OutputLen::Fixed(n) => serde_json::json!({"fixed": n}),
            tokengun_simulator::OutputLen::Uniform { min, max } => serde_json::json!({"uniform": {"min": min, "max": max}}),
        },
        "reasoning_tokens": c.reasoning_tokens,
        "time_scale": c.time_scale,
        "seed": c.seed,
        "faults": {
            "fail_every": c.faults.fail_every,
            "cut_every": c.faults.cut_every,
            "cut_after_tokens": c.faults.cut_after_tokens,
            "malformed_every": c.faults.malformed_every,
            "slow_first_every": c.faults.slow_first_every,
            "slow_first_by_ms": ms_f(c.faults.slow_first_by),
            "stall_at_ms": c.faults.stall_at.map(ms_f),
            "stall_for_ms": ms_f(c.faults.stall_for),
        },
    })
}
