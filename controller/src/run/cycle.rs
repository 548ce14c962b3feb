//! One cycle on the fleet: [`start`] prepares every agent's part and starts them together;
//! [`collect`] reads every agent's records until each has ended its part (or was lost and not
//! back in time), writing and merging them as they come.

use super::RunError;
use crate::aggregate::{CycleSink, MemberCycle, Sinks, merged_progress};
use crate::fleet::{CLOCK_PROBES, Event, Fleet};
use crate::link::LinkError;
use crate::sinks::console::Console;
use crate::sinks::monitor::MonitorSink;
use crate::sinks::run_folder::RunDir;
use std::collections::HashMap;
use std::time::Duration;
use tokengun_common::{CyclePlan, Progress, Record, RecordBody};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// How often records already written are acknowledged to the agent during a cycle.
const ACK_EVERY: Duration = Duration::from_secs(2);
/// Several agents start this far ahead of the Start calls (plus four worst round trips).
const START_LEAD: Duration = Duration::from_millis(150);
/// After an abort, how long in-flight requests get to be recorded.
const ABORT_GRACE: Duration = Duration::from_secs(10);
/// Silence on the results stream longer than this, while a cycle runs, means the agent is lost
/// (progress records arrive every 250 ms).
const SILENCE_LIMIT: Duration = Duration::from_secs(10);

/// The record is one of `cycle_id`'s own (kept in records.pb), not a progress or monitor record.
pub fn of_cycle(r: &Record, cycle_id: u32) -> bool {
    match &r.body {
        RecordBody::CycleStarted { cycle_id: c, .. } => *c == cycle_id,
        RecordBody::Request(q) => q.cycle_id == cycle_id,
        RecordBody::CycleDone(d) => d.cycle_id == cycle_id,
        _ => false,
    }
}

/// Prepares every part, then starts them together: with several agents, at one instant a little
/// ahead, mapped onto each agent's clock. A part whose agent fails is marked lost; Err only when
/// every agent failed.
pub async fn start(up: &mut Fleet, parts: &mut [MemberCycle]) -> Result<(), String> {
    let many = up.many();
    for p in parts.iter_mut() {
        let m = &mut up.members[p.member];
        if let Err(e) = m.link.prepare(&p.plan).await {
            p.lost = Some(e.to_string());
            m.alive = false;
        }
    }
    let lead = if many {
        refresh_clocks(up, parts).await
    } else {
        Duration::ZERO
    };
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
        p.last_heard = Instant::now();
    }
    if parts.iter().all(|p| p.lost.is_some()) {
        return Err(parts
            .first()
            .and_then(|p| p.lost.clone())
            .unwrap_or_else(|| "no agent could start the cycle".into()));
    }
    // Each part's start offset is found when its CycleStarted arrives (see collect).
    for p in parts.iter_mut() {
        p.start_offset_s = None;
    }
    up.scheduled_start = Some(t0);
    Ok(())
}

/// Fresh clock offsets for the parts still in (monotonic clocks drift apart over a long sweep);
/// returns how far ahead to schedule the start.
async fn refresh_clocks(up: &mut Fleet, parts: &[MemberCycle]) -> Duration {
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
    START_LEAD + worst_rtt * 4
}

/// What collecting a cycle drives: the fleet, the run folder, the cycle's parts and sinks.
pub struct CycleCtx<'a> {
    pub up: &'a mut Fleet,
    pub dir: &'a mut RunDir,
    pub plan: &'a CyclePlan,
    pub parts: &'a mut [MemberCycle],
    pub sink: &'a mut CycleSink,
    pub monitor: Option<&'a mut MonitorSink>,
    pub console: &'a mut Console,
    pub stop: &'a CancellationToken,
    /// How long a lost agent is waited for (zero for the in-process agent).
    pub reconnect_wait: Duration,
}

