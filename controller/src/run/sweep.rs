//! The sweep: the plan's phases (warm-up, then each level) run one after another on the fleet,
//! each cycle's results written as it ends, until the plan is done or a stop rule ends it.

use super::cycle::{self, CycleCtx};
use super::monitoring::{finish_monitoring, measure_baseline, pump, start_monitoring};
use super::{RunError, RunReport, now_rfc3339};
use crate::aggregate::{CycleParts, CycleSink, MemberCycle, Sinks, summarize};
use crate::fleet::Fleet;
use crate::plan::{
    Group, Level, OnAgentLoss, Phase, PhaseKind, RunConfig, phases, share, share_targets,
};
use crate::sinks::console::{Console, monitor_line, self_check_line, summary_line};
use crate::sinks::monitor::MonitorSink;
use crate::sinks::run_folder::{LevelAt, Manifest, RunDir, RunStatus};
use std::time::Duration;
use tokengun_common::{Api, CycleSummary, Record};
use tokio_util::sync::CancellationToken;

mod search_loop;

/// Where a resumed run takes up: the phase it broke off in, and what records.pb holds of it.
pub struct ResumeAt {
    pub phase: usize,
    /// (agent, record, already in records.pb).
    pub stored: Vec<(String, Record, bool)>,
    /// The agents had started that phase's cycle (it is collected, not started again).
    pub started: bool,
}

/// What the sweep does after a phase.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// On to the next phase.
    Go,
    /// The sweep ends here; with a reason when it broke (the run is then partial).
    Stop(Option<String>),
    /// A level failed more than `--stop-on-error-rate` allows: the sweep ends, complete.
    ErrorRate(String),
}

/// How a cycle ended, as the stop rules see it.
#[derive(Debug, Clone, Default)]
pub struct CycleEnd {
    pub cycle_id: u32,
    /// The results streams broke while the cycle's last monitor readings were awaited.
    pub monitor_broke: Option<String>,
    /// Why the first agent lost during the cycle (and not back) was lost.
    pub unrecovered_loss: Option<String>,
    pub several_agents: bool,
    pub on_agent_loss: OnAgentLoss,
    pub any_alive: bool,
    /// The agents that aborted the cycle on their own (addresses), if any did.
    pub aborted_by: Option<String>,
    pub user_stopped: bool,
    /// The level's label and error rate (0..1); None for the warm-up.
    pub error_rate: Option<(String, f64)>,
    /// `--stop-on-error-rate`, 0..1.
    pub stop_on_error_rate: Option<f64>,
}

/// The sweep's stop rules, in order: a broken stream, a lost agent the sweep cannot go on
/// without, an agent's own abort, then the error-rate limit.
pub fn next_step(e: &CycleEnd) -> Step {
    if let Some(r) = &e.monitor_broke {
        return Step::Stop(Some(r.clone()));
    }
    if let Some(r) = &e.unrecovered_loss {
        if !e.several_agents || e.on_agent_loss == OnAgentLoss::Stop || !e.any_alive {
            return Step::Stop(Some(r.clone()));
        }
    }
    if let Some(who) = &e.aborted_by {
        // A stop asked for by the user is an interruption, not a broken run.
        return Step::Stop((!e.user_stopped).then(|| {
            format!(
                "agent {who} aborted cycle {} on its own (was it stopped?)",
                e.cycle_id
            )
        }));
    }
    if let (Some(limit), Some((level, rate))) = (e.stop_on_error_rate, &e.error_rate) {
        if *rate > limit {
            return Step::ErrorRate(format!(
                "level {level} failed {:.1}% of its requests, above --stop-on-error-rate {:.1}%",
                rate * 100.0,
                limit * 100.0
            ));
        }
    }
    Step::Go
}

/// How the phases ended: with the reason the run broke, if it did; or handed to the search.
enum Ran {
    Phases(Option<String>),
    Search(crate::plan::search::SearchSpec),
}

/// A sweep in progress: the run's parts, all owned here for its length.
pub struct Sweep<'a> {
    pub(super) cfg: RunConfig,
    pub(super) up: Fleet,
    dir: RunDir,
    pub(super) manifest: Manifest,
    pub(super) console: &'a mut Console,
    stop: CancellationToken,
    monitor: Option<MonitorSink>,
    baseline_power_w: Option<f64>,
    /// The run's groups, in order (`Phase::group` points into them).
    pub(super) groups: Vec<Group>,
}

