//! `tokengun-agent`: serves the Agent gRPC service next to an inference server.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;
use tokengun_agent::{AgentConfig, TargetPolicy};

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
    let Command::Serve {
        listen,
        allow_target,
        max_concurrency,
        insecure_listen,
    } = Cli::parse().command;
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
