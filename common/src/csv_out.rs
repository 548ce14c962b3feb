//! The study's CSV writers under their first path: they live in [`crate::run_dir`], with the
//! rest of the run folder's format. New code imports them from there.

pub use crate::run_dir::cycles::{CyclesCsv, cycles_header, cycles_row};
pub use crate::run_dir::requests::{
    REQUEST_SUMMARY_HEADER, RequestSummaryCsv, THROUGHPUT_HEADER, request_summary_row, timestamp,
    write_throughput,
};
pub use crate::run_dir::{OutputError, write_atomic};
