//! `tokengun resume`: take up a run whose controller was lost.

use super::run::{console_for, finish_run};
use clap::Args;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// `tokengun resume`.
#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// The run's folder (holding run.json, plan.json, records.pb).
    pub run_dir: PathBuf,
    /// Plain progress lines instead of the live console.
    #[arg(long)]
    pub no_tui: bool,
    /// Print only errors and the final summary table.
    #[arg(long)]
    pub quiet: bool,
    /// Do not write the report at the end.
    #[arg(long)]
    pub no_report: bool,
}

/// Resumes the run folder, then reports as `run` does.
pub async fn exec(args: &ResumeArgs, stop: CancellationToken) -> u8 {
    let mut console = console_for(args.no_tui, args.quiet, &stop);
    let result = crate::run::resume(&args.run_dir, &mut console, stop).await;
    finish_run(console, result, args.no_report).await
}