impl<'a> Sweep<'a> {
    /// A sweep of `cfg` on `up` into `dir`, whose manifest so far is `manifest`. `cfg.api` is the
    /// API the target was found to speak.
    pub fn new(
        cfg: RunConfig,
        up: Fleet,
        dir: RunDir,
        manifest: Manifest,
        console: &'a mut Console,
        stop: CancellationToken,
    ) -> Self {
        Self {
            groups: cfg.groups(),
            cfg,
            up,
            dir,
            manifest,
            console,
            stop,
            monitor: None,
            baseline_power_w: None,
        }
    }

    /// The group `phase` belongs to.
    fn group_of(&self, phase: &Phase) -> &Group {
        &self.groups[phase.group.min(self.groups.len().saturating_sub(1))]
    }

    fn api(&self) -> Api {
        self.cfg.api.unwrap_or(Api::OllamaGenerate)
    }

    /// Runs the phases (from `resume.phase` when resuming), then closes the run.
    pub async fn run(mut self, resume: Option<ResumeAt>) -> Result<RunReport, RunError> {
        match self.run_phases(resume).await {
            Ok(Ran::Phases(broken)) => self.finish(broken).await,
            Ok(Ran::Search(spec)) => self.search(spec).await,
            Err(e) => {
                // What was collected is on disk; a server the plan started must not outlive it.
                self.stop_server().await;
                Err(e)
            }
        }
    }

    /// The phases from where the run starts (or the search, which picks its own).
    async fn run_phases(&mut self, mut resume: Option<ResumeAt>) -> Result<Ran, RunError> {
        if self.cfg.monitor.enabled {
            self.start_monitors().await?;
        }
        self.dir.write_manifest(&self.manifest)?;
        if let Some(spec) = self.cfg.search {
            return Ok(Ran::Search(spec));
        }
        let first_phase = resume.as_ref().map_or(0, |r| r.phase);
        let mut broken = None;
        for phase in phases(&self.cfg, &self.up.target)
            .into_iter()
            .skip(first_phase)
        {
            if self.stop.is_cancelled() {
                break;
            }
            if let Some(reason) = self.ensure_server(&phase).await {
                broken = Some(reason);
                break;
            }
            let taken_up = resume.take().filter(|r| r.started);
            match self.phase(&phase, taken_up).await? {
                Step::Go => {}
                Step::Stop(reason) => {
                    broken = reason;
                    break;
                }
                Step::ErrorRate(reason) => {
                    self.console.line(&format!("\n■ sweep stopped: {reason}"));
                    self.manifest.stop_reason = Some(reason);
                    break;
                }
            }
        }
        Ok(Ran::Phases(broken))
    }

    /// Starts the agents' monitors, and measures idle power when there is a source for it.
    async fn start_monitors(&mut self) -> Result<(), RunError> {
        let api = self.api();
        self.monitor = start_monitoring(
            &self.cfg,
            &mut self.up,
            api,
            &self.dir,
            self.console,
            &mut self.manifest,
        )
        .await?;
        let Some(sink) = self.monitor.as_mut() else {
            return Ok(());
        };
        if !sink.has_power() || self.cfg.monitor.baseline.is_zero() {
            return Ok(());
        }
        let w = measure_baseline(
            &self.cfg.monitor,
            &mut self.up,
            sink,
            self.console,
            &self.stop,
        )
        .await;
        if let Some(info) = self.manifest.monitor.as_mut() {
            info.baseline_power_w = w;
            info.baseline_s = Some(self.cfg.monitor.baseline.as_secs_f64());
        }
        self.baseline_power_w = w;
        Ok(())
    }

