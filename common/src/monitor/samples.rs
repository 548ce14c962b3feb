//! What the monitor sources read: power and accelerator readings, server-process and machine
//! readings, one tick's batch of them, and whether each source works here.

use super::MachinePressure;
use serde::{Deserialize, Serialize};

/// One power/accelerator reading: `value` of `metric` on `device` of `source` at `t_ns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerReading {
    /// Agent monotonic clock (ns since the agent's epoch) when the reading was taken.
    pub t_ns: u64,
    /// `powermetrics`, `nvml`, `amdgpu`, `rapl`.
    pub source: String,
    /// `gpu0`, `package-0`, `dram-0`, `soc` ...
    pub device: String,
    /// One of the `metric` constants, e.g. [`metric::POWER_W`](super::metric::POWER_W).
    pub metric: String,
    pub value: f64,
}

/// What a process is to the server being measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessRole {
    /// A watched process with no watched ancestor (e.g. `ollama serve`).
    Server,
    /// A process started by a watched server (Ollama's model runner).
    Runner,
    /// The whole machine.
    Machine,
}

impl ProcessRole {
    /// The CSV spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Runner => "runner",
            Self::Machine => "machine",
        }
    }
}

/// One process (or the machine) at one instant. Figures that could not be read are `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessReading {
    pub t_ns: u64,
    pub role: ProcessRole,
    /// None for the machine.
    pub pid: Option<u32>,
    pub name: String,
    /// Per core for a process (200 = two cores busy); all cores 0..100 for the machine.
    pub cpu_pct: Option<f64>,
    /// Resident memory; for the machine, memory in use.
    pub rss_bytes: Option<u64>,
    pub vsz_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
    /// Machine rows only.
    pub mem_total_bytes: Option<u64>,
    /// Machine rows only.
    pub load_avg_1m: Option<f64>,
    /// Machine rows only: logical CPUs (a process's cpu_pct goes up to 100 x this).
    #[serde(default)]
    pub cpu_count: Option<u32>,
    /// Energy the process used since the sampler first saw it, J (a cumulative counter; macOS
    /// `ri_energy_nj`, readable for the same user without root).
    #[serde(default)]
    pub energy_j: Option<f64>,
    /// The process's power over the interval since its previous reading, W.
    #[serde(default)]
    pub power_w: Option<f64>,
    /// Machine rows only: thermal and memory pressure, swap, temperature.
    #[serde(default)]
    pub pressure: MachinePressure,
}

/// What one monitor tick produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MonitorBatch {
    pub power: Vec<PowerReading>,
    pub processes: Vec<ProcessReading>,
    /// The server's own metrics, scraped from its Prometheus endpoint: `source` is
    /// `prometheus`, `device` is `server`, `metric` the metric's name (`llamacpp:requests_deferred`).
    pub server_metrics: Vec<PowerReading>,
    /// Said once each: a figure or source that cannot be read, and why.
    pub notes: Vec<String>,
}

/// Whether a monitor source works on this machine, and if not why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// `process`, `machine`, `powermetrics`, `nvml`, `amdgpu`, `rapl`.
    pub source: String,
    pub available: bool,
    /// Devices found (e.g. "gpu0: NVIDIA H100 80GB HBM3"), or why the source is unavailable.
    pub detail: String,
}
