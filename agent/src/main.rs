//! `tokengun-agent`: serves the Agent gRPC service next to an inference server, or makes a lab's
//! certificates. The commands live in the library ([`tokengun_agent::cmd`]); this only parses
//! the command line, sets up logging and exits with the command's status.

use clap::Parser;
use std::process::ExitCode;
use tokengun_agent::cmd::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    cmd::run(Cli::parse()).await
}
