//! The orchestrator: validates the plan, brings up the simulator and agent if asked, checks the
//! target, then runs the sweep cycle by cycle, writing each cycle's results as soon as it ends.

use crate::console::{Console, summary_line};
use crate::link::{AgentAuth, AgentInfo, AgentLink, LinkError, TargetInfo};
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
    Api, Arrival, CycleDone, CycleInfo, CyclePlan, CycleSummary, LoadShape, PlanError, PromptSpec,
    Record, RecordBody, RequestOptions, RequestRecord, Slo,
};
use tokengun_simulator::{SimConfig, SimHandle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often records already written are acknowledged to the agent during a cycle.
const ACK_EVERY: Duration = Duration::from_secs(2);

/// How long to wait for an agent to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After an abort, how long in-flight requests get to be recorded.
const ABORT_GRACE: Duration = Duration::from_secs(10);
/// Silence on the results stream longer than this, while a cycle runs, means the agent is lost
/// (progress records arrive every 250 ms).
const SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// One level of a sweep: a concurrency, or (open loops) a rate with an optional in-flight cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    /// Burst/closed: requests at once. Open: in-flight cap (0 = none).
    pub concurrency: u32,
    /// Open: requests per second.
    pub rate_per_s: Option<f64>,
}

/// Everything a run needs, compiled and validated from a plan file and flags.
#[derive(Debug, Clone)]
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
    /// Serve the built-in simulator and aim at it instead of `target`.
    pub sim: Option<SimConfig>,
    /// Process, machine and power sampling.
    pub monitor: MonitorConfig,
    /// Settings given that this plan does not use, said once at the start.
    pub warnings: Vec<String>,
}

/// What the agent samples besides the load, and the idle baseline.
#[derive(Debug, Clone, PartialEq)]
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
    #[error("{0} agents given, but this version drives one agent per run; pass a single --agent")]
    TooManyAgents(usize),
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

