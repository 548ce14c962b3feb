//! The gRPC service: a thin shim that validates, forwards to the Runner, and streams the log.

use crate::AgentConfig;
use crate::allow::{AllowError, check_target};
use crate::backend::{PreflightError, preflight};
use crate::http::HttpClient;
use crate::log::RecordLog;
use crate::monitor::{self, Contact, Monitor, MonitorSpec};
use crate::runner::{RunnerError, RunnerHandle, RunnerState};
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokengun_common::sources::PowerChoice;
use tokengun_common::{Api, CyclePlan};
use tokengun_proto::{self as pb, convert};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Records per streamed batch, at most.
const BATCH_MAX: usize = 256;
/// Encoded bytes per batch, at most (one record may exceed it alone): far below the controller's
/// 64 MiB message limit, even when records carry long token timelines.
const BATCH_MAX_BYTES: usize = 4 * 1024 * 1024;
/// A scheduled start may lie at most this far ahead.
const MAX_START_AHEAD_NS: u64 = 60_000_000_000;

/// Implements `tokengun.v1.Agent`.
pub struct AgentService {
    config: Arc<AgentConfig>,
    runner: RunnerHandle,
    log: Arc<RecordLog>,
    client: HttpClient,
    /// Cancelled at shutdown: open results streams end once drained.
    stop: CancellationToken,
    monitor: Arc<Monitor>,
    /// The monitor's lease: when a controller last called.
    contact: Arc<Contact>,
    /// `power:<source>` for each power source found, probed at the first Hello.
    power_caps: tokio::sync::OnceCell<Vec<String>>,
    /// The server process a plan had this agent start, if any.
    managed: tokio::sync::Mutex<crate::managed::Managed>,
}

impl AgentService {
    /// A service over a runner and its log.
    pub fn new(
        config: Arc<AgentConfig>,
        runner: RunnerHandle,
        log: Arc<RecordLog>,
        client: HttpClient,
        stop: CancellationToken,
    ) -> Self {
        Self {
            runner,
            log,
            client,
            stop,
            monitor: Arc::default(),
            contact: Arc::default(),
            power_caps: tokio::sync::OnceCell::new(),
            managed: tokio::sync::Mutex::new(crate::managed::Managed::new(
                config.allowed_server_commands.clone(),
            )),
            config,
        }
    }
}

impl AgentService {
    /// `power:nvml`, `power:rapl`... for the power sources this machine has (probed once).
    async fn power_capabilities(&self) -> Vec<String> {
        let sys_root = self.config.sys_root.clone();
        let power_choice = self.config.power;
        self.power_caps
            .get_or_init(|| async move {
                let spec = MonitorSpec {
                    sys_root,
                    power_choice,
                    ..MonitorSpec::default()
                };
                let probe = tokio::task::spawn_blocking(move || monitor::detect_power(&spec).0);
                match tokio::time::timeout(Duration::from_secs(5), probe).await {
                    Ok(Ok(statuses)) => statuses
                        .into_iter()
                        .filter(|s| s.available)
                        .map(|s| format!("power:{}", s.source))
                        .collect(),
                    _ => Vec::new(),
                }
            })
            .await
            .clone()
    }
}

/// The wire's monitor spec, with defaults for unset intervals.
fn monitor_spec(s: Option<pb::MonitorSpec>, config: &AgentConfig) -> Result<MonitorSpec, Status> {
    let s = s.unwrap_or_default();
    let power_choice = PowerChoice::parse(&s.power_choice)
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .unwrap_or(config.power);
    let interval = |ms: u64, default: Duration| {
        if ms == 0 {
            Ok(default)
        } else if !(50..=3_600_000).contains(&ms) {
            Err(Status::invalid_argument(format!(
                "monitor interval {ms} ms is out of range: use 50 ms to 1 h"
            )))
        } else {
            Ok(Duration::from_millis(ms))
        }
    };
    Ok(MonitorSpec {
        watch_process: s.watch_process,
        target_url: s.target_url,
        server_metrics_url: s.server_metrics_url,
        process_interval: interval(s.process_interval_ms, monitor::DEFAULT_PROCESS_INTERVAL)?,
        power_interval: interval(s.power_interval_ms, monitor::DEFAULT_POWER_INTERVAL)?,
        power: s.power,
        server_hint: s.server_hint,
        sys_root: config.sys_root.clone(),
        power_choice,
        allow_sudo: false,
    })
}