/// The collecting loop's own state.
struct Collect<'a> {
    cx: CycleCtx<'a>,
    /// Member index to part index.
    part_of: HashMap<usize, usize>,
    progress: Vec<Option<Progress>>,
    abort_deadline: Option<Instant>,
}

fn ticker(every: Duration) -> Interval {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// Reads every participating agent's records until each has ended its part of the cycle (or was
/// lost and not back within the reconnect wait), writing them as they come.
pub async fn collect(cx: CycleCtx<'_>) -> Result<(), RunError> {
    let part_of = cx
        .parts
        .iter()
        .enumerate()
        .map(|(k, p)| (p.member, k))
        .collect();
    let progress = vec![None; cx.parts.len()];
    let mut c = Collect {
        cx,
        part_of,
        progress,
        abort_deadline: None,
    };
    // Records on disk are acknowledged as the cycle goes, so the agents' logs stay small.
    let mut ack_tick = ticker(ACK_EVERY);
    let mut check = ticker(Duration::from_secs(1));
    loop {
        let now = Instant::now();
        if c.cx.parts.iter().all(|p| p.finished(now)) {
            break;
        }
        let deadline = c.abort_deadline;
        let grace = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = c.cx.up.events.recv() => {
                let Some(ev) = ev else { break };
                c.event(ev).await?;
            }
            () = c.cx.stop.cancelled(), if c.abort_deadline.is_none() => c.user_stop().await,
            () = grace => {
                for p in c.cx.parts.iter_mut().filter(|p| p.pending()) {
                    p.lost = Some(format!("the agent did not finish the aborted cycle within {ABORT_GRACE:?}"));
                }
                break;
            }
            _ = check.tick() => c.check_silence().await,
            _ = ack_tick.tick() => c.flush_and_ack()?,
        }
    }
    Ok(())
}