    /// Runs one phase's cycle and says what the sweep does next.
    async fn phase(&mut self, phase: &Phase, taken_up: Option<ResumeAt>) -> Result<Step, RunError> {
        let plan = &phase.plan;
        self.reconnect_lost(plan.cycle_id).await;
        let alive: Vec<usize> = self.up.alive().map(|(i, _)| i).collect();
        if alive.is_empty() {
            return Ok(Step::Stop(Some("every agent was lost".into())));
        }
        // The phase's label in the monitor files and the live metrics (group-prefixed).
        let label =
            tokengun_common::run_dir::monitor_label(&self.group_of(phase).label, &phase.label);
        self.console.cycle_label(&label);
        let group = self.group_of(phase);
        match phase.kind {
            PhaseKind::Load => self.console.line(&format!(
                "\n■ loading {} before its first level{}",
                group.model,
                if group.label.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", group.label)
                }
            )),
            PhaseKind::Unload => self.console.line(&format!(
                "\n■ unloading {} (keep_alive 0) before the next model",
                plan.model
            )),
            PhaseKind::Warmup => self.console.warmup_start(&plan.describe()),
            PhaseKind::Level => {
                let title = if group.label.is_empty() {
                    group.model.clone()
                } else {
                    group.label.clone()
                };
                self.console.cycle_start(
                    phase.level_index,
                    self.cfg.levels.len(),
                    &plan.describe(),
                    &title,
                );
            }
        }
        let mut parts = self.parts(phase, &alive)?;
        let fold_after =
            self.cfg.request_timeout + self.cfg.reconnect_wait + Duration::from_secs(60);
        let mut sink = CycleSink::new(plan, self.cfg.slo, fold_after);
        if let Some(r) = taken_up {
            self.take_up(r, &mut parts, &mut sink)?;
        } else if let Err(e) = cycle::start(&mut self.up, &mut parts).await {
            return Ok(Step::Stop(Some(e)));
        }
        if let Some(step) = self.lost_before_start(&parts, plan.cycle_id).await {
            return Ok(step);
        }
        if let Some(m) = self.monitor.as_mut() {
            m.set_label(&label);
        }
        let reconnect_wait = if self.up.in_process() {
            Duration::ZERO
        } else {
            self.cfg.reconnect_wait
        };
        cycle::collect(CycleCtx {
            up: &mut self.up,
            dir: &mut self.dir,
            plan,
            parts: &mut parts,
            sink: &mut sink,
            monitor: self.monitor.as_mut(),
            console: self.console,
            stop: &self.stop,
            reconnect_wait,
        })
        .await?;
        let end = self.close(phase, &mut parts, &sink).await?;
        Ok(next_step(&end))
    }

    /// Agents lost earlier get one more chance before each cycle.
    async fn reconnect_lost(&mut self, cycle_id: u32) {
        for i in 0..self.up.members.len() {
            if self.up.members[i].alive || !self.up.reconnect(i).await {
                continue;
            }
            let m = &self.up.members[i];
            let note = format!(
                "{} ({}) is back before cycle {cycle_id}",
                m.label,
                m.link.addr()
            );
            self.console.line(&format!("  {note}"));
            self.manifest.notes.push(note);
        }
    }

    /// Each alive agent's share of the phase; agents with nothing to do sit this cycle out.
    fn parts(&mut self, phase: &Phase, alive: &[usize]) -> Result<Vec<MemberCycle>, RunError> {
        let many = self.up.many();
        let api = self.api();
        let group = self.group_of(phase);
        // A model's load or unload is one request per instance: from the first agent alone, or
        // (pinned) from each agent to its own instance.
        let one_each = matches!(phase.kind, PhaseKind::Load | PhaseKind::Unload);
        let pinned = self.cfg.matrix.policy == tokengun_common::TargetPolicy::Pinned;
        let alive = if one_each && !pinned {
            &alive[..alive.len().min(1)]
        } else {
            alive
        };
        let mut parts = Vec::new();
        for (k, &i) in alive.iter().enumerate() {
            let l = if one_each && pinned {
                Level {
                    concurrency: 1,
                    rate_per_s: None,
                }
            } else {
                share(phase.level, k, alive.len(), self.cfg.split)
            };
            if l.is_empty() {
                continue;
            }
            let mut p = phase.plan.clone();
            p.concurrency = l.concurrency;
            p.rate_per_s = l.rate_per_s.unwrap_or(0.0);
            if one_each && pinned {
                p.target_policy = tokengun_common::TargetPolicy::Pinned;
            }
            // By its place in the fleet, so a lost agent does not move the others' targets.
            share_targets(&mut p, i);
            // The warm-up's requests are measured but not written: its figures go to run.json.
            let writer = if phase.is_warmup() {
                None
            } else {
                let targets: Vec<String> = p.targets().iter().map(|t| t.to_string()).collect();
                Some(self.dir.begin_cycle(&LevelAt {
                    api,
                    model: &group.model,
                    group: &group.variant,
                    level: &phase.label,
                    agent: many.then_some(self.up.members[i].label.as_str()),
                    targets: &targets,
                })?)
            };
            parts.push(MemberCycle::new(i, p, writer));
        }
        Ok(parts)
    }

    /// The agents ran this cycle while no controller listened: what records.pb holds of it is
    /// written again, the rest is replayed by the agents.
    fn take_up(
        &mut self,
        r: ResumeAt,
        parts: &mut [MemberCycle],
        sink: &mut CycleSink,
    ) -> Result<(), RunError> {
        for (agent, rec, on_disk) in r.stored {
            let Some(k) = parts
                .iter()
                .position(|p| self.up.members[p.member].label == agent)
            else {
                continue;
            };
            if !on_disk {
                self.dir.store(&agent, &rec)?;
            }
            let clock = self.up.members[parts[k].member].clock;
            let to = Sinks {
                cycle: sink,
                console: self.console,
            };
            parts[k].apply(rec.body, (clock, None), to)?;
        }
        for p in parts.iter_mut() {
            p.last_heard = tokio::time::Instant::now();
        }
        let cycle_id = parts.first().map_or(0, |p| p.plan.cycle_id);
        self.console.line(&format!(
            "  taking up cycle {cycle_id} where the lost controller left it"
        ));
        Ok(())
    }

    /// Notes the agents lost as the cycle started; with `--on-agent-loss stop` that ends the
    /// sweep (the others' parts are aborted).
    async fn lost_before_start(&mut self, parts: &[MemberCycle], cycle_id: u32) -> Option<Step> {
        for pc in parts.iter().filter(|p| p.lost.is_some()) {
            let note = format!(
                "{} lost before cycle {cycle_id} started ({}); the cycle runs without it",
                self.up.members[pc.member].label,
                pc.lost.as_deref().unwrap_or_default()
            );
            self.console.line(&format!("  warning: {note}"));
            self.manifest.notes.push(note);
        }
        if self.cfg.on_agent_loss != OnAgentLoss::Stop || parts.iter().all(|p| p.lost.is_none()) {
            return None;
        }
        for p in parts.iter().filter(|p| p.lost.is_none()) {
            let _ = self.up.members[p.member].link.abort(cycle_id).await;
        }
        Some(Step::Stop(Some(
            "an agent was lost before the cycle and --on-agent-loss is stop".into(),
        )))
    }

    /// Closes a collected cycle: its summary with the monitors' figures, written to the run
    /// folder and shown, the agents told they may forget it. Returns how it ended.
    async fn close(
        &mut self,
        phase: &Phase,
        parts: &mut [MemberCycle],
        sink: &CycleSink,
    ) -> Result<CycleEnd, RunError> {
        let cycle_id = phase.plan.cycle_id;
        self.note_losses(parts, cycle_id);
        let aborted_by: Vec<String> = parts
            .iter()
            .filter(|p| p.aborted())
            .map(|p| self.up.members[p.member].link.addr().to_string())
            .collect();
        let gaps: u64 = parts.iter().map(|p| p.gaps).sum();
        let lost = parts.iter().any(|p| p.lost.is_some());
        let partial = lost || !aborted_by.is_empty() || gaps > 0 || self.stop.is_cancelled();
        let group = self.group_of(phase).clone();
        let mut summary = summarize(&CycleParts {
            model: &group.model,
            label: &phase.label,
            plan: &phase.plan,
            parts,
            sink,
            slo: &self.cfg.slo,
            partial,
            agents: self.up.many().then(|| {
                self.up
                    .members
                    .iter()
                    .map(|m| (m.label.clone(), m.link.addr().to_string()))
                    .collect()
            }),
        });
        summary.cycle_id = cycle_id;
        summary.group = group.variant.clone();
        summary.group_label = group.label.clone();
        summary.setting = group.setting_label.clone();
        summary.instances = u32::try_from(phase.plan.targets().len()).unwrap_or(u32::MAX);
        summary.targets = sink.targets.figures(summary.duration_s);
        let monitor_broke = self.monitor_figures(parts, &mut summary).await?;
        if gaps > 0 {
            self.manifest.notes.push(format!(
                "cycle {cycle_id}: {gaps} record(s) missing from the agents' streams"
            ));
        }
        let error_rate = (!phase.is_warmup()).then(|| (summary.level.clone(), summary.error_rate));
        self.record(phase, summary, parts, sink)?;
        self.dir.write_manifest(&self.manifest)?;
        // Everything up to here is on disk: the agents may forget it.
        for p in parts.iter() {
            if p.gaps == 0 {
                self.up.members[p.member].ack_in_background();
            }
        }
        Ok(CycleEnd {
            cycle_id,
            monitor_broke,
            unrecovered_loss: parts
                .iter()
                .find(|p| p.lost.is_some() && !p.recovered)
                .and_then(|p| p.lost.clone()),
            several_agents: self.up.many(),
            on_agent_loss: self.cfg.on_agent_loss,
            any_alive: self.up.alive().next().is_some(),
            aborted_by: (!aborted_by.is_empty()).then(|| aborted_by.join(", ")),
            user_stopped: self.stop.is_cancelled(),
            error_rate,
            stop_on_error_rate: self.cfg.stop_on_error_rate,
        })
    }

    /// Says which agents were lost during the cycle, and whether they came back.
    fn note_losses(&mut self, parts: &[MemberCycle], cycle_id: u32) {
        for p in parts.iter().filter(|p| p.lost.is_some()) {
            self.console.agent_lost(p.member);
            let m = &self.up.members[p.member];
            let note = format!(
                "cycle {cycle_id}: {} ({}) was lost: {}{}",
                m.label,
                m.link.addr(),
                p.lost.as_deref().unwrap_or_default(),
                if p.recovered {
                    "; it came back and its records were replayed"
                } else {
                    ""
                }
            );
            self.manifest.notes.push(note);
        }
    }

    /// The monitors' figures of the cycle (energy, the server's use, the GPU), once the power
    /// reading that closes its window has come. Err(reason) in Ok when the streams broke.
    async fn monitor_figures(
        &mut self,
        parts: &[MemberCycle],
        summary: &mut CycleSummary,
    ) -> Result<Option<String>, RunError> {
        let Some(m) = self.monitor.as_mut() else {
            return Ok(None);
        };
        let mut broke = None;
        let windows: Vec<(usize, u64, u64)> = parts
            .iter()
            .filter_map(|p| {
                let mi = self.up.members[p.member].monitor?;
                Some((mi, p.origin_mono_ns?, p.done?.ended_mono_ns))
            })
            .collect();
        // The power reading that closes a window comes one interval after the cycle.
        if m.has_power() && !windows.is_empty() {
            let wait = self.cfg.monitor.power_interval * 3 + Duration::from_millis(500);
            let w2 = windows.clone();
            let reached =
                |m: &MonitorSink, _: &[_]| w2.iter().all(|&(mi, _, to)| m.power_reached(mi, to));
            if let Err(e) = pump(&mut self.up, m, reached, wait, &self.stop).await {
                broke = Some(e);
            }
        }
        let f = m.cycle_figures(&windows, summary.output_tokens, self.baseline_power_w);
        summary.energy = f.energy;
        summary.server = f.server;
        summary.gpu_busy_pct_mean = f.gpu_busy_pct_mean;
        summary.gpu_freq_mhz_mean = f.gpu_freq_mhz_mean;
        m.set_label("");
        m.flush()?;
        for n in m.drain_notes() {
            self.console.line(&format!("  note: {n}"));
            self.manifest.notes.push(n);
        }
        Ok(broke)
    }

    /// Writes the cycle's summary: the warm-up's into the manifest only, a level's into its
    /// files, cycles.csv and the manifest, and shows it.
    fn record(
        &mut self,
        phase: &Phase,
        summary: CycleSummary,
        parts: &mut [MemberCycle],
        sink: &CycleSink,
    ) -> Result<(), RunError> {
        // Written with the cycle's results, so a resume never runs a finished phase again.
        self.manifest.phases_done = Some(self.manifest.phases_done.unwrap_or(0) + 1);
        if phase.is_warmup() {
            self.console.line(&format!("  {}", summary_line(&summary)));
            if phase.kind == PhaseKind::Load {
                self.note_load(phase, &summary);
            }
            if phase.kind == PhaseKind::Warmup {
                self.manifest.warmup = Some(summary);
            }
            return Ok(());
        }
        for p in parts.iter_mut() {
            if let Some(w) = p.writer.as_mut() {
                w.flush()?;
            }
        }
        self.dir.flush_records(true)?;
        self.dir.append_cycle(&summary)?;
        self.console
            .cycle_end(&summary, &sink.table, sink.stats.requests as usize);
        if let Some(line) = monitor_line(&summary) {
            self.console.line(&line);
        }
        if let Some(line) = self_check_line(&summary) {
            self.console.line(&line);
        }
        if let Some(sp) = summary.start_spread_s {
            self.console.line(&format!(
                "  {} agents started within {:.1} ms of each other",
                summary.agents.len(),
                sp * 1e3
            ));
        }
        self.manifest.cycles.push(summary);
        Ok(())
    }

    /// Stops the monitors, marks the run complete, partial or interrupted, and writes its
    /// manifest and the sweep's table.
    async fn finish(mut self, broken: Option<String>) -> Result<RunReport, RunError> {
        if let (Some(server), Some((i, _))) =
            (self.cfg.matrix.server.clone(), self.up.server.take())
        {
            let how = crate::fleet::server::stop(&self.up, &server).await;
            self.console.line(&format!("■ server stopped: {how}"));
            self.record_server(i, |p| p.stopped = how.clone());
        }
        if let Some(m) = self.monitor.as_mut() {
            finish_monitoring(&mut self.up, m).await;
            for n in m.drain_notes() {
                self.manifest.notes.push(n);
            }
            m.flush()?;
        }
        let stopped = self.stop.is_cancelled();
        let manifest = &mut self.manifest;
        // A stop asked for by the user is an interruption, even if the agent then misbehaved.
        manifest.status = if stopped {
            RunStatus::Interrupted
        } else if broken.is_some() {
            RunStatus::Partial
        } else {
            RunStatus::Complete
        };
        if let Some(reason) = &broken {
            manifest.notes.push(format!("run stopped early: {reason}"));
        }
        let broken = broken.filter(|_| !stopped);
        manifest.ended_at = Some(now_rfc3339());
        self.dir.write_manifest(manifest)?;
        self.console.sweep_table(&manifest.cycles);
        if let Some(reason) = broken {
            return Err(RunError::Broken {
                reason,
                run_dir: self.dir.root().to_path_buf(),
            });
        }
        Ok(RunReport {
            run_dir: self.dir.root().to_path_buf(),
            status: manifest.status,
            cycles: std::mem::take(&mut manifest.cycles),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end() -> CycleEnd {
        CycleEnd {
            cycle_id: 3,
            any_alive: true,
            ..CycleEnd::default()
        }
    }

    #[test]
    fn a_clean_cycle_goes_on() {
        assert_eq!(next_step(&end()), Step::Go);
    }

    #[test]
    fn a_broken_stream_while_awaiting_power_ends_the_sweep_first() {
        let e = CycleEnd {
            monitor_broke: Some("the results streams ended".into()),
            aborted_by: Some("x".into()),
            ..end()
        };
        assert_eq!(
            next_step(&e),
            Step::Stop(Some("the results streams ended".into()))
        );
    }

    #[test]
    fn a_lost_agent_ends_a_one_agent_run_but_not_a_fleet_that_goes_on() {
        let lost = CycleEnd {
            unrecovered_loss: Some("gone".into()),
            ..end()
        };
        assert_eq!(next_step(&lost), Step::Stop(Some("gone".into())));
        let fleet = CycleEnd {
            several_agents: true,
            ..lost.clone()
        };
        assert_eq!(next_step(&fleet), Step::Go);
        let told_to_stop = CycleEnd {
            on_agent_loss: OnAgentLoss::Stop,
            ..fleet.clone()
        };
        assert_eq!(next_step(&told_to_stop), Step::Stop(Some("gone".into())));
        let none_left = CycleEnd {
            any_alive: false,
            ..fleet
        };
        assert_eq!(next_step(&none_left), Step::Stop(Some("gone".into())));
    }

    #[test]
    fn an_agents_own_abort_breaks_the_run_unless_the_user_stopped_it() {
        let e = CycleEnd {
            aborted_by: Some("127.0.0.1:7411".into()),
            ..end()
        };
        assert_eq!(
            next_step(&e),
            Step::Stop(Some(
                "agent 127.0.0.1:7411 aborted cycle 3 on its own (was it stopped?)".into()
            ))
        );
        let user = CycleEnd {
            user_stopped: true,
            ..e
        };
        assert_eq!(next_step(&user), Step::Stop(None));
    }

    #[test]
    fn the_error_rate_limit_stops_a_level_above_it_only() {
        let e = CycleEnd {
            stop_on_error_rate: Some(0.2),
            error_rate: Some(("8".into(), 0.25)),
            ..end()
        };
        assert_eq!(
            next_step(&e),
            Step::ErrorRate(
                "level 8 failed 25.0% of its requests, above --stop-on-error-rate 20.0%".into()
            )
        );
        let at_limit = CycleEnd {
            error_rate: Some(("8".into(), 0.2)),
            ..e.clone()
        };
        assert_eq!(next_step(&at_limit), Step::Go);
        // The warm-up has no error rate to judge.
        let warmup = CycleEnd {
            error_rate: None,
            ..e
        };
        assert_eq!(next_step(&warmup), Step::Go);
    }
}
