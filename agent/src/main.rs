//! `tokengun-agent`: serves the Agent gRPC service next to an inference server, or makes a lab's
//! certificates.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokengun_agent::auth::{Auth, AuthFiles};
use tokengun_agent::certs::{self, CertRequest};
use tokengun_agent::spool::SpoolConfig;
use tokengun_agent::{AgentConfig, TargetPolicy};
use tokengun_common::credentials::TOKEN_ENV;

mod probe;

/// Load agent for tokengun: run it next to an inference server; `tokengun run --agent HOST:PORT`
/// drives it.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the agent's gRPC API until Ctrl-C (or SIGTERM).
    Serve(Box<ServeArgs>),
    /// Make a private CA and certificates for agents and controllers (PEM files in --dir).
    Certs(CertsArgs),
    /// Say what each monitor source finds on this machine (server processes, powermetrics,
    /// NVIDIA NVML, AMD hwmon, RAPL), or why it finds nothing; with --sample, read them for a while.
    Probe {
        /// Process name or pattern to watch, as pgrep matches it, or pid:N (repeatable).
        #[arg(long = "watch-process", value_name = "PATTERN")]
        watch_process: Vec<String>,
        /// The inference server's URL: a local one's listening process is found and watched.
        #[arg(long, default_value = tokengun_common::defaults::TARGET)]
        target: String,
        /// Read the power sources for this long and print every reading as CSV, then the mean
        /// power and energy per device (e.g. 5s; 0 = only probe).
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        sample: std::time::Duration,
        /// Between power readings with --sample (e.g. 200ms).
        #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
    },
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 90s, 2h)"))
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (ip:port). Anything but loopback needs authentication (--tls-client-ca
    /// and/or --token-file) or --insecure-no-auth.
    #[arg(long, default_value = "127.0.0.1:7411")]
    listen: SocketAddr,
    /// Targets this agent may load (repeatable): `loopback`, a network (10.0.0.0/8), an address,
    /// or a host name (resolved once at start). Checked on the address a target resolves to.
    /// Listing any replaces the default [default: loopback, i.e. 127.0.0.0/8 and ::1].
    #[arg(long = "allow-target", value_name = "NET|HOST")]
    allow_target: Vec<String>,
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
    /// Folder of the on-disk record spool: every record is written there before it is streamed,
    /// so a controller that reconnects, or an agent restarted after a crash, replays what was not
    /// acknowledged. Writes reach the OS at once (a killed agent loses nothing); fsync is batched
    /// every 100 ms and at each cycle's end (a power loss can lose the last 100 ms). One agent
    /// per folder; it also keeps the agent's id (file agent-id) [default: $STATE_DIRECTORY under
    /// systemd, else $XDG_STATE_HOME/tokengun-agent, else ~/.local/state/tokengun-agent].
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
}

#[derive(Args)]
struct CertsArgs {
    /// Folder for the PEM files; its ca.pem/ca-key.pem are made on first use, then reused.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// An agent's certificate, for the names and addresses controllers dial it by,
    /// comma-separated (e.g. gpu1.lab,10.0.0.5); the first names its files (repeatable).
    #[arg(long = "agent", value_name = "NAMES")]
    agents: Vec<String>,
    /// A controller's client certificate, by name (repeatable).
    #[arg(long = "controller", value_name = "NAME")]
    controllers: Vec<String>,
    /// Validity of the agent and controller certificates, in days (the CA gets 10 years).
    #[arg(long, default_value_t = 825)]
    days: u32,
}

fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(*args).await,
        Command::Certs(args) => make_certs(args),
        Command::Probe {
            watch_process,
            target,
            sample,
            interval,
        } => probe::run(watch_process, target, sample, interval).await,
    }
}

