//! Bringing a fleet up: the simulator when asked, the in-process agent or the named ones (a
//! headless Service name stands for each address it resolves to), their limits and clocks, then
//! the target as every agent sees it and the model on it.

use super::{CLOCK_PROBES, Fleet, Member};
use crate::link::{AgentAuth, AgentLink, LinkError, TargetInfo};
use crate::plan::{RunConfig, share};
use std::time::Duration;
use tokengun_agent::{AgentConfig, LocalAgent, TargetPolicy};
use tokengun_common::Api;
use tokengun_common::models::model_available;
use tokengun_simulator::SimHandle;

/// How long to wait for an agent to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The fleet could not be brought up, or the target is not fit for the run.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
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
    #[error("no agent took part")]
    NoAgent,
    #[error("the plan's server did not start for setting {setting}: {reason}")]
    ServerStart { setting: String, reason: String },
}

/// The agents' addresses: each `--agent` as given, except a host name that resolves to several
/// addresses (a Kubernetes headless Service), which stands for an agent at each.
pub async fn expand_agents(agents: &[String], tls: bool) -> Vec<String> {
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

/// The simulator, when the run serves one, with the run's model among its models.
async fn start_sim(cfg: &RunConfig) -> Result<Option<SimHandle>, FleetError> {
    let Some(sim_cfg) = &cfg.sim else {
        return Ok(None);
    };
    let mut sim_cfg = sim_cfg.clone();
    if !sim_cfg.models.contains(&cfg.model) {
        sim_cfg.models.push(cfg.model.clone());
    }
    Ok(Some(SimHandle::start("127.0.0.1:0", sim_cfg).await?))
}

/// Connects to agent `k` of `n` at `addr`, checks it can run every level's share, and (several
/// agents) reads its clock.
async fn join(
    cfg: &RunConfig,
    (k, n): (usize, usize),
    addr: String,
    local: Option<LocalAgent>,
) -> Result<Member, FleetError> {
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
        return Err(FleetError::AboveAgentLimit {
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
    Ok(Member {
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
        local,
    })
}

/// Starts the simulator (if asked) and connects to every agent: the named ones, or one inside
/// this process.
pub async fn bring_up(cfg: &RunConfig) -> Result<Fleet, FleetError> {
    let sim = start_sim(cfg).await?;
    let target = sim
        .as_ref()
        .map_or_else(|| cfg.target.clone(), SimHandle::url);
    let addrs = expand_agents(&cfg.agents, cfg.agent_auth.ca.is_some()).await;
    let mut plan: Vec<(String, Option<LocalAgent>)> = Vec::new();
    if addrs.is_empty() {
        // The user is the controller here: the in-process agent fires where it is told.
        // The plan's own server command is the user's too: this agent may start it.
        let a = LocalAgent::start(AgentConfig {
            targets: TargetPolicy::Any,
            max_concurrency: tokengun_common::plan::MAX_LEVEL,
            allowed_server_commands: cfg
                .matrix
                .server
                .iter()
                .map(|s| s.command.clone())
                .collect(),
            ..AgentConfig::default()
        })
        .await?;
        plan.push((a.addr().to_string(), Some(a)));
    } else {
        plan.extend(addrs.into_iter().map(|a| (a, None)));
    }
    let n = plan.len();
    let mut members = Vec::new();
    for (k, (addr, local)) in plan.into_iter().enumerate() {
        members.push(join(cfg, (k, n), addr, local).await?);
    }
    Ok(Fleet::new(sim, members, target, cfg.agent_auth.clone()))
}

/// Brings up the simulator and agents, checks the target from every agent (each applies it on
/// its own host), and finds where each agent's record stream stands (an agent serves run after
/// run; its sequence numbers go on across them).
pub async fn prepare_run(
    cfg: &RunConfig,
    resuming: bool,
    setting: Option<usize>,
) -> Result<(Fleet, TargetInfo), FleetError> {
    let mut up = bring_up(cfg).await?;
    // A plan that owns its server starts it (the setting the sweep begins with) before the
    // target is checked.
    if let (Some(server), Some(i)) = (&cfg.matrix.server, setting) {
        let started = super::server::start_setting(&up, cfg, server, i).await?;
        up.server = Some((i, started));
    }
    match check_fleet(&mut up, cfg, resuming).await {
        Ok(info) => Ok((up, info)),
        Err(e) => {
            super::server::stop_after_error(&up, cfg).await;
            Err(e)
        }
    }
}

/// Every agent's state and its view of the target (see [`prepare_run`]).
async fn check_fleet(
    up: &mut Fleet,
    cfg: &RunConfig,
    resuming: bool,
) -> Result<TargetInfo, FleetError> {
    let mut found: Option<TargetInfo> = None;
    for m in &mut up.members {
        let (state, cycle, last_seq) = m.link.status().await?;
        // A resumed run's agents may still be running its cycle.
        if state == "running" && !resuming {
            return Err(FleetError::AgentBusy {
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
                } => FleetError::TargetUnreachable {
                    target: up.target.clone(),
                    reason: message,
                },
                other => other.into(),
            })?;
        if let Some(first) = &found {
            if !model_available(&cfg.model, &info.models)
                && model_available(&cfg.model, &first.models)
            {
                return Err(FleetError::ModelMissing {
                    model: cfg.model.clone(),
                    target: format!("{} (seen from {})", up.target, m.link.addr()),
                    available: info.models.join(", "),
                });
            }
        } else {
            found = Some(info);
        }
    }
    up.open_streams().await?;
    found.ok_or(FleetError::NoAgent)
}

/// Checks every model of the run on every target of the run before any load is sent (the
/// first target's `first` answer already in hand); returns the warnings.
pub async fn check_models(
    up: &Fleet,
    cfg: &crate::plan::RunConfig,
    first: &TargetInfo,
) -> Result<Vec<String>, FleetError> {
    let mut warnings = Vec::new();
    let models = if cfg.matrix.models.is_empty() {
        vec![cfg.model.clone()]
    } else {
        cfg.matrix.models.clone()
    };
    let mut targets = vec![(up.target.clone(), first.clone())];
    for t in cfg.matrix.targets.iter().skip(1) {
        let info = up.members[0]
            .link
            .preflight(t, Some(first.api))
            .await
            .map_err(|e| match e {
                LinkError::Refused {
                    code: tonic::Code::Unavailable,
                    message,
                    ..
                } => FleetError::TargetUnreachable {
                    target: t.clone(),
                    reason: message,
                },
                other => other.into(),
            })?;
        targets.push((t.clone(), info));
    }
    for (target, info) in &targets {
        for m in &models {
            if let Some(w) = check_model_at(up, target, m, info).await? {
                warnings.push(w);
            }
        }
    }
    Ok(warnings)
}

/// Checks that `target` serves `model`. Ollama knows exactly what it has, whichever API is
/// used; some OpenAI-style servers (llama.cpp) serve their one model under any name, so a name
/// they do not list is a warning (returned), not a refusal.
async fn check_model_at(
    up: &Fleet,
    target: &str,
    model: &str,
    target_info: &TargetInfo,
) -> Result<Option<String>, FleetError> {
    if model_available(model, &target_info.models) {
        return Ok(None);
    }
    let openai = target_info.api.family() == "openai";
    let ollama_behind = openai
        && up.members[0]
            .link
            .preflight(target, Some(Api::OllamaGenerate))
            .await
            .is_ok();
    if openai && !target_info.models.is_empty() && !ollama_behind {
        return Ok(Some(format!(
            "model {model:?} is not in {target}/v1/models ({}); sending it anyway",
            target_info.models.join(", ")
        )));
    }
    Err(FleetError::ModelMissing {
        model: model.to_string(),
        target: target.to_string(),
        available: if target_info.models.is_empty() {
            "no models at all".into()
        } else {
            target_info.models.join(", ")
        },
    })
}
