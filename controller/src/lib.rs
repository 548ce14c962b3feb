//! tokengun's controller. Data flows one way:
//! [`plan`] (flags, plan file, compiled phases) → [`fleet`] (agents brought up and checked) →
//! [`run`] (the sweep, cycle by cycle) → [`aggregate`] (each cycle merged across agents) →
//! [`sinks`] (the run folder, the monitor files, the console and its live view in [`tui`]) →
//! [`report`] (read back through `tokengun_common::run_dir`). [`cmd`] is the command line: one
//! file per subcommand.
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod cmd;
pub mod fleet;
pub mod link;
pub mod plan;
pub mod report;
pub mod run;
pub mod sinks;
pub mod tui;

pub use cmd::{EXIT_INTERRUPTED, execute};
