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
pub mod completions;
pub mod export;
pub mod man;
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
pub use completions::CompletionsArgs;
pub use export::ExportArgs;
pub use man::ManArgs;
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
    /// Every request of a run's records.pb, one line each (JSON Lines or CSV), for pandas & co.
    Export(ExportArgs),
    /// A shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(CompletionsArgs),
    /// The man page (tokengun.1) on stdout, or every command's page into --out DIR.
    Man(ManArgs),
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
        Command::Export(args) => export::exec(&args),
        Command::Completions(args) => completions::exec(&args),
        Command::Man(args) => man::exec(&args),
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

/// `--metrics-listen` and its access rules (`run`; the agent has the same flags).
#[derive(Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// Serve live Prometheus metrics at http://ADDR/metrics while the run goes on (e.g.
    /// 127.0.0.1:9464). Anything but loopback needs --metrics-token-file or
    /// --metrics-insecure-no-auth [default: off].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// File holding the bearer token scrapers must send (at least 16 characters) [default: none].
    #[arg(long, value_name = "FILE", requires = "metrics_listen")]
    pub metrics_token_file: Option<PathBuf>,
    /// Serve a non-loopback --metrics-listen with no token: anyone who reaches it reads them.
    #[arg(long, requires = "metrics_listen")]
    pub metrics_insecure_no_auth: bool,
}

impl MetricsArgs {
    /// Starts the endpoint when asked for (saying where it listens); it serves until `stop`.
    pub async fn start(
        &self,
        stop: CancellationToken,
    ) -> Result<Option<crate::sinks::metrics::MetricsOut>, String> {
        let Some(listen) = self.metrics_listen else {
            return Ok(None);
        };
        let (m, bound) = crate::sinks::metrics::start(
            listen,
            self.metrics_token_file.as_deref(),
            self.metrics_insecure_no_auth,
            stop,
        )
        .await?;
        crate::sinks::console::write_stdout(&format!("metrics: http://{bound}/metrics\n"));
        Ok(Some(crate::sinks::metrics::MetricsOut::new(m)))
    }
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 150ms, 2s, 10m)"))
}

/// Checks a duration flag at parse time but keeps its text (plan files hold text too).
fn duration_text(s: &str) -> Result<String, String> {
    duration_arg(s).map(|_| s.to_string())
}
