//! The Runner actor: the one owner of the agent's cycle state (idle, prepared, running).

use crate::engine::{EngineError, PreparedCycle, run_cycle};
use crate::http::HttpClient;
use crate::log::RecordLog;
use std::sync::Arc;
use std::time::Duration;
use tokengun_common::{CycleDone, CyclePlan, RecordBody};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The runtime cycles run on: apart from the one serving gRPC, so that a controller's calls
/// (Status, Abort, acks, the results stream) are answered promptly while the load keeps every
/// worker of this one busy. One per process, for its whole life (a runtime cannot be dropped from
/// async code).
fn load_runtime() -> &'static tokio::runtime::Handle {
    static LOAD: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    LOAD.get_or_init(|| {
        let built = tokio::runtime::Builder::new_multi_thread()
            .thread_name("tokengun-load")
            .enable_all()
            .build();
        match built {
            Ok(rt) => {
                let handle = rt.handle().clone();
                // Kept for the process's life: leaking it is what "static" means here.
                std::mem::forget(rt);
                handle
            }
            // No threads to be had: the cycles share the serving runtime, as before.
            Err(e) => {
                tracing::warn!("no separate load runtime ({e}); load shares the gRPC runtime");
                tokio::runtime::Handle::current()
            }
        }
    })
}

/// Why the runner refused a command.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("the agent is busy with cycle {0}; abort it or wait for it to end")]
    Busy(u32),
    #[error("cycle {0} was not prepared on this agent")]
    NotPrepared(u32),
    #[error(
        "level {level} is above this agent's limit of {max} concurrent requests (--max-concurrency)"
    )]
    Limit { level: u32, max: u32 },
    #[error(
        "rate {rate} requests/s is above this agent's cap of {max} requests/s (--max-rate); lower --levels or restart the agent with a higher --max-rate"
    )]
    RateCap { rate: f64, max: f64 },
    #[error(
        "a cycle of {duration} is above this agent's cap of {max} per cycle (--max-duration); shorten --duration or restart the agent with a longer --max-duration",
        duration = humantime::format_duration(*duration),
        max = humantime::format_duration(*max)
    )]
    DurationCap { duration: Duration, max: Duration },
    #[error(transparent)]
    Build(#[from] EngineError),
    #[error(transparent)]
    FdLimit(#[from] crate::fdlimit::FdLimitError),
    #[error("the agent is shutting down")]
    Gone,
}

/// The agent's own limits on any cycle, whatever a controller asks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Caps {
    /// Most requests in flight (burst and closed levels above it are refused; open loops are
    /// held to it).
    pub max_concurrency: u32,
    /// Highest open-loop arrival rate, requests/s (None: no cap but concurrency).
    pub max_rate_per_s: Option<f64>,
    /// Longest cycle: longer closed/open durations are refused, and any cycle still running
    /// this long after its start is aborted (None: no cap).
    pub max_duration: Option<Duration>,
    /// The open-file limit in force (already raised to the hard limit; None: unknown): levels it
    /// cannot hold are refused, and an uncapped open loop is held below it.
    pub nofile_limit: Option<u64>,
}

/// What the runner is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerState {
    Idle,
    Prepared(u32),
    Running(u32),
}

enum Command {
    Prepare(Box<CyclePlan>, oneshot::Sender<Result<(), RunnerError>>),
    Start(
        u32,
        Option<std::time::Instant>,
        oneshot::Sender<Result<(), RunnerError>>,
    ),
    Abort(u32, oneshot::Sender<bool>),
    Drain(oneshot::Sender<bool>),
    Status(oneshot::Sender<RunnerState>),
}

/// Cheap handle to the runner task; the task ends (aborting any cycle) when all handles drop.
#[derive(Clone)]
pub struct RunnerHandle {
    tx: mpsc::Sender<Command>,
}

