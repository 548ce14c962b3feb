//! `tokengun`: parse, set up logging and Ctrl-C, hand over to the library, exit with its code.

use clap::Parser;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = tokengun::cmd::Cli::parse();
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
        if stop_signal().await {
            on_signal.cancel();
            // A second signal means "now": leave without waiting for the grace period.
            if stop_signal().await {
                tokengun::tui::restore_terminal();
                eprintln!("\ninterrupted twice: exiting without waiting for in-flight requests");
                std::process::exit(i32::from(tokengun::EXIT_INTERRUPTED));
            }
        }
    });
    ExitCode::from(tokengun::execute(cli, stop).await)
}

/// Ctrl-C, or (Unix) SIGTERM / SIGHUP as sent by `kill`, `timeout`, a closed terminal or a CI
/// job's cancel: each stops the run cleanly, results kept and the terminal restored.
async fn stop_signal() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return tokio::signal::ctrl_c().await.is_ok();
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.is_ok(),
            _ = term.recv() => true,
            _ = hup.recv() => true,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.is_ok()
    }
}
