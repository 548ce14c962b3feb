//! Running a plan: [`run`] brings the fleet up and checks the target, then [`sweep`] runs the
//! phases cycle by cycle ([`cycle`] starts and collects one), writing each cycle's results as
//! soon as it ends; [`resume`] takes up a run whose controller was lost; [`monitoring`] drives
//! the agents' process and power monitors around the sweep.

pub mod cycle;
mod groups;
pub mod manifest;
pub mod monitoring;
pub mod resume;
pub mod sweep;

pub use resume::resume;

use crate::fleet::{self, FleetError};
use crate::link::LinkError;
use crate::plan::{InvalidPlan, RunConfig, validate};
use crate::sinks::console::Console;
use crate::sinks::run_folder::{OutDirError, RunStatus, probe_writable};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokengun_common::{CycleSummary, PlanError};
use tokio_util::sync::CancellationToken;

/// A run could not start, or broke off.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Output(#[from] OutDirError),
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The fleet could not be brought up, or the target does not fit the run.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("{0}")]
    Monitor(String),
    #[error("cannot resume {0}")]
    Resume(String),
    #[error(transparent)]
    Records(#[from] tokengun_proto::stored::StoredError),
    #[error("interrupted before any load was sent")]
    Interrupted,
    #[error(
        "the run stopped early: {reason}. Results collected so far are in {run_dir} (marked partial)"
    )]
    Broken { reason: String, run_dir: PathBuf },
}

impl From<InvalidPlan> for RunError {
    fn from(e: InvalidPlan) -> Self {
        match e {
            InvalidPlan::Plan(p) => RunError::Plan(p),
            InvalidPlan::Watch(w) => RunError::Monitor(w.to_string()),
        }
    }
}

impl RunError {
    /// The user asked for something that cannot run (exit code 2, as for bad flags).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            RunError::Plan(_) | RunError::Fleet(FleetError::AboveAgentLimit { .. })
        )
    }
}

/// What a finished (or interrupted) run produced.
#[derive(Debug)]
pub struct RunReport {
    pub run_dir: PathBuf,
    pub status: RunStatus,
    pub cycles: Vec<CycleSummary>,
}

/// Runs the whole sweep. `stop` cancels it cleanly (Ctrl-C): the running cycle is aborted, every
/// record already collected is written, and the run is marked interrupted.
pub async fn run(
    mut cfg: RunConfig,
    console: &mut Console,
    stop: CancellationToken,
) -> Result<RunReport, RunError> {
    validate(&cfg)?;
    probe_writable(&cfg.out)?;
    // Ctrl-C while agents and the target are checked: nothing was sent, nothing to keep.
    let (up, target_info) = tokio::select! {
        r = fleet::prepare_run(&cfg, false, cfg.groups().first().and_then(|g| g.setting)) => r?,
        () = stop.cancelled() => return Err(RunError::Interrupted),
    };
    let checked = fleet::check_models(&up, &cfg, &target_info).await;
    let warnings = match checked {
        Ok(w) => w,
        Err(e) => {
            fleet::server::stop_after_error(&up, &cfg).await;
            return Err(e.into());
        }
    };
    cfg.warnings.extend(warnings);
    cfg.api = Some(target_info.api);
    let (dir, manifest) = match manifest::begin(&cfg, &up, &target_info, console) {
        Ok(b) => b,
        Err(e) => {
            fleet::server::stop_after_error(&up, &cfg).await;
            return Err(e);
        }
    };
    sweep::Sweep::new(cfg, up, dir, manifest, console, stop)
        .run(None)
        .await
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