impl RunnerHandle {
    /// Starts the runner task.
    pub fn spawn(client: HttpClient, log: Arc<RecordLog>, caps: Caps) -> Self {
        let (tx, rx) = mpsc::channel(32);
        tokio::spawn(
            Runner {
                client,
                log,
                caps,
                state: State::Idle,
                draining: false,
            }
            .run(rx),
        );
        Self { tx }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RunnerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| RunnerError::Gone)?;
        rx.await.map_err(|_| RunnerError::Gone)
    }

    /// Arms a cycle (replacing any prepared, not yet started one).
    pub async fn prepare(&self, plan: CyclePlan) -> Result<(), RunnerError> {
        self.ask(|r| Command::Prepare(Box::new(plan), r)).await?
    }

    /// Starts the prepared cycle at `at` (at once when None or past): agents begin together.
    pub async fn start_at(
        &self,
        cycle_id: u32,
        at: Option<std::time::Instant>,
    ) -> Result<(), RunnerError> {
        self.ask(|r| Command::Start(cycle_id, at, r)).await?
    }

    /// Aborts `cycle_id` if it runs (0 = whatever runs); true when something was running.
    pub async fn abort(&self, cycle_id: u32) -> Result<bool, RunnerError> {
        self.ask(|r| Command::Abort(cycle_id, r)).await
    }

    /// Shutting down: starts nothing more (a prepared cycle is dropped, later Prepare and Start
    /// are refused) and lets the running cycle's in-flight requests finish without sending new
    /// ones; true when a cycle was running. [`abort`](Self::abort) still ends it at once.
    pub async fn drain(&self) -> Result<bool, RunnerError> {
        self.ask(Command::Drain).await
    }

    /// The current state.
    pub async fn status(&self) -> Result<RunnerState, RunnerError> {
        self.ask(Command::Status).await
    }
}

enum State {
    Idle,
    Prepared(Box<PreparedCycle>),
    Running {
        cycle_id: u32,
        cancel: CancellationToken,
        /// Stops new requests only (a child of `cancel`).
        drain: CancellationToken,
    },
}

struct Runner {
    client: HttpClient,
    log: Arc<RecordLog>,
    caps: Caps,
    state: State,
    /// Shutting down: nothing new is prepared or started.
    draining: bool,
}