impl Collect<'_> {
    /// One item of member `i`'s stream: a record to write and merge, or a broken stream.
    async fn event(&mut self, (i, stream_no, item): Event) -> Result<(), RunError> {
        if stream_no != self.cx.up.members[i].stream_no {
            return Ok(()); // an older stream of a reconnected agent
        }
        let k = self.part_of.get(&i).copied();
        let rec = match item {
            Ok(r) => r,
            Err(e) => {
                self.stream_broke(i, k, &e);
                return Ok(());
            }
        };
        let Some(gap) = self.cx.up.members[i].advance(rec.seq) else {
            return Ok(()); // a replayed duplicate
        };
        if let RecordBody::Monitor(b) = rec.body {
            if let (Some(ms), Some(mi)) = (
                self.cx.monitor.as_deref_mut(),
                self.cx.up.members[i].monitor,
            ) {
                ms.take(mi, *b)?;
                self.cx.console.set_monitor(Some(ms.snapshot()));
            }
            return Ok(());
        }
        let Some(k) = k else { return Ok(()) };
        self.record(i, k, rec, gap).await
    }

    /// Member `i`'s stream broke: its part (if still running) is lost, and waited for.
    fn stream_broke(&mut self, i: usize, k: Option<usize>, e: &LinkError) {
        self.cx.up.members[i].alive = false;
        let Some(k) = k else { return };
        let wait = self.cx.reconnect_wait;
        let p = &mut self.cx.parts[k];
        if !p.pending() {
            return;
        }
        p.lost = Some(e.to_string());
        p.reconnect_until = Some(Instant::now() + wait);
        if wait > Duration::ZERO {
            self.cx.console.line(&format!(
                "  {} lost ({e}); waiting up to {} for it to come back",
                self.cx.up.members[i].label,
                humantime::format_duration(wait)
            ));
        }
    }

    /// A new record of member `i` (part `k`), `gap` records after the last one seen.
    async fn record(&mut self, i: usize, k: usize, rec: Record, gap: u64) -> Result<(), RunError> {
        let cycle_id = self.cx.plan.cycle_id;
        if of_cycle(&rec, cycle_id) {
            self.cx.dir.store(&self.cx.up.members[i].label, &rec)?;
        }
        let p = &mut self.cx.parts[k];
        p.last_heard = Instant::now();
        self.cx.console.record_from(k, gap);
        if gap > 0 {
            p.gaps += gap;
            self.cx.console.dropped(k, gap);
        }
        if let RecordBody::CycleStarted {
            cycle_id: c,
            origin_mono_ns,
            ..
        } = &rec.body
            && *c == cycle_id
            && let (Some(ms), Some(mi)) = (
                self.cx.monitor.as_deref_mut(),
                self.cx.up.members[i].monitor,
            )
        {
            ms.begin_window(mi, *origin_mono_ns);
        }
        let timing = (self.cx.up.members[i].clock, self.cx.up.scheduled_start);
        let to = Sinks {
            cycle: &mut *self.cx.sink,
            console: &mut *self.cx.console,
        };
        match self.cx.parts[k].apply(rec.body, timing, to) {
            Ok(Some(pr)) => {
                self.progress[k] = Some(pr);
                if let Some(all) = merged_progress(&self.progress) {
                    self.cx.console.progress(self.cx.plan, &all);
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                // The disk refused: stop the load rather than measure into nothing.
                for q in self.cx.parts.iter() {
                    let _ = self.cx.up.members[q.member].link.abort(cycle_id).await;
                }
                Err(e.into())
            }
        }
    }

    /// The user asked to stop: every running part is aborted, and given a grace to record what
    /// was in flight; lost agents are not waited for.
    async fn user_stop(&mut self) {
        self.cx.console.stopping();
        self.abort_deadline = Some(Instant::now() + ABORT_GRACE);
        let cycle_id = self.cx.plan.cycle_id;
        for p in self.cx.parts.iter_mut().filter(|p| p.pending()) {
            if let Err(e) = self.cx.up.members[p.member].link.abort(cycle_id).await {
                p.lost = Some(format!("abort failed: {e}"));
            }
        }
        for p in self.cx.parts.iter_mut() {
            p.reconnect_until = None;
        }
    }

    /// Marks silent agents lost, and tries the lost ones again while they are waited for.
    async fn check_silence(&mut self) {
        let now = Instant::now();
        let wait = self.cx.reconnect_wait;
        for p in self.cx.parts.iter_mut() {
            if p.pending() && now - p.last_heard > SILENCE_LIMIT {
                p.lost = Some(format!("no word from the agent for {SILENCE_LIMIT:?}"));
                p.reconnect_until = Some(now + wait);
                self.cx.up.members[p.member].alive = false;
            }
        }
        let retry: Vec<usize> = self
            .cx
            .parts
            .iter()
            .filter(|p| {
                p.done.is_none() && p.lost.is_some() && p.reconnect_until.is_some_and(|u| now < u)
            })
            .map(|p| p.member)
            .collect();
        for i in retry {
            if self.cx.up.members[i].alive || !self.cx.up.reconnect(i).await {
                continue;
            }
            if let Some(&k) = self.part_of.get(&i) {
                self.cx.parts[k].recovered = true;
                self.cx.parts[k].last_heard = Instant::now();
                self.cx.console.line(&format!(
                    "  {} is back: replaying its records from #{}",
                    self.cx.up.members[i].label,
                    self.cx.up.members[i].last_seq + 1
                ));
            }
        }
    }

    /// Writes out what has come, then lets the agents forget it.
    fn flush_and_ack(&mut self) -> Result<(), RunError> {
        for p in self.cx.parts.iter_mut() {
            if let Some(w) = p.writer.as_mut() {
                w.flush()?;
            }
        }
        if let Some(m) = self.cx.monitor.as_deref_mut() {
            m.flush()?;
        }
        self.cx.dir.flush_records(false)?;
        for p in self.cx.parts.iter() {
            if p.gaps == 0 {
                self.cx.up.members[p.member].ack_in_background();
            }
        }
        Ok(())
    }
}
