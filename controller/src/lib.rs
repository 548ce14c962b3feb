//! tokengun's controller: the CLI, the orchestrator of cycles, agent links, result writers.
#![forbid(unsafe_code)]

pub mod cli;
pub mod console;
pub mod link;
pub mod orchestrator;
pub mod output;
pub mod plan_file;
pub mod tui;
pub mod workload;

use cli::{Cli, Command};
use console::Console;
use orchestrator::RunError;
use output::RunStatus;
use std::io::IsTerminal;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Exit code when the user interrupted a run (results kept), as shells report SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Runs a parsed command line; returns the process exit code. `stop` is cancelled on Ctrl-C.
pub async fn execute(cli: Cli, stop: CancellationToken) -> u8 {
    match cli.command {
        Command::Run(args) => {
            let cfg = match args.config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 2;
                }
            };
            // The live console needs a terminal to draw on; logs and pipes get plain lines.
            let mut console = if !args.no_tui && !args.quiet && std::io::stdout().is_terminal() {
                Console::live(stop.clone())
            } else {
                Console::new(args.quiet)
            };
            let outcome = orchestrator::run(cfg, &mut console, stop).await;
            // The terminal is back before anything else is printed.
            console.finish();
            match outcome {
                Ok(report) => {
                    console::write_stdout(&format!("\nresults: {}\n", report.run_dir.display()));
                    match report.status {
                        RunStatus::Interrupted => {
                            eprintln!(
                                "interrupted: finished cycles and the partial one are written"
                            );
                            EXIT_INTERRUPTED
                        }
                        _ => 0,
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    match e {
                        RunError::Plan(_)
                        | RunError::TooManyAgents(_)
                        | RunError::AboveAgentLimit { .. } => 2,
                        RunError::Interrupted => EXIT_INTERRUPTED,
                        _ => 1,
                    }
                }
            }
        }
        Command::Sim(args) => {
            let config = args.config();
            let (models, flavor) = (config.models.join(", "), config.flavor);
            let handle = match tokengun_simulator::SimHandle::start(&args.listen, config).await {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            };
            console::write_stdout(&format!(
                "tokengun simulator ({} profile, {}) serving on {} (models: {models}); Ctrl-C to stop\n",
                args.profile,
                match flavor {
                    tokengun_simulator::Flavor::Ollama => "Ollama's /api and /v1 endpoints",
                    tokengun_simulator::Flavor::LlamaCpp => "llama.cpp's /v1 endpoints",
                },
                handle.url()
            ));
            stop.cancelled().await;
            handle.stop(Duration::from_secs(2)).await;
            0
        }
    }
}
