//! Where a run's results go as they come: the run folder ([`run_folder`]: records.pb and the
//! study's CSVs through `tokengun_common::run_dir`, run.json, plan.json), the monitor files and
//! each cycle's energy and server figures ([`monitor`]), the screen ([`console`]: plain
//! lines, or the live view drawn by `crate::tui`), and live metrics out ([`metrics`]).

pub mod console;
pub mod metrics;
pub mod monitor;
pub mod run_folder;
