//! The `tokengun-agent` command line: its arguments and what each subcommand does. `main.rs`
//! only parses, sets up logging and calls [`run`].
//!
//! To add a subcommand: one file here with its `Args` struct and an `exec` returning
//! `Result<(), CmdError>`, a variant in `Command` and its arm in [`run`], and a test in
//! agent/tests/cli.rs.

mod certs;
mod probe;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Load agent for tokengun: run it next to an inference server; `tokengun run --agent HOST:PORT`
/// drives it.
#[derive(Parser)]
#[command(name = "tokengun-agent", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the agent's gRPC API until Ctrl-C (or SIGTERM).
    Serve(Box<serve::ServeArgs>),
    /// Make a private CA and certificates for agents and controllers (PEM files in --dir).
    Certs(certs::CertsArgs),
    /// Say what each monitor source finds on this machine (server processes, Apple Silicon
    /// IOReport and powermetrics, NVIDIA NVML, AMD hwmon, RAPL), which power source is used and
    /// why, or why none; with --sample, read them for a while; --json for one JSON document.
    Probe(probe::ProbeArgs),
}

/// A subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The command line asks for something impossible: `error: ...`, exit status 2.
    #[error("{0}")]
    Usage(String),
    /// The command failed: `error: ...`, exit status 1.
    #[error("{0}")]
    Failed(String),
    /// It had nothing to work on, and says so as it is: exit status 1.
    #[error("{0}")]
    Nothing(String),
}

impl CmdError {
    /// A usage error from anything that displays.
    fn usage(message: impl std::fmt::Display) -> Self {
        Self::Usage(message.to_string())
    }

    /// A failure from anything that displays.
    fn failed(message: impl std::fmt::Display) -> Self {
        Self::Failed(message.to_string())
    }
}

/// A `--power` value (clap's parser).
fn power_choice(s: &str) -> Result<tokengun_common::sources::PowerChoice, String> {
    tokengun_common::sources::PowerChoice::parse(s)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "--power needs a value: auto, ioreport, powermetrics or none".to_string())
}

/// Runs the parsed command line; says what went wrong on stderr and returns the exit status.
pub async fn run(cli: Cli) -> ExitCode {
    let done = match cli.command {
        Command::Serve(args) => serve::exec(*args).await,
        Command::Certs(args) => certs::exec(args),
        Command::Probe(args) => probe::exec(args).await,
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ CmdError::Usage(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e @ CmdError::Failed(_)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(CmdError::Nothing(e)) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A duration flag (`90s`, `2h`).
fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 90s, 2h)"))
}
