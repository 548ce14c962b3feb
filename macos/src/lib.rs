//! tokengun's macOS calls, each as thin as it can be: IOReport windows through the `macmon`
//! crate, per-process energy (`proc_pid_rusage`), thermal and memory pressure (`notify`,
//! `sysctl`). Everything they return is turned into figures by `tokengun_common::monitor::apple`
//! and `::pressure`, which are tested on every platform; this crate is empty elsewhere.
//!
//! No machine that builds tokengun's CI is a Mac: this crate is type-checked there
//! (`cargo check -p tokengun-macos --target aarch64-apple-darwin`, in `.ci/run`), never run.

#[cfg(target_os = "macos")]
pub mod ioreport;
#[cfg(target_os = "macos")]
pub mod system;
