//! The run's agents as the controller sees them: one [`Member`] per agent (its link, clock,
//! where its record stream stands), their merged record events, and reconnection. Brought up
//! and checked against the target in [`bringup`].

pub mod bringup;
pub mod server;

pub use bringup::{FleetError, bring_up, check_models, expand_agents, prepare_run};

use crate::link::{AgentAuth, AgentInfo, AgentLink, ClockMap, LinkError};
use std::time::Duration;
use tokengun_agent::LocalAgent;
use tokengun_common::Record;
use tokengun_simulator::SimHandle;
use tokio::sync::mpsc;

/// Clock probes per agent; the lowest-delay one is kept.
pub const CLOCK_PROBES: usize = 8;
/// One reconnection attempt to a lost agent.
const RECONNECT_TRY: Duration = Duration::from_secs(2);

/// One agent of the run, as the controller sees it.
pub struct Member {
    /// `agent1`, `agent2`... in the order given (the only agent: `agent1`).
    pub label: String,
    pub link: AgentLink,
    pub info: AgentInfo,
    /// Its clock against ours, from the lowest-delay probe.
    pub clock: Option<ClockMap>,
    /// Last record seen, and last acknowledged.
    pub last_seq: u64,
    pub acked: u64,
    /// Bumped at each (re)connection of its results stream: older streams' items are ignored.
    pub stream_no: u64,
    pub alive: bool,
    /// Its index in the monitor sink.
    pub monitor: Option<usize>,
    /// Its monitor's origin (agent clock) for the baseline.
    pub monitor_origin: u64,
    /// The agent inside this process, when it is one (it lives as long as the member).
    pub local: Option<LocalAgent>,
}

impl Member {
    /// Acknowledges what was seen, without waiting: a silent agent must not stall the loop that
    /// notices its silence. A lost ack only means the agent keeps records a little longer.
    pub fn ack_in_background(&mut self) {
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

    /// Takes record number `seq` if it is new: returns how many records were skipped before it
    /// (a gap), or None for a replayed duplicate.
    pub fn advance(&mut self, seq: u64) -> Option<u64> {
        if seq <= self.last_seq {
            return None;
        }
        let gap = seq - self.last_seq - 1;
        self.last_seq = seq;
        Some(gap)
    }
}

/// A record (or a broken stream) from member `.0`'s stream generation `.1`.
pub type Event = (usize, u64, Result<Record, LinkError>);

/// The agents of a run (and the simulator it aims at, when it serves one), with the channel
/// every member's record stream feeds.
pub struct Fleet {
    /// Kept for the run's length: the simulator stops when the fleet is dropped.
    pub sim: Option<SimHandle>,
    pub members: Vec<Member>,
    /// The server every agent loads.
    pub target: String,
    pub auth: AgentAuth,
    events_tx: mpsc::Sender<Event>,
    pub events: mpsc::Receiver<Event>,
    /// This cycle's scheduled start, on this machine's clock (several agents).
    pub scheduled_start: Option<std::time::Instant>,
    /// The plan's own server while it runs: which setting, and what was started.
    pub server: Option<(usize, tokengun_common::run_dir::ServerProcess)>,
}

impl Fleet {
    /// A fleet of `members` aiming at `target`.
    pub fn new(
        sim: Option<SimHandle>,
        members: Vec<Member>,
        target: String,
        auth: AgentAuth,
    ) -> Self {
        let (events_tx, events) = mpsc::channel(8192);
        Self {
            sim,
            members,
            target,
            auth,
            events_tx,
            events,
            scheduled_start: None,
            server: None,
        }
    }

    /// More than one agent: levels are shared, clocks mapped, results kept per agent too.
    pub fn many(&self) -> bool {
        self.members.len() > 1
    }

    /// The agent runs inside this process (it cannot be lost and come back).
    pub fn in_process(&self) -> bool {
        self.members.iter().any(|m| m.local.is_some())
    }

    /// (Re)opens member `i`'s results stream after its last seen record.
    pub async fn open_stream(&mut self, i: usize) -> Result<(), LinkError> {
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

    /// Opens every member's results stream.
    pub async fn open_streams(&mut self) -> Result<(), LinkError> {
        for i in 0..self.members.len() {
            self.open_stream(i).await?;
        }
        Ok(())
    }

    /// Tries once to reach a lost member again (same agent id); true when it is back.
    pub async fn reconnect(&mut self, i: usize) -> bool {
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

    /// The members still reachable, with their indexes.
    pub fn alive(&self) -> impl Iterator<Item = (usize, &Member)> {
        self.members.iter().enumerate().filter(|(_, m)| m.alive)
    }
}
