//! `tokengun-agent serve`: checks the flags (nothing listens before they are all right), opens
//! the spool, binds, serves until Ctrl-C or SIGTERM, then drains.

use super::{CmdError, duration_arg};
use crate::auth::{Auth, AuthError, AuthFiles};
use crate::log::RecordLog;
use crate::spool::{self, SpoolConfig};
use crate::{AgentConfig, TargetPolicy, notify};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokengun_common::credentials::TOKEN_ENV;

#[derive(Args)]
pub(super) struct ServeArgs {
    /// Address to listen on (ip:port). Anything but loopback needs authentication (--tls-client-ca
    /// and/or --token-file) or --insecure-no-auth.
    #[arg(long, default_value = "127.0.0.1:7411")]
    listen: SocketAddr,
    /// Targets this agent may load (repeatable): `loopback`, a network (10.0.0.0/8), an address,
    /// or a host name (resolved once at start). Checked on the address a target resolves to.
    /// Listing any replaces the default [default: loopback, i.e. 127.0.0.0/8 and ::1].
    #[arg(long = "allow-target", value_name = "NET|HOST")]
    allow_target: Vec<String>,
    /// A server program a plan's `[server]` may have this agent start, stop and restart per
    /// setting (repeatable; the plan's command must match it exactly or resolve to the same
    /// file), e.g. /usr/local/bin/ollama [default: none: plans that own a server are refused].
    #[arg(long = "allow-server-command", value_name = "PATH")]
    allow_server_command: Vec<String>,
    /// Most concurrent requests a cycle may ask of this agent.
    #[arg(long, default_value_t = 10_000)]
    max_concurrency: u32,
    /// Highest open-loop arrival rate a cycle may ask for, in requests/s [default: no cap beyond
    /// --max-concurrency].
    #[arg(long, value_name = "REQUESTS_PER_S")]
    max_rate: Option<f64>,
    /// Longest a cycle may run (e.g. 2h): longer closed/open durations are refused, and a cycle
    /// still running this long after it started is aborted.
    #[arg(long, value_parser = duration_arg, default_value = "24h")]
    max_duration: Duration,
    /// This agent's TLS certificate chain (PEM); with --tls-key, the agent speaks only TLS
    /// [default: plaintext].
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that controllers' client certificates must chain to; given, every controller
    /// must present one (mutual TLS) [default: no client certificates].
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// File holding the bearer token controllers must send (at least 16 characters; also
    /// settable as the TOKENGUN_AGENT_TOKEN environment variable) [default: no token].
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Serve a non-loopback address with no authentication at all: anyone who reaches the port
    /// can aim load through this agent. Only on a network you trust.
    #[arg(long, alias = "insecure-listen")]
    insecure_no_auth: bool,
    /// Where the host's /sys is mounted (in a container, e.g. /host/sys): AMD GPU and RAPL
    /// power are read under it.
    #[arg(long, default_value = "/sys")]
    sys_root: PathBuf,
    /// Apple Silicon power source when the controller names none: auto (IOReport without root,
    /// else powermetrics when running as root, else none, saying why), ioreport, powermetrics
    /// (as root or through sudo -n) or none. IOReport was type-checked, not run, by tokengun's CI.
    #[arg(long, default_value = "auto", value_parser = super::power_choice)]
    power: tokengun_common::sources::PowerChoice,
    /// Folder of the on-disk record spool: every record is written there before it is streamed,
    /// so a controller that reconnects, or an agent restarted after a crash, replays what was not
    /// acknowledged. Writes reach the OS at once (a killed agent loses nothing); fsync is batched
    /// every 100 ms and at each cycle's end (a power loss can lose the last 100 ms). One agent
    /// per folder; it also keeps the agent's id (file agent-id) [default: $STATE_DIRECTORY under
    /// systemd, else one folder per --listen address (e.g. 127.0.0.1-7411) under
    /// $XDG_STATE_HOME/tokengun-agent, else under ~/.local/state/tokengun-agent].
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<PathBuf>,
    /// How long unacknowledged records stay in the spool when no controller fetches them
    /// (e.g. 24h, 7d); acknowledged ones are deleted at once, a segment (64 MiB) at a time.
    #[arg(long, value_parser = duration_arg, default_value = "24h")]
    spool_keep: Duration,
    /// On SIGTERM or Ctrl-C: no new requests start, in-flight ones get this long to finish
    /// (e.g. 30s, 0s), then are aborted and recorded so; the spool is fsynced and the agent exits
    /// 0. A second signal exits at once.
    #[arg(long, value_parser = duration_arg, default_value = "30s")]
    drain_timeout: Duration,
    /// This agent's id in Hello [default: the one saved in the spool folder's agent-id file,
    /// made as HOST-PID on first start].
    #[arg(long, value_name = "ID")]
    agent_id: Option<String>,
    /// Serve live Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9465): requests,
    /// tokens, in flight, TTFT/ITL/E2E histograms per cycle, self-check. Anything but loopback
    /// needs --metrics-token-file or --metrics-insecure-no-auth [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// File holding the bearer token metrics scrapers must send (at least 16 characters).
    #[arg(long, value_name = "FILE", requires = "metrics_listen")]
    metrics_token_file: Option<PathBuf>,
    /// Serve a non-loopback --metrics-listen with no token: anyone who reaches it reads them.
    #[arg(long, requires = "metrics_listen")]
    metrics_insecure_no_auth: bool,
}