impl Runner {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let (done_tx, mut done_rx) = mpsc::channel::<CycleDone>(4);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd, &done_tx),
                    None => break,
                },
                Some(done) = done_rx.recv() => {
                    if matches!(self.state, State::Running { cycle_id, .. } if cycle_id == done.cycle_id) {
                        self.state = State::Idle;
                    }
                    // Logged only now, when a Prepare for the next cycle can no longer meet "busy".
                    self.log.append(RecordBody::CycleDone(done));
                }
            }
        }
        if let State::Running { cancel, .. } = &self.state {
            cancel.cancel();
        }
    }

    fn handle(&mut self, cmd: Command, done_tx: &mpsc::Sender<CycleDone>) {
        match cmd {
            Command::Prepare(plan, reply) => {
                let r = self.prepare(*plan);
                let _ = reply.send(r);
            }
            Command::Start(cycle_id, at, reply) => {
                let r = self.start(cycle_id, at, done_tx);
                let _ = reply.send(r);
            }
            Command::Abort(id, reply) => {
                let was = match &self.state {
                    State::Running {
                        cycle_id, cancel, ..
                    } if id == 0 || id == *cycle_id => {
                        cancel.cancel();
                        true
                    }
                    _ => false,
                };
                if matches!(&self.state, State::Prepared(c) if id == 0 || c.plan().cycle_id == id) {
                    self.state = State::Idle;
                }
                let _ = reply.send(was);
            }
            Command::Drain(reply) => {
                self.draining = true;
                let was = match &self.state {
                    State::Running { drain, .. } => {
                        drain.cancel();
                        true
                    }
                    State::Prepared(_) => {
                        self.state = State::Idle;
                        false
                    }
                    State::Idle => false,
                };
                let _ = reply.send(was);
            }
            Command::Status(reply) => {
                let _ = reply.send(match &self.state {
                    State::Idle => RunnerState::Idle,
                    State::Prepared(c) => RunnerState::Prepared(c.plan().cycle_id),
                    State::Running { cycle_id, .. } => RunnerState::Running(*cycle_id),
                });
            }
        }
    }

    fn prepare(&mut self, mut plan: CyclePlan) -> Result<(), RunnerError> {
        if self.draining {
            return Err(RunnerError::Gone);
        }
        if let State::Running { cycle_id, .. } = self.state {
            return Err(RunnerError::Busy(cycle_id));
        }
        let caps = self.caps;
        if plan.concurrency > caps.max_concurrency {
            return Err(RunnerError::Limit {
                level: plan.concurrency,
                max: caps.max_concurrency,
            });
        }
        if let Some(max) = caps.max_rate_per_s {
            if plan.shape.is_rate() && plan.rate_per_s > max {
                return Err(RunnerError::RateCap {
                    rate: plan.rate_per_s,
                    max,
                });
            }
        }
        if let Some(max) = caps.max_duration {
            if plan.shape.has_duration() && plan.duration > max {
                return Err(RunnerError::DurationCap {
                    duration: plan.duration,
                    max,
                });
            }
        }
        // An uncapped open loop is still bounded by what this agent allows in flight, and by
        // the sockets its open-file limit leaves.
        if plan.shape.is_rate() && plan.concurrency == 0 {
            plan.concurrency = caps.max_concurrency;
            if let Some(fd_max) = caps.nofile_limit.map(crate::fdlimit::max_streams) {
                if fd_max < plan.concurrency {
                    tracing::info!(
                        "open loop of cycle {} held to {fd_max} requests in flight by the open-file limit",
                        plan.cycle_id
                    );
                    plan.concurrency = fd_max;
                }
            }
        }
        crate::fdlimit::check_concurrency(plan.concurrency, caps.nofile_limit)?;
        self.state = State::Prepared(Box::new(PreparedCycle::new(plan)?));
        Ok(())
    }

    fn start(
        &mut self,
        cycle_id: u32,
        at: Option<std::time::Instant>,
        done_tx: &mpsc::Sender<CycleDone>,
    ) -> Result<(), RunnerError> {
        if self.draining {
            return Err(RunnerError::Gone);
        }
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Prepared(c) if c.plan().cycle_id == cycle_id => {
                let cancel = CancellationToken::new();
                let drain = cancel.child_token();
                let drain_task = drain.clone();
                let (client, log, token, done_tx) = (
                    self.client.clone(),
                    self.log.clone(),
                    cancel.clone(),
                    done_tx.clone(),
                );
                let max_duration = self.caps.max_duration;
                load_runtime().spawn(async move {
                    if let Some(at) = at {
                        // An abort (or a drain) while waiting still runs the cycle, which then
                        // ends at once.
                        tokio::select! {
                            () = tokio::time::sleep_until(at.into()) => {}
                            () = drain_task.cancelled() => token.cancel(),
                        }
                    }
                    let cycle = run_cycle(client, *c, log, token.clone(), drain_task);
                    tokio::pin!(cycle);
                    let done = match max_duration {
                        None => cycle.await,
                        Some(max) => tokio::select! {
                            done = &mut cycle => done,
                            () = tokio::time::sleep(max) => {
                                // Aborted like a controller's Abort: in-flight requests are recorded.
                                tracing::warn!(
                                    "cycle {cycle_id} reached this agent's --max-duration of {}: aborting it",
                                    humantime::format_duration(max)
                                );
                                token.cancel();
                                cycle.await
                            }
                        },
                    };
                    let _ = done_tx.send(done).await;
                });
                self.state = State::Running {
                    cycle_id,
                    cancel,
                    drain,
                };
                Ok(())
            }
            State::Running {
                cycle_id: running,
                cancel,
                drain,
            } => {
                self.state = State::Running {
                    cycle_id: running,
                    cancel,
                    drain,
                };
                Err(RunnerError::Busy(running))
            }
            other => {
                self.state = other;
                Err(RunnerError::NotPrepared(cycle_id))
            }
        }
    }
}