struct Started {
    _sim: Option<SimHandle>,
    _agent: Option<LocalAgent>,
    link: AgentLink,
    info: AgentInfo,
    target: String,
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
    if cfg.agents.len() > 1 {
        return Err(RunError::TooManyAgents(cfg.agents.len()));
    }
    for w in &cfg.monitor.watch_process {
        tokengun_agent::monitor::process::Watch::parse(w).map_err(RunError::Monitor)?;
    }
    Ok(())
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
    let (agent, addr, in_process) = match cfg.agents.first() {
        Some(a) => (None, a.clone(), false),
        None => {
            // The user is the controller here: the in-process agent fires where it is told.
            let a = LocalAgent::start(AgentConfig {
                targets: TargetPolicy::Any,
                max_concurrency: tokengun_common::plan::MAX_LEVEL,
                ..AgentConfig::default()
            })
            .await?;
            let addr = a.addr().to_string();
            (Some(a), addr, true)
        }
    };
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
        .find(|l| l.concurrency > info.max_concurrency)
    {
        return Err(RunError::AboveAgentLimit {
            level: level.concurrency,
            agent: addr,
            max: info.max_concurrency,
        });
    }
    Ok(Started {
        _sim: sim,
        _agent: agent,
        link,
        info,
        target,
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
    let (up, target_info, first_seq) = tokio::select! {
        r = prepare_run(&cfg) => r?,
        () = stop.cancelled() => return Err(RunError::Interrupted),
    };
    let mut cfg = cfg;
    let listed = model_available(&cfg.model, &target_info.models);
    // Ollama knows exactly what it has, whichever API is used; llama.cpp serves any name.
    let ollama_behind = !listed
        && target_info.api.family() == "openai"
        && up
            .link
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
    run_sweep(cfg, up, target_info, first_seq, console, stop).await
}

/// Brings up the simulator and agent, checks the target, and finds where the agent's record
/// stream stands (an agent serves run after run; its sequence numbers go on across them).
async fn prepare_run(cfg: &RunConfig) -> Result<(Started, TargetInfo, u64), RunError> {
    let up = bring_up(cfg).await?;
    let (state, cycle, last_seq) = up.link.status().await?;
    if state == "running" {
        return Err(RunError::AgentBusy {
            agent: up.link.addr().to_string(),
            cycle,
        });
    }
    let target_info = up
        .link
        .preflight(&up.target, cfg.api)
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
    Ok((up, target_info, last_seq))
}

async fn run_sweep(
    cfg: RunConfig,
    up: Started,
    target_info: TargetInfo,
    first_seq: u64,
    console: &mut Console,
    stop: CancellationToken,
) -> Result<RunReport, RunError> {
    let run_id = cfg
        .run_id
        .clone()
        .unwrap_or_else(|| default_run_id(SystemTime::now()));
    let mut dir = RunDir::create(&cfg.out, &run_id, cfg.run_id.is_none())?;
    let run_id = dir
        .root()
        .file_name()
        .map_or(run_id, |n| n.to_string_lossy().into_owned());
    let labels: Vec<String> = cfg.levels.iter().map(Level::label).collect();
    let mut manifest = Manifest {
        tool: "tokengun",
        version: env!("CARGO_PKG_VERSION"),
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
        agents: vec![up.info.clone()],
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
    console.agents(vec![up.link.addr().to_string()]);
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

    let mut results = up.link.results(first_seq).await?;
    let mut last_seq = first_seq;
    let mut broken: Option<String> = None;
    let mut monitor = if cfg.monitor.enabled {
        start_monitoring(&cfg, &up, target_info.api, &dir, console, &mut manifest).await?
    } else {
        None
    };
    let baseline_power_w = match monitor.as_mut() {
        Some((sink, origin)) if has_power(&manifest) && !cfg.monitor.baseline.is_zero() => {
            let w = measure_baseline(
                &cfg.monitor,
                sink,
                *origin,
                &mut results,
                &mut last_seq,
                console,
                &stop,
            )
            .await;
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
    let phases = warmup
        .iter()
        .cloned()
        .chain(cfg.levels.iter().enumerate().map(|(i, &level)| {
            let id = u32::try_from(i + 2).unwrap_or(u32::MAX);
            cycle_plan(&cfg, &up.target, id, level, cfg.shape, cfg.duration)
        }));
    for (index, plan) in phases.enumerate() {
        if stop.is_cancelled() {
            break;
        }
        let is_warmup = warmup.is_some() && index == 0;
        let level_index = index.saturating_sub(usize::from(warmup.is_some()));
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
        // The warm-up's requests are measured but not written: its figures go to run.json only.
        let mut writer = if is_warmup {
            None
        } else {
            Some(dir.begin_cycle(target_info.api, &cfg.model, &level_label)?)
        };
        if let Err(e) = start_cycle(&up.link, &plan).await {
            broken = Some(e.to_string());
            break;
        }
        let window_ns = (plan.shape != LoadShape::Burst)
            .then(|| u64::try_from(plan.duration.as_nanos()).unwrap_or(u64::MAX));
        let mut sink = CycleSink {
            writer: writer.as_mut(),
            stats: tokengun_common::CycleStats::with_window(window_ns),
            slo: cfg.slo,
            table: Vec::new(),
            keep_all_rows: plan.shape == LoadShape::Burst,
        };
        if let Some((m, _)) = monitor.as_mut() {
            m.set_label(&level_label);
        }
        let outcome = collect_cycle(
            &up.link,
            &plan,
            &mut results,
            &mut last_seq,
            &mut sink,
            monitor.as_mut().map(|(m, _)| m),
            console,
            &stop,
        )
        .await?;
        if outcome.lost.is_some() {
            console.agent_lost(0);
        }
        let partial = outcome.lost.is_some() || outcome.aborted || outcome.gaps > 0;
        let mut outcome_lost_after: Option<String> = None;
        let info = CycleInfo {
            model: cfg.model.clone(),
            shape: plan.shape.as_str().to_string(),
            level: level_label,
            concurrency: plan.concurrency,
            rate_per_s: (plan.shape == LoadShape::Open).then_some(plan.rate_per_s),
            window_ns,
            expected_requests: outcome.done.map_or(
                if plan.shape == LoadShape::Burst {
                    plan.concurrency
                } else {
                    0
                },
                |d| d.requests,
            ),
        };
        let mut summary = CycleSummary::from_stats(&info, &sink.stats, &cfg.slo, partial);
        if let (Some((m, _)), Some(from), Some(to)) = (
            monitor.as_mut(),
            outcome.origin_mono_ns,
            outcome.done.map(|d| d.ended_mono_ns),
        ) {
            // The power reading that closes the window comes one interval after the cycle.
            if has_power(&manifest) {
                let wait = cfg.monitor.power_interval * 3 + Duration::from_millis(500);
                if let Err(e) = pump(
                    &mut results,
                    &mut last_seq,
                    m,
                    |m, _| m.power_reached(to),
                    wait,
                    &stop,
                )
                .await
                {
                    outcome_lost_after = Some(e);
                }
            }
            let f = m.cycle_figures(from, to, summary.output_tokens, baseline_power_w);
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
        if outcome.gaps > 0 {
            manifest.notes.push(format!(
                "cycle {}: {} record(s) missing from the agent's stream",
                plan.cycle_id, outcome.gaps
            ));
        }
        if is_warmup {
            console.line(&format!("  {}", summary_line(&summary)));
            manifest.warmup = Some(summary);
        } else {
            if let Some(w) = sink.writer.as_mut() {
                w.flush()?;
            }
            dir.append_cycle(&summary)?;
            console.cycle_end(&summary, &sink.table, sink.stats.requests as usize);
            if let Some(line) = crate::console::monitor_line(&summary) {
                console.line(&line);
            }
            manifest.cycles.push(summary);
        }
        dir.write_manifest(&manifest)?;
        // Everything up to here is on disk: the agent may forget it.
        if outcome.lost.is_none() && last_seq > 0 {
            if let Err(e) = up.link.ack(last_seq).await {
                tracing::warn!("ack failed: {e}");
            }
        }
        if let Some(reason) = outcome.lost.or(outcome_lost_after) {
            broken = Some(reason);
            break;
        }
        if outcome.aborted {
            if !stop.is_cancelled() {
                broken = Some(format!(
                    "agent {} aborted cycle {} on its own (was it stopped?)",
                    up.link.addr(),
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
    if let Some((m, _)) = monitor.as_mut() {
        finish_monitoring(&up.link, m, &mut results, &mut last_seq, broken.is_some()).await;
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

async fn start_cycle(link: &AgentLink, plan: &CyclePlan) -> Result<(), LinkError> {
    link.prepare(plan).await?;
    link.start(plan.cycle_id, 0).await
}

/// Where a cycle's request records go as they arrive: the level's files, the running statistics,
/// and (bounded) the rows for the console's table.
struct CycleSink<'a> {
    writer: Option<&'a mut CycleWriter>,
    stats: tokengun_common::CycleStats,
    slo: Slo,
    /// Table rows without their timelines.
    table: Vec<RequestRecord>,
    keep_all_rows: bool,
}

impl CycleSink<'_> {
    fn take(&mut self, mut r: RequestRecord) -> Result<(), OutDirError> {
        self.stats.add(&r, &self.slo);
        if let Some(w) = self.writer.as_mut() {
            w.record(&r)?;
        }
        if self.keep_all_rows || self.table.len() <= crate::console::TABLE_MAX_ROWS {
            r.timeline = Vec::new();
            self.table.push(r);
        }
        Ok(())
    }
}

struct CycleOutcome {
    /// The agent's own totals, when its cycle end arrived.
    done: Option<CycleDone>,
    aborted: bool,
    /// Why the cycle's stream broke off, if it did.
    lost: Option<String>,
    /// Sequence numbers that never arrived.
    gaps: u64,
    /// The cycle's origin on the agent's monotonic clock.
    origin_mono_ns: Option<u64>,
}

// The stream, its position, the sinks and the stop token are all this loop's to drive.
#[allow(clippy::too_many_arguments)]
async fn collect_cycle(
    link: &AgentLink,
    plan: &CyclePlan,
    results: &mut mpsc::Receiver<Result<Record, LinkError>>,
    last_seq: &mut u64,
    sink: &mut CycleSink<'_>,
    mut monitor: Option<&mut MonitorSink>,
    console: &mut Console,
    stop: &CancellationToken,
) -> Result<CycleOutcome, RunError> {
    let mut out = CycleOutcome {
        done: None,
        aborted: false,
        lost: None,
        gaps: 0,
        origin_mono_ns: None,
    };
    let mut abort_deadline: Option<tokio::time::Instant> = None;
    // Records on disk are acknowledged as the cycle goes, so the agent's log stays small.
    let mut ack_tick = tokio::time::interval(ACK_EVERY);
    ack_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut acked = *last_seq;
    loop {
        let silence = tokio::time::sleep(SILENCE_LIMIT);
        let grace = async {
            match abort_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            rec = results.recv() => {
                let rec = match rec {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => { out.lost = Some(e.to_string()); break; }
                    None => { out.lost = Some("the results stream ended".into()); break; }
                };
                if rec.seq <= *last_seq {
                    continue; // a replayed duplicate
                }
                let gap = rec.seq - *last_seq - 1;
                if gap > 0 {
                    out.gaps += gap;
                    console.dropped(0, gap);
                }
                *last_seq = rec.seq;
                match rec.body {
                    RecordBody::CycleStarted { cycle_id, started_unix_ns, origin_mono_ns } if cycle_id == plan.cycle_id => {
                        out.origin_mono_ns = Some(origin_mono_ns);
                        if let Some(w) = sink.writer.as_mut() {
                            w.set_origin(started_unix_ns);
                        }
                    }
                    RecordBody::Monitor(b) => {
                        if let Some(m) = monitor.as_deref_mut() {
                            m.take(*b)?;
                            console.set_monitor(Some(*m.snapshot()));
                        }
                    }
                    RecordBody::Request(r) if r.cycle_id == plan.cycle_id => {
                        console.request_done(&r);
                        if let Err(e) = sink.take(*r) {
                            // The disk refused: stop the load rather than measure into nothing.
                            let _ = link.abort(plan.cycle_id).await;
                            return Err(e.into());
                        }
                    }
                    RecordBody::Progress(p) if p.cycle_id == plan.cycle_id => console.progress(plan, &p),
                    RecordBody::CycleDone(d) if d.cycle_id == plan.cycle_id => {
                        out.aborted |= d.aborted;
                        out.done = Some(d);
                        break;
                    }
                    _ => {} // records of an earlier cycle, already counted
                }
            }
            () = stop.cancelled(), if abort_deadline.is_none() => {
                console.stopping();
                out.aborted = true;
                abort_deadline = Some(tokio::time::Instant::now() + ABORT_GRACE);
                if let Err(e) = link.abort(plan.cycle_id).await {
                    out.lost = Some(format!("abort failed: {e}"));
                    break;
                }
            }
            () = grace => {
                out.lost = Some(format!("the agent did not finish the aborted cycle within {ABORT_GRACE:?}"));
                break;
            }
            () = silence => {
                out.lost = Some(format!("no word from the agent for {SILENCE_LIMIT:?}"));
                break;
            }
            _ = ack_tick.tick(), if *last_seq > acked && out.gaps == 0 => {
                if let Some(w) = sink.writer.as_mut() {
                    w.flush()?;
                }
                if let Some(m) = monitor.as_deref_mut() {
                    m.flush()?;
                }
                match link.ack(*last_seq).await {
                    Ok(()) => acked = *last_seq,
                    Err(e) => tracing::warn!("ack failed: {e}"),
                }
            }
        }
    }
    Ok(out)
}

fn has_power(m: &Manifest) -> bool {
    m.monitor.as_ref().is_some_and(|i| {
        i.sources
            .iter()
            .any(|s| s.available && s.source != tokengun_agent::monitor::SOURCE_PROCESS)
    })
}

/// Starts the agent's monitors and the run's monitor files. A monitor that cannot start is a
/// warning: the load is measured without it.
async fn start_monitoring(
    cfg: &RunConfig,
    up: &Started,
    api: Api,
    dir: &RunDir,
    console: &mut Console,
    manifest: &mut Manifest,
) -> Result<Option<(MonitorSink, u64)>, RunError> {
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
    let reply = match up.link.start_monitor(spec).await {
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
            let w = format!("monitoring is off for this run: {e}");
            console.line(&format!("warning: {w}"));
            manifest.notes.push(w);
            return Ok(None);
        }
    };
    let sources: Vec<tokengun_common::SourceStatus> =
        reply.sources.into_iter().map(Into::into).collect();
    let power: Vec<String> = sources
        .iter()
        .filter(|s| s.available && s.source != tokengun_agent::monitor::SOURCE_PROCESS)
        .map(|s| format!("{} ({})", s.source, s.detail))
        .collect();
    let watching = reply.watching;
    console.line(&format!(
        "monitor: {} · power: {}",
        if watching.is_empty() {
            "machine only".to_string()
        } else {
            watching.join("; ")
        },
        if power.is_empty() {
            "none found (run.json monitor.sources, or `tokengun-agent probe`, says why)".to_string()
        } else {
            power.join(", ")
        }
    ));
    let sink = MonitorSink::create(
        dir.root(),
        &up.info.agent_id,
        reply.now_mono_ns,
        !power.is_empty(),
    )?;
    manifest.monitor = Some(MonitorInfo {
        sources,
        watching,
        process_interval_ms: ms(cfg.monitor.process_interval),
        power_interval_ms: ms(cfg.monitor.power_interval),
        baseline_s: None,
        baseline_power_w: None,
    });
    Ok(Some((sink, reply.now_mono_ns)))
}

/// Reads monitor records until `done(sink, last_seq)` holds, `wait` passes or the user stops;
/// other records (none are expected between cycles) only advance the sequence. Ok(true): done
/// held; Err: the stream broke.
async fn pump(
    results: &mut mpsc::Receiver<Result<Record, LinkError>>,
    last_seq: &mut u64,
    sink: &mut MonitorSink,
    mut done: impl FnMut(&MonitorSink, u64) -> bool,
    wait: Duration,
    stop: &CancellationToken,
) -> Result<bool, String> {
    let deadline = tokio::time::Instant::now() + wait;
    while !done(sink, *last_seq) {
        tokio::select! {
            rec = results.recv() => match rec {
                Some(Ok(r)) if r.seq > *last_seq => {
                    *last_seq = r.seq;
                    if let RecordBody::Monitor(b) = r.body {
                        sink.take(*b).map_err(|e| e.to_string())?;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the results stream ended".into()),
            },
            () = tokio::time::sleep_until(deadline) => return Ok(false),
            () = stop.cancelled() => return Ok(false),
        }
    }
    Ok(true)
}

/// Measures idle power before the sweep; None when it could not be (interrupted, no readings).
async fn measure_baseline(
    m: &MonitorConfig,
    sink: &mut MonitorSink,
    origin: u64,
    results: &mut mpsc::Receiver<Result<Record, LinkError>>,
    last_seq: &mut u64,
    console: &mut Console,
    stop: &CancellationToken,
) -> Option<f64> {
    console.line(&format!(
        "measuring idle power for {} before the sweep (--baseline)…",
        humantime::format_duration(m.baseline)
    ));
    sink.set_label("baseline");
    let end = origin + u64::try_from(m.baseline.as_nanos()).unwrap_or(u64::MAX);
    let wait = m.baseline + m.power_interval * 3 + Duration::from_secs(1);
    let r = pump(
        results,
        last_seq,
        sink,
        |s, _| s.power_reached(end),
        wait,
        stop,
    )
    .await;
    sink.set_label("");
    if let Err(e) = r {
        tracing::warn!("baseline: {e}");
        return None;
    }
    let w = sink.energy(origin, end).map(|w| w.mean_power_w);
    match w {
        Some(w) => console.line(&format!("  idle power {w:.1} W")),
        None => console.line("  idle power: no readings came; net figures are left out"),
    }
    w
}

/// Stops the agent's monitors and takes their last records (not when the agent is lost).
async fn finish_monitoring(
    link: &AgentLink,
    sink: &mut MonitorSink,
    results: &mut mpsc::Receiver<Result<Record, LinkError>>,
    last_seq: &mut u64,
    lost: bool,
) {
    if lost {
        return;
    }
    let final_seq = match link.stop_monitor().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("stopping the monitor failed: {e}");
            return;
        }
    };
    // Not cancellable: a Ctrl-C has already stopped the load; these are its last samples.
    let never = CancellationToken::new();
    let wait = Duration::from_secs(5);
    let reached = pump(
        results,
        last_seq,
        sink,
        |_, seq| seq >= final_seq,
        wait,
        &never,
    )
    .await;
    if matches!(reached, Ok(true)) && *last_seq > 0 {
        if let Err(e) = link.ack(*last_seq).await {
            tracing::warn!("ack failed: {e}");
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
