//! Compiling a run plan into its phases: each cycle's [`CyclePlan`] (warm-up first), each
//! agent's share of a level, and the checks that need no network. Plain functions of the plan.

use super::{Group, Level, RunConfig, Split, TargetPolicy};
use std::time::Duration;
use tokengun_common::plan::parse_target;
use tokengun_common::sources::{Watch, WatchError};
use tokengun_common::{Api, CyclePlan, LoadShape, PlanError};

/// The cycle id of the warm-up; levels count from 2 (their folders from 1).
pub const WARMUP_CYCLE_ID: u32 = 1;

/// A plan that cannot run, found before anything is sent.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPlan {
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A `--watch-process` pattern that does not parse.
    #[error(transparent)]
    Watch(#[from] WatchError),
}

/// What a phase is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseKind {
    /// A group's model is loaded by one request before its first measured cycle (several
    /// models, or a server just started); its time is the model's load, recorded apart.
    Load,
    /// The warm-up before a group's levels.
    Warmup,
    /// Ollama: the previous model is unloaded (`keep_alive: 0`) before the next one loads.
    Unload,
    /// A measured level.
    Level,
}

/// One phase of the sweep: a load, warm-up or unload, or one level, with its cycle's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub level: Level,
    pub plan: CyclePlan,
    pub kind: PhaseKind,
    /// Which group (of `RunConfig::groups`) it belongs to.
    pub group: usize,
    /// Which level (0-based) this is; 0 for the warm-up too.
    pub level_index: usize,
    /// `warmup`, or the level's label (`8`, `2.5rps`): its folder and its row.
    pub label: String,
}

impl Phase {
    /// Not a level: its requests are measured but not written as one (load, warm-up, unload).
    pub fn is_warmup(&self) -> bool {
        self.kind != PhaseKind::Level
    }
}

/// The cycle id of level `index` (0-based) of a run of one group.
pub fn level_cycle_id(index: usize) -> u32 {
    u32::try_from(index + 2).unwrap_or(u32::MAX)
}

/// `plan` aimed at `group`: its model and targets (the first as `target_url`; pinned agents
/// learn their own in `share_targets`).
pub fn for_group(mut plan: CyclePlan, group: &Group, policy: TargetPolicy) -> CyclePlan {
    plan.model = group.model.clone();
    if let Some(first) = group.targets.first() {
        plan.target_url = first.clone();
    }
    plan.target_urls = if group.targets.len() > 1 {
        group.targets.clone()
    } else {
        Vec::new()
    };
    plan.target_policy = policy;
    plan
}

/// A one-request cycle of `group`'s model: its load (or, with `keep_alive: 0`, its unload).
fn one_request(cfg: &RunConfig, target: &str, group: &Group, unload: bool) -> CyclePlan {
    let mut p = cycle_plan(
        cfg,
        target,
        0,
        Level {
            concurrency: 1,
            rate_per_s: None,
        },
        tokengun_common::LoadShape::Burst,
        Duration::ZERO,
    );
    p.options.max_tokens = Some(1);
    if unload {
        p.options.keep_alive = Some("0".into());
    }
    // One plain prompt and one independent request: no conversation, trace, forced length or
    // per-prompt cap of the workload applies to a model's load.
    let text = p
        .prompts
        .first()
        .map(|q| q.text.clone())
        .unwrap_or_default();
    p.prompts = vec![tokengun_common::PromptSpec::plain(text)];
    p.workload = tokengun_common::CycleWorkload::default();
    let mut p = for_group(p, group, TargetPolicy::RoundRobin);
    // A load or unload reaches every instance of the group, one request each.
    if !p.target_urls.is_empty() {
        p.concurrency = u32::try_from(p.target_urls.len()).unwrap_or(u32::MAX);
    }
    p
}

/// The plan of cycle `cycle_id` at `level`, with `shape` and `duration` (warm-up differs).
pub fn cycle_plan(
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
        workload: cfg.cycle_workload.clone(),
        target_urls: Vec::new(),
        target_policy: TargetPolicy::RoundRobin,
        pinned_target: None,
        target_offset: 0,
    }
}

/// The warm-up phase: the first level as a closed loop (open: at its rate) for `warmup`.
pub fn warmup_plan(cfg: &RunConfig, target: &str) -> Option<CyclePlan> {
    let first = *cfg.levels.first()?;
    (!cfg.warmup.is_zero()).then(|| {
        cycle_plan(
            cfg,
            target,
            WARMUP_CYCLE_ID,
            first,
            cfg.shape.warmup_shape(),
            cfg.warmup,
        )
    })
}

