//! `tokengun-agent`: serves the Agent gRPC service next to an inference server.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;
use tokengun_agent::{AgentConfig, TargetPolicy};

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
    /// Serve the agent's gRPC API until Ctrl-C.
    Serve {
        /// Address to listen on (ip:port).
        #[arg(long, default_value = "127.0.0.1:7411")]
        listen: SocketAddr,
        /// Also allow load toward this host name or IP address (repeatable). Loopback is always
        /// allowed; nothing else is unless listed.
        #[arg(long = "allow-target", value_name = "HOST")]
        allow_target: Vec<String>,
        /// Most concurrent requests a cycle may ask of this agent.
        #[arg(long, default_value_t = 10_000)]
        max_concurrency: u32,
        /// Accept unauthenticated controllers on a non-loopback address. Authentication (mTLS,
        /// tokens) comes in a later release; until then use this only on a trusted network.
        #[arg(long)]
        insecure_listen: bool,
        /// Where the host's /sys is mounted (in a container, e.g. /host/sys): AMD GPU and RAPL
        /// power are read under it.
        #[arg(long, default_value = "/sys")]
        sys_root: std::path::PathBuf,
    },
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

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (listen, allow_target, max_concurrency, insecure_listen, sys_root) =
        match Cli::parse().command {
            Command::Serve {
                listen,
                allow_target,
                max_concurrency,
                insecure_listen,
                sys_root,
            } => (
                listen,
                allow_target,
                max_concurrency,
                insecure_listen,
                sys_root,
            ),
            Command::Probe {
                watch_process,
                target,
                sample,
                interval,
            } => return probe::run(watch_process, target, sample, interval).await,
        };
    if !listen.ip().is_loopback() && !insecure_listen {
        eprintln!(
            "error: refusing to listen on {listen} without authentication: an open agent lets anyone \
             aim load through it. Listen on 127.0.0.1, or pass --insecure-listen on a trusted network."
        );
        return ExitCode::from(2);
    }
    if max_concurrency == 0 {
        eprintln!("error: --max-concurrency must be at least 1");
        return ExitCode::from(2);
    }
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {listen}: {e} (is another agent running? pick another --listen port)"
            );
            return ExitCode::FAILURE;
        }
    };
    let config = AgentConfig {
        max_concurrency,
        targets: TargetPolicy::LoopbackAnd(allow_target),
        sys_root,
        ..AgentConfig::default()
    };
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
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stopping: aborting the running cycle (Ctrl-C again to exit at once)");
        tokio::spawn(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
    };
    match tokengun_agent::serve(listener, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
