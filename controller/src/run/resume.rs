//! Taking up a run whose controller was lost (killed, its machine rebooted): the agents kept
//! running the cycle it was in and hold every record it had not acknowledged; records.pb holds
//! the rest. That cycle is completed from both, then the sweep goes on.

use super::cycle::of_cycle;
use super::sweep::{ResumeAt, Sweep};
use super::{RunError, RunReport, now_rfc3339};
use crate::fleet::{self, Fleet};
use crate::plan::compile::{WARMUP_CYCLE_ID, level_cycle_id};
use crate::plan::{RunConfig, phases};
use crate::sinks::console::Console;
use crate::sinks::run_folder::{Manifest, RunDir, RunStatus};
use std::path::Path;
use std::time::Duration;
use tokengun_common::run_dir::{PLAN_JSON, RECORDS_PB, read_manifest};
use tokengun_common::{Record, RecordBody};
use tokio_util::sync::CancellationToken;

/// How long the agents get to replay what they recorded while no controller listened.
const REPLAY_WAIT: Duration = Duration::from_secs(15);

/// A run folder's plan, manifest and stored records, read back.
struct Saved {
    cfg: RunConfig,
    manifest: Manifest,
    stored: Vec<(String, Record)>,
}

/// Where the run broke off: the phase (after the warm-up, if it ran, and the cycles written)
/// and its cycle id.
fn broke_off_at(cfg: &RunConfig, manifest: &Manifest) -> (usize, u32, usize) {
    if let Some(done) = manifest.phases_done {
        let all = phases(cfg, &cfg.target);
        let cycle_id = all.get(done).map_or(0, |p| p.plan.cycle_id);
        return (done, cycle_id, all.len());
    }
    let warmup_planned = !cfg.warmup.is_zero();
    let phase = usize::from(warmup_planned && manifest.warmup.is_some()) + manifest.cycles.len();
    let cycle_id = if warmup_planned && manifest.warmup.is_none() {
        WARMUP_CYCLE_ID
    } else {
        level_cycle_id(manifest.cycles.len())
    };
    let phases = usize::from(warmup_planned) + cfg.levels.len();
    (phase, cycle_id, phases)
}

/// Takes up the run in `run_dir`. Monitoring is not resumed.
pub async fn resume(
    run_dir: &Path,
    console: &mut Console,
    stop: CancellationToken,
) -> Result<RunReport, RunError> {
    let bad = |why: String| RunError::Resume(format!("{}: {why}", run_dir.display()));
    let Saved {
        mut cfg,
        mut manifest,
        stored,
    } = read_saved(run_dir)?;
    let (phase, cycle_id, phases) = broke_off_at(&cfg, &manifest);
    if phase >= phases {
        return Err(bad("every level already has its results".into()));
    }
    cfg.monitor.enabled = false;
    let setting = crate::plan::phases(&cfg, &cfg.target)
        .get(phase)
        .and_then(|p| cfg.groups().get(p.group).and_then(|g| g.setting));
    let (mut up, _) = fleet::prepare_run(&cfg, true, setting).await?;
    let (mut started, heads) = rejoin(&mut up, &manifest, &stored, cycle_id)
        .await
        .map_err(bad)?;
    up.open_streams().await?;
    let mut stored: Vec<(String, Record, bool)> = stored
        .into_iter()
        .filter(|(_, r)| of_cycle(r, cycle_id))
        .map(|(a, r)| (a, r, true))
        .collect();
    replay(&mut up, &heads, cycle_id, &mut stored)
        .await?
        .map_err(bad)?;
    started |= stored
        .iter()
        .any(|(_, r, _)| matches!(r.body, RecordBody::CycleStarted { .. }));
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
    cfg.api = Some(manifest.api);
    let at = ResumeAt {
        phase,
        stored,
        started,
    };
    Sweep::new(cfg, up, dir, manifest, console, stop)
        .run(Some(at))
        .await
}

/// Reads the run's plan.json, run.json and records.pb, refusing runs that cannot be resumed.
fn read_saved(run_dir: &Path) -> Result<Saved, RunError> {
    let bad = |why: String| RunError::Resume(format!("{}: {why}", run_dir.display()));
    let read = |name: &str| {
        std::fs::read(run_dir.join(name)).map_err(|e| {
            bad(format!(
                "cannot read {name} ({e}); only runs of this tokengun version with remote agents can be resumed"
            ))
        })
    };
    let cfg: RunConfig = serde_json::from_slice(&read(PLAN_JSON)?)
        .map_err(|e| bad(format!("{PLAN_JSON} is not a run plan ({e})")))?;
    let manifest: Manifest = read_manifest(run_dir).map_err(|e| bad(e.to_string()))?;
    if cfg.agents.is_empty() {
        return Err(bad(
            "it used the agent inside the controller, which ended with it: nothing is left to replay"
                .into(),
        ));
    }
    if manifest.status == RunStatus::Complete {
        return Err(bad("the run is already complete".into()));
    }
    if cfg.search.is_some() {
        return Err(bad(
            "it was an SLO search, whose next level depends on every probe before it: run the search again"
                .into(),
        ));
    }
    let stored = tokengun_proto::stored::read_all(&run_dir.join(RECORDS_PB))?;
    Ok(Saved {
        cfg,
        manifest,
        stored,
    })
}

/// Checks each agent is the run's own, and sets where its replay starts (after what records.pb
/// holds of it, never before the run's first record). Returns whether an agent is running the
/// cycle, and where each agent's stream stands now.
async fn rejoin(
    up: &mut Fleet,
    manifest: &Manifest,
    stored: &[(String, Record)],
    cycle_id: u32,
) -> Result<(bool, Vec<u64>), String> {
    let mut started = false;
    let mut heads = Vec::new();
    for (k, m) in up.members.iter_mut().enumerate() {
        let Some(was) = manifest.agents.get(k) else {
            return Err(format!("{} was not in the run", m.link.addr()));
        };
        if was.agent_id != m.info.agent_id {
            return Err(format!(
                "{} now answers as agent {} but the run's agent was {}: its records are not there",
                m.link.addr(),
                m.info.agent_id,
                was.agent_id
            ));
        }
        let (state, running, head) = m.link.status().await.map_err(|e| e.to_string())?;
        started |= state == "running" && running == cycle_id;
        heads.push(head);
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
    Ok((started, heads))
}

/// Reads what the agents recorded while no controller listened, up to `heads` (where they stood
/// at rejoin); the cycle's records among them are added to `stored`, not yet on disk.
async fn replay(
    up: &mut Fleet,
    heads: &[u64],
    cycle_id: u32,
    stored: &mut Vec<(String, Record, bool)>,
) -> Result<Result<(), String>, RunError> {
    let deadline = tokio::time::Instant::now() + REPLAY_WAIT;
    while up
        .members
        .iter()
        .zip(heads)
        .any(|(m, &head)| m.last_seq < head)
    {
        let ev = tokio::select! {
            ev = up.events.recv() => ev,
            () = tokio::time::sleep_until(deadline) => {
                return Ok(Err(format!(
                    "the agents did not replay their records within {} s",
                    REPLAY_WAIT.as_secs()
                )));
            }
        };
        let Some((i, no, item)) = ev else { break };
        if no != up.members[i].stream_no {
            continue;
        }
        let rec = item?;
        if up.members[i].advance(rec.seq).is_none() {
            continue;
        }
        if of_cycle(&rec, cycle_id) {
            stored.push((up.members[i].label.clone(), rec, false));
        }
    }
    Ok(Ok(()))
}
