//! tokengun's controller. Data flows one way:
//! [`plan`] (flags, plan file, compiled phases) → [`fleet`] (agents brought up and checked) →
//! [`run`] (the sweep, cycle by cycle) → [`aggregate`] (each cycle merged across agents) →
//! sinks ([`output`]: the run folder; [`monitoring`]: monitor files; [`console`]/[`tui`]: the
//! screen) → [`report`]. [`cmd`] is the command line: one file per subcommand.
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod cmd;
pub mod console;
pub mod fleet;
pub mod link;
pub mod monitoring;
pub mod output;
pub mod plan;
pub mod report;
pub mod run;
pub mod tui;

pub use cmd::{EXIT_INTERRUPTED, execute};