/// Serves until stopped; Err says what was wrong before anything listened, or why serving ended.
pub(super) async fn exec(args: ServeArgs) -> Result<(), CmdError> {
    check_limits(&args)?;
    let listen = args.listen;
    let metrics_flags = MetricsFlags {
        listen: args.metrics_listen,
        token_file: args.metrics_token_file.clone(),
        insecure: args.metrics_insecure_no_auth,
    };
    let auth = load_auth(&args)?;
    let targets = TargetPolicy::from_entries(&args.allow_target)
        .await
        .map_err(CmdError::usage)?;
    let Some(spool_dir) = args
        .spool_dir
        .clone()
        .or_else(|| spool::default_dir(|k| std::env::var(k).ok(), listen))
    else {
        return Err(CmdError::usage(
            "no folder for the record spool: pass --spool-dir DIR (neither $STATE_DIRECTORY, $XDG_STATE_HOME nor $HOME is set)",
        ));
    };
    if args.spool_keep.is_zero() {
        return Err(CmdError::usage(
            "--spool-keep must be above zero (e.g. 24h)",
        ));
    }
    if args
        .agent_id
        .as_deref()
        .is_some_and(|id| id.trim().is_empty())
    {
        return Err(CmdError::usage("--agent-id must not be empty"));
    }
    let defaults = AgentConfig::default();
    let mut config = AgentConfig {
        max_concurrency: args.max_concurrency,
        max_rate_per_s: args.max_rate,
        max_duration: Some(args.max_duration),
        targets,
        auth,
        sys_root: args.sys_root,
        power: args.power,
        spool: Some(SpoolConfig {
            keep: args.spool_keep,
            ..SpoolConfig::new(&spool_dir)
        }),
        drain_timeout: args.drain_timeout,
        allowed_server_commands: args.allow_server_command.clone(),
        ..defaults
    };
    // The spool first: a folder in use by another agent refuses before anything listens.
    let log = crate::open_log(&config).map_err(CmdError::failed)?;
    config.agent_id = match args.agent_id {
        Some(id) => id,
        None => spool::agent_id(&spool_dir, &config.agent_id).map_err(CmdError::failed)?,
    };
    let metrics = metrics_endpoint(&metrics_flags).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        CmdError::Failed(format!(
            "cannot listen on {listen}: {e} (is another agent running? pick another --listen port)"
        ))
    })?;
    if args.spool_dir.is_none()
        && let Some(old) = spool::old_default_spool(&spool_dir)
    {
        tracing::warn!(
            old = %old.display(),
            "an older agent's spool is in the folder above this one (the default is now one folder per listen address): records it holds are replayed only by an agent started with --spool-dir {}",
            old.display()
        );
    }
    tracing::info!(
        auth = %config.auth.describe(),
        targets = %config.targets.describe(),
        spool = %spool_dir.display(),
        "serving"
    );
    if let Some((m, bound)) = metrics {
        tracing::info!("metrics on http://{bound}/metrics");
        tokio::spawn(crate::metrics::follow(
            log.clone(),
            m,
            tokio_util::sync::CancellationToken::new(),
        ));
    }
    serve(listener, config, log).await
}