/// Every phase of the sweep, in order: per group, its model's unload/load when the model or the
/// server changed (runs of several groups), the warm-up (if any), then the levels. `target`
/// stands in for the target of a run of one (the simulator's address is known only once it
/// runs). Cycle ids: 1 for the first group's first phase before its levels, the rest from 2 on.
pub fn phases(cfg: &RunConfig, target: &str) -> Vec<Phase> {
    let mut groups = cfg.groups();
    if cfg.matrix.targets.len() <= 1 {
        for g in &mut groups {
            g.targets = vec![target.to_string()];
        }
    }
    let several = groups.len() > 1;
    let policy = cfg.matrix.policy;
    let mut out: Vec<Phase> = Vec::new();
    let mut prev: Option<&Group> = None;
    // (model, target) pairs loaded so far: a group that reaches a new instance loads it there.
    let mut loaded: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
    for (gi, g) in groups.iter().enumerate() {
        let changed = prev.is_none_or(|p| p.model != g.model || p.setting != g.setting);
        let restarted = prev.is_none_or(|p| p.setting != g.setting);
        if prev.is_some() && restarted {
            loaded.clear();
        }
        let mut pre = Vec::new();
        if let Some(p) =
            prev.filter(|p| cfg.matrix.unload_between_models && !restarted && p.model != g.model)
        {
            // From every instance that holds it, not only the last group's.
            let mut holding: Vec<String> = Vec::new();
            for t in groups.iter().flat_map(|x| x.targets.iter()) {
                if loaded.contains(&(p.model.as_str(), t.as_str())) && !holding.contains(t) {
                    holding.push(t.clone());
                }
            }
            let from = Group {
                targets: holding,
                ..p.clone()
            };
            pre.push((
                PhaseKind::Unload,
                one_request(cfg, target, &from, true),
                "unload",
            ));
            loaded.retain(|(m, _)| *m != p.model.as_str());
        }
        let cold = g
            .targets
            .iter()
            .any(|t| !loaded.contains(&(g.model.as_str(), t.as_str())));
        if (several && cold) || (cfg.matrix.server.is_some() && restarted) {
            pre.push((PhaseKind::Load, one_request(cfg, target, g, false), "load"));
        }
        for t in &g.targets {
            loaded.insert((g.model.as_str(), t.as_str()));
        }
        if let Some(w) = warmup_plan(cfg, target) {
            if !several || changed {
                pre.push((PhaseKind::Warmup, for_group(w, g, policy), "warmup"));
            }
        }
        for (kind, plan, label) in pre {
            out.push(Phase {
                level: Level {
                    concurrency: plan.concurrency,
                    rate_per_s: plan.shape.is_rate().then_some(plan.rate_per_s),
                },
                plan,
                kind,
                group: gi,
                level_index: 0,
                label: label.to_string(),
            });
        }
        for (i, &level) in cfg.levels.iter().enumerate() {
            let plan = cycle_plan(cfg, target, 0, level, cfg.shape, cfg.duration);
            out.push(Phase {
                level,
                plan: for_group(plan, g, policy),
                kind: PhaseKind::Level,
                group: gi,
                level_index: i,
                label: level.label(),
            });
        }
        prev = Some(g);
    }
    // The study's numbering: a warm-up is cycle 1, the levels count from 2.
    let first_level = out.iter().position(|p| !p.is_warmup()).unwrap_or(0);
    let mut next = 2u32;
    for (i, p) in out.iter_mut().enumerate() {
        p.plan.cycle_id = if i < first_level && i == 0 {
            WARMUP_CYCLE_ID
        } else {
            let id = next;
            next = next.saturating_add(1);
            id
        };
    }
    out
}

/// The targets of agent `k` (its index in the fleet) for a phase: with `pinned`, its own target
/// (k mod targets); otherwise its round-robin starts at target k, so several agents' first
/// requests do not all go to the first target together.
pub fn share_targets(plan: &mut CyclePlan, k: usize) {
    plan.target_offset = u32::try_from(k).unwrap_or(0);
    if plan.target_policy == TargetPolicy::Pinned && !plan.target_urls.is_empty() {
        let n = plan.target_urls.len();
        plan.pinned_target = Some(u32::try_from(k % n).unwrap_or(0));
        if let Some(t) = plan.target_urls.get(k % n) {
            plan.target_url = t.clone();
        }
    }
}

