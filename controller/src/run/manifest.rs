//! A new run's folder and manifest: what ran against what (target, server, model, plan, agents,
//! simulator settings), written before the first cycle, and the run's opening console lines.

use super::{RunError, ms, now_rfc3339};
use crate::fleet::Fleet;
use crate::link::TargetInfo;
use crate::plan::{Level, RunConfig, Split};
use crate::sinks::console::Console;
use crate::sinks::run_folder::{Manifest, RunDir, RunStatus, default_run_id};
use std::time::{Duration, SystemTime};
use tokengun_common::run_dir::GroupInfo;
use tokengun_simulator::SimConfig;

/// Creates the run folder, writes its manifest and plan, and says what is about to run.
pub fn begin(
    cfg: &RunConfig,
    up: &Fleet,
    target_info: &TargetInfo,
    console: &mut Console,
) -> Result<(RunDir, Manifest), RunError> {
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
    let mut manifest = manifest(cfg, up, target_info, run_id);
    for w in &cfg.warnings {
        console.line(&format!("warning: {w}"));
        manifest.notes.push(format!("warning: {w}"));
    }
    dir.write_manifest(&manifest)?;
    announce(cfg, up, target_info, &dir, console);
    dir.write_plan(cfg)?;
    Ok((dir, manifest))
}

/// The manifest of a run about to start: no cycles yet, status running.
fn manifest(cfg: &RunConfig, up: &Fleet, target_info: &TargetInfo, run_id: String) -> Manifest {
    Manifest {
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
        levels: cfg.levels.iter().map(Level::label).collect(),
        duration_ms: cfg.shape.has_duration().then(|| ms(cfg.duration)),
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
        split: up.many().then(|| cfg.split.as_str().to_string()),
        // A configuration built in code, not compiled from a plan, says nothing of its workload.
        workload: (!cfg.workload.source.is_empty()).then(|| cfg.workload.clone()),
        search: None,
        monitor: None,
        warmup: None,
        cycles: Vec::new(),
        stop_reason: None,
        notes: Vec::new(),
        groups: group_infos(cfg, &up.target),
        phases_done: Some(0),
    }
}

/// The run's groups as the manifest lists them: none for a run of one without a managed server.
fn group_infos(cfg: &RunConfig, target: &str) -> Vec<GroupInfo> {
    let groups = cfg.groups();
    if groups.len() < 2 && cfg.matrix.server.is_none() {
        return Vec::new();
    }
    groups
        .into_iter()
        .map(|g| GroupInfo {
            label: g.label,
            model: g.model,
            variant: g.variant,
            targets: if cfg.matrix.targets.len() <= 1 {
                vec![target.to_string()]
            } else {
                g.targets
            },
            setting: g.setting_label,
            ..GroupInfo::default()
        })
        .collect()
}

/// The run's opening lines: target, server, model, levels, where the results go, the agents.
fn announce(
    cfg: &RunConfig,
    up: &Fleet,
    target_info: &TargetInfo,
    dir: &RunDir,
    console: &mut Console,
) {
    console.agents(
        up.members
            .iter()
            .map(|m| m.link.addr().to_string())
            .collect(),
    );
    let labels: Vec<String> = cfg.levels.iter().map(Level::label).collect();
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
    if up.many() {
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
    let w = &cfg.workload;
    if !w.source.is_empty() && w.source != "prompt" {
        console.line(&format!(
            "workload: {} prompt(s) from {}, {} bytes, lengths {}{}{}",
            w.prompts,
            w.source,
            w.bytes,
            w.input_lengths,
            w.conversation
                .as_deref()
                .map_or_else(String::new, |c| format!(" · conversations: {c}")),
            w.trace
                .as_deref()
                .map_or_else(String::new, |t| format!(" · trace: {t}")),
        ));
    }
    if cfg.search.is_some() {
        console.line("search: the levels above are not run; the SLO search picks each next level");
    }
    let groups = cfg.groups();
    if groups.len() > 1 {
        console.line(&format!(
            "{} groups, each swept over every level: {}",
            groups.len(),
            groups
                .iter()
                .map(|g| g.label.as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    if cfg.matrix.targets.len() > 1 {
        console.line(&format!(
            "{} targets ({}), requests spread {}",
            cfg.matrix.targets.len(),
            cfg.matrix.targets.join(", "),
            cfg.matrix.policy.as_str()
        ));
    }
}

fn ms_f(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The simulator's settings, as the manifest records them.
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