/// The `--metrics-*` flags.
struct MetricsFlags {
    listen: Option<SocketAddr>,
    token_file: Option<PathBuf>,
    insecure: bool,
}

/// `--metrics-listen`: checked (loopback, or a token, or said insecure) and bound before the
/// gRPC port; it serves for the process's life.
async fn metrics_endpoint(
    args: &MetricsFlags,
) -> Result<Option<(Arc<tokengun_common::metrics::Metrics>, SocketAddr)>, CmdError> {
    use tokengun_common::metrics::{Metrics, http};
    let Some(listen) = args.listen else {
        return Ok(None);
    };
    let token = match &args.token_file {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            CmdError::usage(format!(
                "cannot read --metrics-token-file {}: {e}",
                p.display()
            ))
        })?),
        None => None,
    };
    let access = http::Access::for_listen(listen, token.as_deref(), args.insecure)
        .map_err(CmdError::usage)?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        CmdError::Failed(format!(
            "cannot listen on --metrics-listen {listen}: {e} (pick another port)"
        ))
    })?;
    let bound = listener.local_addr().map_err(CmdError::failed)?;
    let m = Arc::new(Metrics::new());
    tokio::spawn(http::serve(
        listener,
        m.clone(),
        access,
        std::future::pending(),
    ));
    Ok(Some((m, bound)))
}

/// The limits a cycle may ask for must make sense.
fn check_limits(args: &ServeArgs) -> Result<(), CmdError> {
    if args.max_concurrency == 0 {
        return Err(CmdError::usage("--max-concurrency must be at least 1"));
    }
    if let Some(r) = args.max_rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(CmdError::Usage(format!(
                "--max-rate {r} is not a positive number of requests/s"
            )));
        }
    }
    if args.max_duration.is_zero() {
        return Err(CmdError::usage("--max-duration must be above zero"));
    }
    Ok(())
}

/// The credentials the flags name, refused when they leave a non-loopback agent unprotected
/// (decided before binding: an unprotected agent never listens, not even for a moment).
fn load_auth(args: &ServeArgs) -> Result<Auth, CmdError> {
    let files = AuthFiles {
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        tls_client_ca: args.tls_client_ca.clone(),
        token_file: args.token_file.clone(),
    };
    let env_token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let auth = Auth::load(&files, env_token).map_err(CmdError::usage)?;
    let listen = args.listen;
    if listen.ip().is_loopback() {
        return Ok(auth);
    }
    if args.insecure_no_auth && auth.authenticates() {
        return Err(CmdError::usage(
            "--insecure-no-auth contradicts --tls-client-ca/--token-file: drop one or the other",
        ));
    }
    if !auth.authenticates() && !args.insecure_no_auth {
        return Err(CmdError::usage(AuthError::Unauthenticated { listen }));
    }
    if args.insecure_no_auth {
        tracing::warn!(
            "listening on {listen} with NO authentication (--insecure-no-auth): anyone who reaches it can aim load through this agent"
        );
    } else if !auth.tls() {
        tracing::warn!(
            "the bearer token crosses the network in clear text: add --tls-cert and --tls-key"
        );
    }
    Ok(auth)
}

/// Says where it listens (stdout, and systemd), serves, and drains at the first stop signal.
async fn serve(
    listener: tokio::net::TcpListener,
    config: AgentConfig,
    log: Arc<RecordLog>,
) -> Result<(), CmdError> {
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    // On stdout, unconditionally: scripts and tests read the bound port from this line.
    println!(
        "tokengun-agent {} listening on {bound}",
        env!("CARGO_PKG_VERSION")
    );
    tracing::info!(agent_id = %config.agent_id, "ready");
    if let Err(e) = notify::notify(&format!("READY=1\nSTATUS=listening on {bound}")) {
        tracing::warn!("cannot tell systemd the agent is ready ($NOTIFY_SOCKET): {e}");
    }
    let shutdown = async {
        wait_for_stop().await;
        let _ = notify::notify("STOPPING=1");
        tracing::info!(
            "stopping: draining the running cycle (Ctrl-C or SIGTERM again to exit at once)"
        );
        tokio::spawn(async {
            wait_for_stop().await;
            std::process::exit(130);
        });
    };
    crate::serve_log(listener, config, log, shutdown)
        .await
        .map_err(CmdError::failed)
}

/// Ctrl-C, or SIGTERM (how systemd, launchd and Kubernetes stop a service).
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