/// Everything that can be checked without a network: every cycle's plan is valid, and so is
/// every process pattern to watch.
pub fn validate(cfg: &RunConfig) -> Result<(), InvalidPlan> {
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
    for phase in phases(cfg, target) {
        phase.plan.validate()?;
    }
    for w in &cfg.monitor.watch_process {
        Watch::parse(w)?;
    }
    Ok(())
}

/// Level `level` as agent `k` of `n` runs it: split (`total`) or whole (`per-agent`).
pub fn share(level: Level, k: usize, n: usize, split: Split) -> Level {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanFile;

    fn config(shape: LoadShape, levels: &[f64], warmup: Option<&str>) -> RunConfig {
        PlanFile {
            shape: Some(shape),
            levels: Some(levels.to_vec()),
            warmup: warmup.map(str::to_string),
            ..PlanFile::default()
        }
        .compile(None)
        .expect("a valid plan")
    }

    fn conc(c: u32) -> Level {
        Level {
            concurrency: c,
            rate_per_s: None,
        }
    }

    #[test]
    fn a_total_split_divides_the_level_and_gives_the_remainder_to_the_first_agents() {
        let parts: Vec<u32> = (0..3)
            .map(|k| share(conc(8), k, 3, Split::Total).concurrency)
            .collect();
        assert_eq!(parts, vec![3, 3, 2]);
        assert_eq!(parts.iter().sum::<u32>(), 8);
        // Fewer requests than agents: the last ones sit the level out.
        let small: Vec<Level> = (0..3).map(|k| share(conc(2), k, 3, Split::Total)).collect();
        assert_eq!(
            small.iter().map(|l| l.concurrency).collect::<Vec<_>>(),
            vec![1, 1, 0]
        );
        assert!(small[2].is_empty());
        assert!(!small[0].is_empty());
    }

    #[test]
    fn a_per_agent_split_or_one_agent_keeps_the_whole_level() {
        assert_eq!(share(conc(8), 1, 3, Split::PerAgent), conc(8));
        assert_eq!(share(conc(8), 0, 1, Split::Total), conc(8));
    }

    #[test]
    fn rates_divide_evenly_and_an_in_flight_cap_rounds_up() {
        let open = Level {
            concurrency: 5,
            rate_per_s: Some(3.0),
        };
        let l = share(open, 1, 2, Split::Total);
        assert_eq!(l.rate_per_s, Some(1.5));
        assert_eq!(
            l.concurrency, 3,
            "5 over 2 agents: 3 each, never below 5 in all"
        );
        let uncapped = Level {
            concurrency: 0,
            rate_per_s: Some(3.0),
        };
        assert_eq!(share(uncapped, 0, 2, Split::Total).concurrency, 0);
    }

    #[test]
    fn cycle_plans_carry_the_run_settings_and_the_level() {
        let mut cfg = config(LoadShape::Closed, &[4.0], None);
        cfg.seed = 7;
        cfg.api = Some(Api::OpenaiChat);
        let p = cycle_plan(
            &cfg,
            "http://127.0.0.1:9",
            5,
            conc(4),
            LoadShape::Closed,
            Duration::from_secs(3),
        );
        assert_eq!(p.cycle_id, 5);
        assert_eq!(p.concurrency, 4);
        assert_eq!(p.rate_per_s, 0.0);
        assert_eq!(p.seed, 7);
        assert_eq!(p.api, Api::OpenaiChat);
        assert_eq!(p.target_url, "http://127.0.0.1:9");
        assert_eq!(p.duration, Duration::from_secs(3));
        assert_eq!(p.model, cfg.model);
    }

    #[test]
    fn phases_put_the_warmup_first_with_its_own_shape_and_number_the_levels() {
        let cfg = config(LoadShape::Burst, &[1.0, 4.0], Some("5s"));
        let ph = phases(&cfg, "http://127.0.0.1:9");
        assert_eq!(ph.len(), 3);
        assert!(ph[0].is_warmup());
        assert_eq!(ph[0].label, "warmup");
        assert_eq!(ph[0].plan.cycle_id, WARMUP_CYCLE_ID);
        assert_eq!(
            ph[0].plan.shape,
            LoadShape::Closed,
            "a burst warms up closed"
        );
        assert_eq!(ph[0].plan.duration, Duration::from_secs(5));
        assert_eq!(ph[0].plan.concurrency, 1, "at the first level");
        let ids: Vec<u32> = ph[1..].iter().map(|p| p.plan.cycle_id).collect();
        assert_eq!(ids, vec![2, 3]);
        assert_eq!(ph[2].label, "4");
        assert_eq!(ph[2].level_index, 1);
        assert!(!ph[2].is_warmup());
        // Without a warm-up the levels come alone.
        let cfg = config(LoadShape::Burst, &[1.0], None);
        assert_eq!(phases(&cfg, "http://127.0.0.1:9").len(), 1);
    }

    #[test]
    fn a_model_load_is_one_plain_request_per_instance_whatever_the_workload() {
        let mut cfg = config(LoadShape::Closed, &[4.0], None);
        cfg.matrix.models = vec!["a".into(), "b".into()];
        cfg.matrix.targets = vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()];
        cfg.cycle_workload.turns = 3;
        cfg.prompts[0].max_tokens = Some(500);
        let ph = phases(&cfg, "http://127.0.0.1:1");
        let kinds: Vec<PhaseKind> = ph.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [
                PhaseKind::Load,
                PhaseKind::Level,
                PhaseKind::Load,
                PhaseKind::Level
            ]
        );
        let load = &ph[2].plan;
        assert_eq!(load.model, "b");
        assert_eq!(load.shape, LoadShape::Burst);
        assert_eq!(load.concurrency, 2, "one request per instance");
        assert_eq!(load.options.max_tokens, Some(1));
        assert_eq!(load.prompts[0].max_tokens, None);
        assert_eq!(load.workload.turns, 0, "not a conversation");
        assert_eq!(ph[3].plan.workload.turns, 3, "the level keeps its workload");
        let ids: Vec<u32> = ph.iter().map(|p| p.plan.cycle_id).collect();
        assert_eq!(ids, [1, 2, 3, 4]);

        // Unloading a model reaches every instance it was loaded on, not only the last group's.
        cfg.matrix.instances = vec![2, 1];
        cfg.matrix.unload_between_models = true;
        let ph = phases(&cfg, "http://127.0.0.1:1");
        let unload = ph.iter().find(|p| p.kind == PhaseKind::Unload).unwrap();
        assert_eq!(unload.plan.model, "a");
        assert_eq!(
            unload.plan.targets().len(),
            2,
            "{:?}",
            unload.plan.targets()
        );
        assert_eq!(unload.plan.options.keep_alive.as_deref(), Some("0"));
    }

    #[test]
    fn an_open_sweep_warms_up_at_its_first_rate() {
        let cfg = config(LoadShape::Open, &[2.5, 5.0], Some("2s"));
        let ph = phases(&cfg, "http://127.0.0.1:9");
        assert_eq!(ph[0].plan.shape, LoadShape::Open);
        assert_eq!(ph[0].plan.rate_per_s, 2.5);
        assert_eq!(ph[0].level.rate_per_s, Some(2.5));
        assert_eq!(ph[1].label, "2.5rps");
    }

    #[test]
    fn validation_refuses_what_no_cycle_could_run() {
        let mut cfg = config(LoadShape::Burst, &[1.0], None);
        assert!(validate(&cfg).is_ok());
        cfg.levels.clear();
        assert!(matches!(
            validate(&cfg),
            Err(InvalidPlan::Plan(PlanError::NoLevels))
        ));
        let mut cfg = config(LoadShape::Burst, &[1.0], None);
        cfg.target = "not a url".into();
        assert!(matches!(validate(&cfg), Err(InvalidPlan::Plan(_))));
        let mut cfg = config(LoadShape::Burst, &[1.0], None);
        cfg.monitor.watch_process = vec!["pid:notanumber".into()];
        assert!(matches!(validate(&cfg), Err(InvalidPlan::Watch(_))));
    }

    #[test]
    fn the_simulator_stands_in_for_the_target_when_validating() {
        let mut cfg = config(LoadShape::Burst, &[1.0], None);
        cfg.target = "not a url".into();
        cfg.sim = Some(tokengun_simulator::SimConfig::default());
        assert!(validate(&cfg).is_ok());
    }
}