/// Takes kept records after `after` into one batch bounded by count and encoded size.
fn next_batch(log: &RecordLog, after: u64) -> Option<(pb::ResultBatch, u64)> {
    let mut bytes = 0usize;
    let mut records = Vec::new();
    let mut last = after;
    for r in log.after(after, BATCH_MAX) {
        let wire = pb::Record::from(&r);
        let len = prost::Message::encoded_len(&wire);
        if !records.is_empty() && bytes + len > BATCH_MAX_BYTES {
            break;
        }
        bytes += len;
        last = r.seq;
        records.push(wire);
    }
    (!records.is_empty()).then_some((pb::ResultBatch { records }, last))
}

fn preflight_status(e: PreflightError) -> Status {
    match e {
        PreflightError::Unreachable(_) => Status::unavailable(e.to_string()),
        PreflightError::Refused { .. } | PreflightError::NotThisApi(_) => {
            Status::failed_precondition(e.to_string())
        }
    }
}

fn runner_status(e: RunnerError) -> Status {
    match e {
        RunnerError::Busy(_) | RunnerError::NotPrepared(_) => {
            Status::failed_precondition(e.to_string())
        }
        RunnerError::Limit { .. }
        | RunnerError::RateCap { .. }
        | RunnerError::DurationCap { .. }
        | RunnerError::FdLimit(_)
        | RunnerError::Build(_) => Status::invalid_argument(e.to_string()),
        RunnerError::Gone => Status::unavailable(e.to_string()),
    }
}

fn allow_status(e: AllowError) -> Status {
    match e {
        AllowError::NotAllowed { .. } => Status::permission_denied(e.to_string()),
        AllowError::BadUrl(_) | AllowError::BadEntry(_) => Status::invalid_argument(e.to_string()),
        AllowError::Resolve { .. } => Status::unavailable(e.to_string()),
    }
}

