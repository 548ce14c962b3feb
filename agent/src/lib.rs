//! tokengun's agent: generates load next to an inference server and streams back what it measured.
//!
//! Flow: gRPC `service` (shim) -> `runner` (owns cycle state) -> `engine` (one task per
//! request) -> `backend` parsers -> `log` (sequenced records) -> `Results` stream.
#![deny(unsafe_code)]

// The controller and other crates see only what is re-exported below, the commands of the
// binary (`cmd`), the clock (`clock`) and what the benches measure (`bench`): everything else is
// the agent's own.
pub(crate) mod allow;
pub(crate) mod auth;
pub(crate) mod backend;
#[doc(hidden)]
pub mod bench;
pub(crate) mod certs;
pub mod clock;
pub mod cmd;
pub(crate) mod engine;
pub(crate) mod fdlimit;
pub(crate) mod http;
pub(crate) mod live;
pub(crate) mod log;
pub(crate) mod managed;
pub(crate) mod metrics;
pub(crate) mod monitor;
pub(crate) mod ndjson;
pub(crate) mod notify;
pub(crate) mod runner;
pub(crate) mod selfcheck;
pub(crate) mod service;
pub(crate) mod spool;
pub(crate) mod stamp;
pub(crate) mod targets;

pub use allow::{AllowError, TargetPolicy};
pub use auth::{Auth, AuthError, AuthFiles};
pub use spool::{SpoolConfig, SpoolError};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokengun_common::server::ServerTask;
use tokengun_common::transport::MAX_MESSAGE_BYTES;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// At shutdown, how long a running cycle gets to record its aborted requests (after the drain).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// At shutdown, how long in-flight requests may run on by default (`--drain-timeout`).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent's own limits and policy, whatever a controller asks.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Reported in Hello; defaults to `hostname-pid`.
    pub agent_id: String,
    /// Most concurrent requests one cycle may ask for.
    pub max_concurrency: u32,
    /// Highest open-loop arrival rate a cycle may ask for, requests/s (None: no cap).
    pub max_rate_per_s: Option<f64>,
    /// Longest a cycle may run; longer ones are refused, overrunning ones aborted (None: no cap).
    pub max_duration: Option<Duration>,
    /// Which targets it fires at.
    pub targets: TargetPolicy,
    /// TCP connect timeout toward the target.
    pub connect_timeout: Duration,
    /// Where the host's sysfs is mounted (`/sys`; elsewhere in a container): AMD and RAPL
    /// power are read under it.
    pub sys_root: std::path::PathBuf,
    /// `--power`: the Apple Silicon power source when a controller names none.
    pub power: tokengun_common::sources::PowerChoice,
    /// What a controller must present (TLS, client certificate, token).
    pub auth: Auth,
    /// Where records are spooled to disk before they are streamed (None: memory only, as the
    /// in-process agent of `tokengun run` does).
    pub spool: Option<spool::SpoolConfig>,
    /// At shutdown, how long in-flight requests may finish before they are aborted.
    pub drain_timeout: Duration,
    /// Server commands a plan may have this agent start (`--allow-server-command`); none by
    /// default.
    pub allowed_server_commands: Vec<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            agent_id: format!(
                "{}-{}",
                gethostname::gethostname().to_string_lossy(),
                std::process::id()
            ),
            max_concurrency: 10_000,
            max_rate_per_s: None,
            max_duration: None,
            targets: TargetPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            sys_root: std::path::PathBuf::from("/sys"),
            power: tokengun_common::sources::PowerChoice::Auto,
            auth: Auth::none(),
            spool: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            allowed_server_commands: Vec::new(),
        }
    }
}

/// The agent could not serve.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("agent gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
}

