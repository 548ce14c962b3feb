//! `tokengun`: parse, set up logging and Ctrl-C, hand over to the library, exit with its code.

use clap::Parser;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = tokengun::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        // Held while the live console owns the screen, printed when it gives it back.
        .with_writer(|| tokengun::tui::ConsoleStderr)
        .init();
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
            // A second Ctrl-C means "now": leave without waiting for the grace period.
            if tokio::signal::ctrl_c().await.is_ok() {
                tokengun::tui::restore_terminal();
                eprintln!("\ninterrupted twice: exiting without waiting for in-flight requests");
                std::process::exit(i32::from(tokengun::EXIT_INTERRUPTED));
            }
        }
    });
    ExitCode::from(tokengun::execute(cli, stop).await)
}
