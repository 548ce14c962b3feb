//! Monitor samples (server processes, machine, power sources) and the energy arithmetic over them:
//! energy in a window from cumulative counters or integrated power, per source and in total.
//!
//! `samples` holds what the sources read, `series` one metric over time, `power` every series of
//! a run and a window's energy from them, `energy` the figures written per cycle, `usage` the
//! server processes' figures over a window, `server_metric` the server metrics read from its
//! Prometheus endpoint.

pub mod apple;
mod energy;
pub mod metric;
mod power;
pub mod pressure;
mod samples;
mod series;
pub mod server_metric;
mod usage;

#[cfg(test)]
mod test_util;

pub use energy::{CycleEnergy, DeviceEnergy, EnergyMethod, NET_MIN_SHARE, WindowEnergy};
pub use power::PowerSeries;
pub use pressure::MachinePressure;
pub use samples::{MonitorBatch, PowerReading, ProcessReading, ProcessRole, SourceStatus};
pub use series::{FOLD_POINTS, Series};
pub use usage::{ServerUsage, ServerUsageAcc, max_opt};