/// The record log `config` asks for: its spool opened (sequence numbers continue, a cycle left
/// unfinished by a crash is closed as recovered), or an in-memory one.
pub(crate) fn open_log(config: &AgentConfig) -> Result<Arc<log::RecordLog>, AgentError> {
    let Some(cfg) = config.spool.clone() else {
        return Ok(Arc::new(log::RecordLog::new()));
    };
    let dir = cfg.dir.clone();
    let (log, found) = log::RecordLog::open(cfg)?;
    tracing::info!(
        spool = %dir.display(),
        records = found.records,
        last_seq = found.last_seq,
        acked = found.acked,
        "spool opened"
    );
    Ok(Arc::new(log))
}

/// Serves the Agent gRPC service on an already-bound listener until `shutdown` resolves; every
/// call is checked against `config.auth`.
pub async fn serve(
    listener: TcpListener,
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let log = open_log(&config)?;
    serve_log(listener, config, log, shutdown).await
}

/// [`serve`] with a log already opened by [`open_log`]. At `shutdown` it drains: nothing new
/// starts, in-flight requests get `config.drain_timeout` to finish, the rest are aborted (and
/// recorded so), the spool is fsynced, open results streams end.
pub(crate) async fn serve_log(
    listener: TcpListener,
    config: AgentConfig,
    log: Arc<log::RecordLog>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let config = Arc::new(config);
    let client = http::client(config.connect_timeout, Arc::new(config.targets.clone()));
    let sync_stop = CancellationToken::new();
    let syncer = log.spawn_syncer(sync_stop.clone());
    let caps = runner::Caps {
        max_concurrency: config.max_concurrency,
        max_rate_per_s: config.max_rate_per_s,
        max_duration: config.max_duration,
        nofile_limit: fdlimit::raise_nofile_limit(),
    };
    let runner = runner::RunnerHandle::spawn(client.clone(), log.clone(), caps);
    let interceptor = config.auth.interceptor();
    let incoming = ReceiverStream::new(auth::accept(listener, &config.auth));
    let stop = CancellationToken::new();
    let drain_timeout = config.drain_timeout;
    let svc = service::AgentService::new(config, runner.clone(), log.clone(), client, stop.clone());
    let drain = async move {
        shutdown.await;
        let running =
            || async { matches!(runner.status().await, Ok(runner::RunnerState::Running(_))) };
        let until_idle = |limit: Duration| async move {
            let deadline = tokio::time::Instant::now() + limit;
            while tokio::time::Instant::now() < deadline && running().await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        // Start nothing new; in-flight requests finish within the drain timeout.
        if runner.drain().await.unwrap_or(false) {
            tracing::info!(
                "draining: no new requests; in-flight ones get up to {}",
                humantime::format_duration(drain_timeout)
            );
            until_idle(drain_timeout).await;
        }
        // Whatever still runs is aborted and recorded so.
        if runner.abort(0).await.unwrap_or(false) {
            tracing::warn!("drain timeout reached: aborting the requests still in flight");
            until_idle(SHUTDOWN_GRACE).await;
        }
        // Let the last records reach an open results stream, then end the streams.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
    };
    let served = tonic::transport::Server::builder()
        .add_service(tonic::service::interceptor::InterceptedService::new(
            tokengun_proto::agent_server::AgentServer::new(svc)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            interceptor,
        ))
        .serve_with_incoming_shutdown(incoming, drain)
        .await;
    // Flush and fsync the spool whatever ended the server.
    sync_stop.cancel();
    let _ = syncer.await;
    served?;
    Ok(())
}

/// An agent serving in this process on a loopback port: the same gRPC path as a remote agent.
/// Dropping it stops it at once.
pub struct LocalAgent {
    addr: SocketAddr,
    server: ServerTask<AgentError>,
}

impl LocalAgent {
    /// Binds `127.0.0.1:0` and serves.
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        let addr = "127.0.0.1:0";
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AgentError::Bind {
                addr: addr.into(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| AgentError::Bind {
            addr: addr.into(),
            source,
        })?;
        Ok(Self {
            addr: local,
            server: ServerTask::spawn(|stop| serve(listener, config, stop)),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits at most `grace`.
    pub async fn stop(self, grace: Duration) {
        self.server.stop(grace).await;
    }
}