fn make_certs(args: CertsArgs) -> ExitCode {
    let agents = args
        .agents
        .iter()
        .map(|a| a.split(',').map(str::to_string).collect())
        .collect();
    if args.days == 0 {
        return usage_error("--days must be at least 1");
    }
    match certs::make(&CertRequest {
        dir: args.dir,
        agents,
        controllers: args.controllers,
        valid_days: args.days,
    }) {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    if args.max_concurrency == 0 {
        return usage_error("--max-concurrency must be at least 1");
    }
    if let Some(r) = args.max_rate {
        if !(r.is_finite() && r > 0.0) {
            return usage_error(format!(
                "--max-rate {r} is not a positive number of requests/s"
            ));
        }
    }
    if args.max_duration.is_zero() {
        return usage_error("--max-duration must be above zero");
    }
    let files = AuthFiles {
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        tls_client_ca: args.tls_client_ca,
        token_file: args.token_file,
    };
    let env_token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let auth = match Auth::load(&files, env_token) {
        Ok(a) => a,
        Err(e) => return usage_error(e),
    };
    let listen = args.listen;
    // Decided before binding: an unprotected agent never listens, not even for a moment.
    if !listen.ip().is_loopback() {
        if args.insecure_no_auth && auth.authenticates() {
            return usage_error(
                "--insecure-no-auth contradicts --tls-client-ca/--token-file: drop one or the other",
            );
        }
        if !auth.authenticates() && !args.insecure_no_auth {
            return usage_error(tokengun_agent::auth::AuthError::Unauthenticated { listen });
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
    }
    let targets = match TargetPolicy::from_entries(&args.allow_target).await {
        Ok(t) => t,
        Err(e) => return usage_error(e),
    };
    let Some(spool_dir) = args
        .spool_dir
        .clone()
        .or_else(|| tokengun_agent::spool::default_dir(|k| std::env::var(k).ok()))
    else {
        return usage_error(
            "no folder for the record spool: pass --spool-dir DIR (neither $STATE_DIRECTORY, $XDG_STATE_HOME nor $HOME is set)",
        );
    };
    if args.spool_keep.is_zero() {
        return usage_error("--spool-keep must be above zero (e.g. 24h)");
    }
    if args
        .agent_id
        .as_deref()
        .is_some_and(|id| id.trim().is_empty())
    {
        return usage_error("--agent-id must not be empty");
    }
    let defaults = AgentConfig::default();
    let mut config = AgentConfig {
        max_concurrency: args.max_concurrency,
        max_rate_per_s: args.max_rate,
        max_duration: Some(args.max_duration),
        targets,
        auth,
        sys_root: args.sys_root,
        spool: Some(SpoolConfig {
            keep: args.spool_keep,
            ..SpoolConfig::new(&spool_dir)
        }),
        drain_timeout: args.drain_timeout,
        ..defaults
    };
    // The spool first: a folder in use by another agent refuses before anything listens.
    let log = match tokengun_agent::open_log(&config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    config.agent_id = match args.agent_id {
        Some(id) => id,
        None => match tokengun_agent::spool::agent_id(&spool_dir, &config.agent_id) {
            Ok(id) => id,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {listen}: {e} (is another agent running? pick another --listen port)"
            );
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        auth = %config.auth.describe(),
        targets = %config.targets.describe(),
        spool = %spool_dir.display(),
        "serving"
    );
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
    if let Err(e) = tokengun_agent::notify::notify(&format!("READY=1\nSTATUS=listening on {bound}"))
    {
        tracing::warn!("cannot tell systemd the agent is ready ($NOTIFY_SOCKET): {e}");
    }
    let shutdown = async {
        wait_for_stop().await;
        let _ = tokengun_agent::notify::notify("STOPPING=1");
        tracing::info!(
            "stopping: draining the running cycle (Ctrl-C or SIGTERM again to exit at once)"
        );
        tokio::spawn(async {
            wait_for_stop().await;
            std::process::exit(130);
        });
    };
    match tokengun_agent::serve_log(listener, config, log, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
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
