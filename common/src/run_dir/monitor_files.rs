//! The monitors' files, one row per reading (long format): `power.csv` (power, clock, busy of
//! each power source's devices) and `processes.csv` (the watched processes and the machine).
//! Their columns and readers; the controller's monitor sink writes them in this column order.

use super::csv_file::CsvTable;
use super::{POWER_CSV, PROCESSES_CSV, ReadError};
use std::path::Path;

/// Column names of `power.csv`.
pub mod power_col {
    /// Seconds since the run's origin on the agent's clock.
    pub const ELAPSED_S: &str = "elapsed_s";
    /// The level label, `baseline`, or empty between phases.
    pub const CYCLE: &str = "cycle";
    pub const AGENT: &str = "agent";
    pub const SOURCE: &str = "source";
    pub const DEVICE: &str = "device";
    /// One of `common::monitor::metric`.
    pub const METRIC: &str = "metric";
    pub const UNIT: &str = "unit";
    pub const VALUE: &str = "value";
}

/// `power.csv` columns, in order.
pub const POWER_HEADER: [&str; 8] = [
    power_col::ELAPSED_S,
    power_col::CYCLE,
    power_col::AGENT,
    power_col::SOURCE,
    power_col::DEVICE,
    power_col::METRIC,
    power_col::UNIT,
    power_col::VALUE,
];

/// Column names of `processes.csv`.
pub mod process_col {
    pub use super::power_col::{AGENT, CYCLE, ELAPSED_S};
    /// `server`, `runner` or `machine` (`ProcessRole::as_str`).
    pub const ROLE: &str = "role";
    pub const PID: &str = "pid";
    pub const NAME: &str = "name";
    /// Per core for a process (200 = two cores busy); all cores 0..100 for the machine.
    pub const CPU_PCT: &str = "cpu_pct";
    /// Resident memory; for the machine, memory in use.
    pub const RSS_BYTES: &str = "rss_bytes";
    pub const VSZ_BYTES: &str = "vsz_bytes";
    pub const THREADS: &str = "threads";
    pub const OPEN_FDS: &str = "open_fds";
    /// Machine rows only.
    pub const MEM_TOTAL_BYTES: &str = "mem_total_bytes";
    pub const LOAD_AVG_1M: &str = "load_avg_1m";
    /// Machine rows only: logical CPUs (absent in older files).
    pub const CPU_COUNT: &str = "cpu_count";
    /// J the process used since the agent first saw it (macOS `ri_energy_nj`; cumulative).
    pub const ENERGY_J: &str = "energy_j";
    /// The process's power over the interval since its previous row, W.
    pub const POWER_W: &str = "power_w";
    /// Machine rows: memory pressure, 0 normal, 1 warn, 2 critical (macOS's level; Linux from PSI).
    pub const MEM_PRESSURE: &str = "mem_pressure";
    /// Machine rows: Linux PSI memory `some avg10`, percent.
    pub const MEM_STALL_PCT: &str = "mem_stall_pct";
    pub const SWAP_USED_BYTES: &str = "swap_used_bytes";
    /// Machine rows: thermal pressure, 0 nominal, 1 moderate, 2 heavy, 3 trapping, 4 sleeping.
    pub const THERMAL_PRESSURE: &str = "thermal_pressure";
    /// Machine rows: the hottest sensor readable without root, C.
    pub const TEMP_C: &str = "temp_c";
}

/// `processes.csv` columns, in order.
pub const PROCESSES_HEADER: [&str; 21] = [
    process_col::ELAPSED_S,
    process_col::CYCLE,
    process_col::AGENT,
    process_col::ROLE,
    process_col::PID,
    process_col::NAME,
    process_col::CPU_PCT,
    process_col::RSS_BYTES,
    process_col::VSZ_BYTES,
    process_col::THREADS,
    process_col::OPEN_FDS,
    process_col::MEM_TOTAL_BYTES,
    process_col::LOAD_AVG_1M,
    process_col::CPU_COUNT,
    process_col::ENERGY_J,
    process_col::POWER_W,
    process_col::MEM_PRESSURE,
    process_col::MEM_STALL_PCT,
    process_col::SWAP_USED_BYTES,
    process_col::THERMAL_PRESSURE,
    process_col::TEMP_C,
];

/// One reading of `power.csv` (texts empty and numbers `None` where the cell is).
#[derive(Debug, Clone, PartialEq)]
pub struct PowerRow {
    pub elapsed_s: Option<f64>,
    pub cycle: String,
    pub agent: String,
    pub source: String,
    pub device: String,
    pub metric: String,
    pub unit: String,
    pub value: Option<f64>,
}