type ResultsStream = Pin<Box<dyn Stream<Item = Result<pb::ResultBatch, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn hello(
        &self,
        req: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloReply>, Status> {
        self.contact.touch();
        let req = req.into_inner();
        if req.protocol_version != tokengun_proto::PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol mismatch: controller speaks version {} (tokengun {}), this agent speaks {} (tokengun-agent {}); \
                 install the same tokengun version on both",
                req.protocol_version,
                req.controller_version,
                tokengun_proto::PROTOCOL_VERSION,
                env!("CARGO_PKG_VERSION")
            )));
        }
        Ok(Response::new(pb::HelloReply {
            protocol_version: tokengun_proto::PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            agent_id: self.config.agent_id.clone(),
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            capabilities: Api::ALL
                .iter()
                .map(|a| format!("api:{}", a.as_str()))
                .chain(["shape:burst", "shape:closed", "shape:open", "monitor"].map(String::from))
                .chain(self.power_capabilities().await)
                .collect(),
            max_concurrency: self.config.max_concurrency,
        }))
    }

    async fn preflight(
        &self,
        req: Request<pb::PreflightRequest>,
    ) -> Result<Response<pb::PreflightReply>, Status> {
        self.contact.touch();
        let req = req.into_inner();
        let api =
            convert::api_from_wire(req.api).map_err(|e| Status::invalid_argument(e.to_string()))?;
        check_target(&self.config.targets, &req.target_url)
            .await
            .map_err(allow_status)?;
        let base = req.target_url.trim_end_matches('/');
        let found = preflight(&self.client, base, api)
            .await
            .map_err(preflight_status)?;
        Ok(Response::new(pb::PreflightReply {
            server_version: found.version.unwrap_or_default(),
            models: found.models,
            api: convert::api_to(Some(found.api)),
        }))
    }

    async fn prepare(
        &self,
        req: Request<pb::PrepareRequest>,
    ) -> Result<Response<pb::PrepareReply>, Status> {
        self.contact.touch();
        let wire = req
            .into_inner()
            .plan
            .ok_or_else(|| Status::invalid_argument("prepare without a plan"))?;
        let plan =
            CyclePlan::try_from(wire).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A pinned agent sends to its own target only: only that one must be on its list.
        let targets = plan.targets();
        let used: Vec<&str> = match plan
            .pinned_target
            .filter(|_| plan.target_policy == tokengun_common::TargetPolicy::Pinned)
        {
            Some(k) => targets.get(k as usize).copied().into_iter().collect(),
            None => targets,
        };
        for t in used {
            check_target(&self.config.targets, t)
                .await
                .map_err(allow_status)?;
        }
        self.runner.prepare(plan).await.map_err(runner_status)?;
        Ok(Response::new(pb::PrepareReply {}))
    }

    async fn start(
        &self,
        req: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartReply>, Status> {
        self.contact.touch();
        let req = req.into_inner();
        let at = match req.start_at_mono_ns {
            0 => None,
            ns => {
                let now = crate::clock::mono_ns();
                if ns > now + MAX_START_AHEAD_NS {
                    return Err(Status::invalid_argument(format!(
                        "start instant {:.1} s ahead is too far (at most {} s): are the clocks' offsets right?",
                        (ns - now) as f64 / 1e9,
                        MAX_START_AHEAD_NS / 1_000_000_000
                    )));
                }
                Some(crate::clock::epoch() + Duration::from_nanos(ns))
            }
        };
        self.runner
            .start_at(req.cycle_id, at)
            .await
            .map_err(runner_status)?;
        Ok(Response::new(pb::StartReply {}))
    }

    type ResultsStream = ResultsStream;

    async fn results(
        &self,
        req: Request<pb::ResultsRequest>,
    ) -> Result<Response<ResultsStream>, Status> {
        let after = req.into_inner().after_seq;
        let log = self.log.clone();
        let wake = log.subscribe();
        let stop = self.stop.clone();
        // While a controller reads results, the monitor's lease holds.
        let open = self.contact.stream_open();
        let state = (log, after, wake, stop, open);
        let stream =
            futures_util::stream::unfold(state, |(log, after, mut wake, stop, open)| async move {
                loop {
                    if let Some((batch, last)) = next_batch(&log, after) {
                        return Some((Ok(batch), (log, last, wake, stop, open)));
                    }
                    // Mark the current value seen, re-check (an append may have raced), then wait.
                    wake.borrow_and_update();
                    if log.after(after, 1).is_empty() {
                        tokio::select! {
                            changed = wake.changed() => if changed.is_err() { return None },
                            () = stop.cancelled() => return None,
                        }
                    }
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ack(&self, req: Request<pb::AckRequest>) -> Result<Response<pb::AckReply>, Status> {
        self.contact.touch();
        self.log.ack(req.into_inner().seq);
        Ok(Response::new(pb::AckReply {}))
    }

    async fn abort(
        &self,
        req: Request<pb::AbortRequest>,
    ) -> Result<Response<pb::AbortReply>, Status> {
        self.contact.touch();
        let was_running = self
            .runner
            .abort(req.into_inner().cycle_id)
            .await
            .map_err(runner_status)?;
        Ok(Response::new(pb::AbortReply { was_running }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        self.contact.touch();
        let state = self.runner.status().await.map_err(runner_status)?;
        let (last_seq, acked_seq, _) = self.log.counts();
        let (state, cycle_id) = match state {
            RunnerState::Idle => ("idle", 0),
            RunnerState::Prepared(c) => ("prepared", c),
            RunnerState::Running(c) => ("running", c),
        };
        Ok(Response::new(pb::StatusReply {
            state: state.into(),
            cycle_id,
            last_seq,
            acked_seq,
        }))
    }

    async fn probe(
        &self,
        req: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeReply>, Status> {
        self.contact.touch();
        let spec = monitor_spec(req.into_inner().spec, &self.config)?;
        let (sources, watching) = tokio::task::spawn_blocking(move || monitor::probe(&spec))
            .await
            .map_err(|e| Status::internal(format!("probe failed: {e}")))?;
        Ok(Response::new(pb::ProbeReply {
            sources: sources.iter().map(Into::into).collect(),
            watching,
        }))
    }

    async fn start_monitor(
        &self,
        req: Request<pb::StartMonitorRequest>,
    ) -> Result<Response<pb::StartMonitorReply>, Status> {
        self.contact.touch();
        let spec = monitor_spec(req.into_inner().spec, &self.config)?;
        let started = self
            .monitor
            .start(spec, self.log.clone(), self.contact.clone(), &self.client)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::StartMonitorReply {
            now_mono_ns: started.now_mono_ns,
            sources: started.sources.iter().map(Into::into).collect(),
            watching: started.watching,
        }))
    }

    async fn stop_monitor(
        &self,
        _req: Request<pb::StopMonitorRequest>,
    ) -> Result<Response<pb::StopMonitorReply>, Status> {
        self.contact.touch();
        self.monitor.stop().await;
        Ok(Response::new(pb::StopMonitorReply {
            last_seq: self.log.counts().0,
            now_mono_ns: crate::clock::mono_ns(),
        }))
    }

    async fn clock_probe(
        &self,
        _req: Request<pb::ClockProbeRequest>,
    ) -> Result<Response<pb::ClockProbeReply>, Status> {
        self.contact.touch();
        Ok(Response::new(pb::ClockProbeReply {
            agent_mono_ns: crate::clock::mono_ns(),
        }))
    }

    async fn start_server(
        &self,
        req: Request<pb::StartServerRequest>,
    ) -> Result<Response<pb::StartServerReply>, Status> {
        self.contact.touch();
        let r = req.into_inner();
        check_target(&self.config.targets, &r.health_url)
            .await
            .map_err(allow_status)?;
        if !(1..=3_600_000).contains(&r.health_timeout_ms) {
            return Err(Status::invalid_argument(
                "health timeout must be from 1 ms to 1 h",
            ));
        }
        let mut env: Vec<(String, String)> = r.env.into_iter().collect();
        env.sort();
        let spec = crate::managed::ServerSpec {
            command: r.command,
            args: r.args,
            env,
            health_url: r.health_url,
            health_timeout: Duration::from_millis(r.health_timeout_ms),
        };
        let started = self
            .managed
            .lock()
            .await
            .start(&spec, &self.client)
            .await
            .map_err(|e| match e {
                crate::managed::ManagedError::NotAllowed { .. } => {
                    Status::permission_denied(e.to_string())
                }
                _ => Status::failed_precondition(e.to_string()),
            })?;
        Ok(Response::new(pb::StartServerReply {
            pid: started.pid,
            ready_ms: u64::try_from(started.ready.as_millis()).unwrap_or(u64::MAX),
            health_body: started.health_body,
        }))
    }

    async fn stop_server(
        &self,
        req: Request<pb::StopServerRequest>,
    ) -> Result<Response<pb::StopServerReply>, Status> {
        self.contact.touch();
        let grace = Duration::from_millis(req.into_inner().grace_ms.min(600_000));
        let (how, log_tail) = self.managed.lock().await.stop(grace).await;
        Ok(Response::new(pb::StopServerReply { how, log_tail }))
    }
}
