//! The command line: one file per subcommand, each with its arguments and its `exec`; this
//! module holds the top-level parser, the flags several subcommands share, and the dispatch.
//!
//! To add a subcommand:
//! 1. a file here, `cmd/<name>.rs`, with its `#[derive(Args)] pub struct <Name>Args` (every flag
//!    documented with its unit and default) and `pub async fn exec(args, stop) -> u8` returning
//!    the exit code (0 ok, 1 failed, 2 bad usage, 130 interrupted);
//! 2. `pub mod <name>;` below, one variant in [`Command`], one arm in [`execute`];
//! 3. a test in `controller/tests/cli.rs` that runs the binary with it.

pub mod agents;
pub mod compare;
pub mod report;
pub mod resume;
pub mod run;
pub mod sim;
pub mod workload_args;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use agents::AgentsArgs;
pub use compare::CompareArgs;
pub use report::{FindingArgs, ReportArgs};
pub use resume::ResumeArgs;
pub use run::RunArgs;
pub use sim::SimArgs;

/// Exit code when the user interrupted a run (results kept), as shells report SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Load-test and benchmark LLM inference servers (Ollama and OpenAI-compatible).
#[derive(Parser, Debug)]
#[command(name = "tokengun", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a concurrency sweep against a server (or the built-in simulator with --sim).
    Run(Box<RunArgs>),
    /// Serve the built-in simulated inference server (Ollama or llama.cpp flavour) until Ctrl-C.
    Sim(Box<SimArgs>),
    /// Write report.md, report.html and charts/ for a run folder (any earlier run too).
    Report(ReportArgs),
    /// Overlay several runs' curves and set their findings side by side.
    Compare(CompareArgs),
    /// List agents: version, host, capabilities, and what each monitor source finds there.
    Agents(AgentsArgs),
    /// Take up a run whose controller was lost: its cycle is completed from records.pb and what
    /// the agents kept, then the sweep goes on (runs with remote agents only).
    Resume(ResumeArgs),
}

/// Runs a parsed command line; returns the process exit code. `stop` is cancelled on Ctrl-C.
pub async fn execute(cli: Cli, stop: CancellationToken) -> u8 {
    match cli.command {
        Command::Run(args) => run::exec(&args, stop).await,
        Command::Resume(args) => resume::exec(&args, stop).await,
        Command::Report(args) => report::exec(&args),
        Command::Compare(args) => compare::exec(&args),
        Command::Agents(args) => agents::exec(&args).await,
        Command::Sim(args) => sim::exec(&args, stop).await,
    }
}

/// How the controller proves itself to agents (and checks them): `run` and `agents` share these.
#[derive(Args, Debug, Clone, Default)]
pub struct AgentAuthArgs {
    /// CA (PEM) that signed the agents' certificates; given, agents are dialled with TLS
    /// (https) [default: plaintext].
    #[arg(long, value_name = "FILE")]
    pub agent_ca: Option<PathBuf>,
    /// This controller's client certificate (PEM), for agents started with --tls-client-ca.
    #[arg(long, value_name = "FILE")]
    pub agent_cert: Option<PathBuf>,
    /// The private key (PEM) of --agent-cert.
    #[arg(long, value_name = "FILE")]
    pub agent_key: Option<PathBuf>,
    /// File holding the bearer token agents started with --token-file require (or set
    /// TOKENGUN_AGENT_TOKEN) [default: no token].
    #[arg(long, value_name = "FILE")]
    pub agent_token_file: Option<PathBuf>,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 150ms, 2s, 10m)"))
}

/// Checks a duration flag at parse time but keeps its text (plan files hold text too).
fn duration_text(s: &str) -> Result<String, String> {
    duration_arg(s).map(|_| s.to_string())
}