/// One reading of `processes.csv` (texts empty and numbers `None` where the cell is).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRow {
    pub elapsed_s: Option<f64>,
    pub cycle: String,
    pub agent: String,
    pub role: String,
    pub pid: String,
    pub name: String,
    pub cpu_pct: Option<f64>,
    pub rss_bytes: Option<f64>,
    pub vsz_bytes: Option<f64>,
    pub threads: Option<f64>,
    pub open_fds: Option<f64>,
    pub mem_total_bytes: Option<f64>,
    pub load_avg_1m: Option<f64>,
    pub cpu_count: Option<f64>,
    pub energy_j: Option<f64>,
    pub power_w: Option<f64>,
    pub mem_pressure: Option<f64>,
    pub mem_stall_pct: Option<f64>,
    pub swap_used_bytes: Option<f64>,
    pub thermal_pressure: Option<f64>,
    pub temp_c: Option<f64>,
}

/// Reads `<run>/power.csv`; `Ok(None)` when the run has none (not monitored, or no power source).
pub fn read_power(run: &Path) -> Result<Option<Vec<PowerRow>>, ReadError> {
    read_readings(&run.join(POWER_CSV))
}

/// Reads `<run>/server_metrics.csv` (power.csv's columns); `Ok(None)` when the run has none
/// (the server has no metrics endpoint, or the run predates them).
pub fn read_server_metrics(run: &Path) -> Result<Option<Vec<PowerRow>>, ReadError> {
    read_readings(&run.join(super::SERVER_METRICS_CSV))
}

fn read_readings(path: &Path) -> Result<Option<Vec<PowerRow>>, ReadError> {
    use power_col as c;
    if !path.is_file() {
        return Ok(None);
    }
    let table = CsvTable::read(path)?;
    Ok(Some(
        table
            .rows()
            .map(|r| PowerRow {
                elapsed_s: r.num(c::ELAPSED_S),
                cycle: r.text(c::CYCLE),
                agent: r.text(c::AGENT),
                source: r.text(c::SOURCE),
                device: r.text(c::DEVICE),
                metric: r.text(c::METRIC),
                unit: r.text(c::UNIT),
                value: r.num(c::VALUE),
            })
            .collect(),
    ))
}

/// Reads `<run>/processes.csv`; `Ok(None)` when the run has none (not monitored).
pub fn read_processes(run: &Path) -> Result<Option<Vec<ProcessRow>>, ReadError> {
    use process_col as c;
    let path = run.join(PROCESSES_CSV);
    if !path.is_file() {
        return Ok(None);
    }
    let table = CsvTable::read(&path)?;
    Ok(Some(
        table
            .rows()
            .map(|r| ProcessRow {
                elapsed_s: r.num(c::ELAPSED_S),
                cycle: r.text(c::CYCLE),
                agent: r.text(c::AGENT),
                role: r.text(c::ROLE),
                pid: r.text(c::PID),
                name: r.text(c::NAME),
                cpu_pct: r.num(c::CPU_PCT),
                rss_bytes: r.num(c::RSS_BYTES),
                vsz_bytes: r.num(c::VSZ_BYTES),
                threads: r.num(c::THREADS),
                open_fds: r.num(c::OPEN_FDS),
                mem_total_bytes: r.num(c::MEM_TOTAL_BYTES),
                load_avg_1m: r.num(c::LOAD_AVG_1M),
                cpu_count: r.num(c::CPU_COUNT),
                energy_j: r.num(c::ENERGY_J),
                power_w: r.num(c::POWER_W),
                mem_pressure: r.num(c::MEM_PRESSURE),
                mem_stall_pct: r.num(c::MEM_STALL_PCT),
                swap_used_bytes: r.num(c::SWAP_USED_BYTES),
                thermal_pressure: r.num(c::THERMAL_PRESSURE),
                temp_c: r.num(c::TEMP_C),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_files_read_by_column_and_older_ones_too() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_power(dir.path()).unwrap(), None);
        std::fs::write(
            dir.path().join(POWER_CSV),
            format!(
                "{}\n2.000,8,a1,nvml,gpu0,power_w,W,100\n",
                POWER_HEADER.join(",")
            ),
        )
        .unwrap();
        let p = read_power(dir.path()).unwrap().unwrap();
        assert_eq!(
            (p[0].elapsed_s, p[0].cycle.as_str(), p[0].value),
            (Some(2.0), "8", Some(100.0))
        );
        // Before cpu_count was recorded.
        std::fs::write(
            dir.path().join(PROCESSES_CSV),
            format!(
                "{}\n1.0,,a1,machine,,,50.0,4096,,,,8192,0.5\n",
                PROCESSES_HEADER[..13].join(",")
            ),
        )
        .unwrap();
        let m = &read_processes(dir.path()).unwrap().unwrap()[0];
        assert_eq!(
            (m.role.as_str(), m.cpu_pct, m.cpu_count),
            ("machine", Some(50.0), None)
        );
        assert_eq!((m.cycle.as_str(), m.mem_total_bytes), ("", Some(8192.0)));
    }
}
