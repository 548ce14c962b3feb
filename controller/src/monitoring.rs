//! The controller's side of monitoring: writes `power.csv` and `processes.csv` as samples arrive,
//! keeps the series a cycle's energy and server figures are computed from, and the live figures.

use crate::output::OutDirError;
use serde::Serialize;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use tokengun_common::csv_out::OutputError;
use tokengun_common::monitor::{
    CycleEnergy, PowerSeries, ServerUsage, ServerUsageAcc, WindowEnergy, metric,
};
use tokengun_common::{MonitorBatch, ProcessRole, SourceStatus};

pub use crate::tui::MonitorSnapshot;

/// `power.csv` columns (one row per reading, long format).
pub const POWER_HEADER: [&str; 8] = [
    "elapsed_s",
    "cycle",
    "agent",
    "source",
    "device",
    "metric",
    "unit",
    "value",
];

/// `processes.csv` columns.
pub const PROCESSES_HEADER: [&str; 13] = [
    "elapsed_s",
    "cycle",
    "agent",
    "role",
    "pid",
    "name",
    "cpu_pct",
    "rss_bytes",
    "vsz_bytes",
    "threads",
    "open_fds",
    "mem_total_bytes",
    "load_avg_1m",
];

/// What monitoring found at the start, for `run.json`.
#[derive(Debug, Clone, Serialize)]
pub struct MonitorInfo {
    pub sources: Vec<SourceStatus>,
    pub watching: Vec<String>,
    pub process_interval_ms: u64,
    pub power_interval_ms: u64,
    pub baseline_s: Option<f64>,
    /// Idle power before the sweep (W), when it was measured.
    pub baseline_power_w: Option<f64>,
}

struct Csv {
    path: PathBuf,
    w: csv::Writer<BufWriter<File>>,
}

impl Csv {
    fn create(path: PathBuf, header: &[&str]) -> Result<Self, OutputError> {
        let io = |source| OutputError::Io {
            path: path.clone(),
            source,
        };
        let f = File::create(&path).map_err(io)?;
        let mut w = csv::Writer::from_writer(BufWriter::new(f));
        w.write_record(header).map_err(|e| OutputError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        Ok(Self { path, w })
    }

    fn row<I, T>(&mut self, cells: I) -> Result<(), OutputError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.w.write_record(cells).map_err(|e| OutputError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        self.w.flush().map_err(|source| OutputError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Receives one agent's monitor batches for a run.
pub struct MonitorSink {
    agent: String,
    /// The run's origin on the agent's clock: `elapsed_s` counts from it.
    origin_mono_ns: u64,
    label: String,
    power_csv: Option<Csv>,
    processes_csv: Csv,
    pub power: PowerSeries,
    server: ServerUsageAcc,
    /// Notes not yet shown.
    pending_notes: Vec<String>,
    snapshot: MonitorSnapshot,
    /// Newest power reading per (source, device).
    latest_power: std::collections::BTreeMap<(String, String), f64>,
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl MonitorSink {
    /// Creates `processes.csv` (and `power.csv` when `power` is true) in `root`.
    pub fn create(
        root: &Path,
        agent: &str,
        origin_mono_ns: u64,
        power: bool,
    ) -> Result<Self, OutDirError> {
        Ok(Self {
            agent: agent.to_string(),
            origin_mono_ns,
            label: String::new(),
            power_csv: if power {
                Some(Csv::create(root.join("power.csv"), &POWER_HEADER)?)
            } else {
                None
            },
            processes_csv: Csv::create(root.join("processes.csv"), &PROCESSES_HEADER)?,
            power: PowerSeries::default(),
            server: ServerUsageAcc::default(),
            pending_notes: Vec::new(),
            snapshot: MonitorSnapshot::default(),
            latest_power: Default::default(),
        })
    }

    /// The `cycle` column of rows from now on (`baseline`, a level label, or empty).
    pub fn set_label(&mut self, label: &str) {
        self.label = label.to_string();
    }

    fn elapsed(&self, t_ns: u64) -> String {
        format!("{:.3}", (t_ns - self.origin_mono_ns) as f64 / 1e9)
    }

    /// Writes and keeps a batch; readings from before the run (an earlier session's) are dropped.
    pub fn take(&mut self, b: MonitorBatch) -> Result<(), OutDirError> {
        self.pending_notes.extend(b.notes);
        for r in b.power.iter().filter(|r| r.t_ns >= self.origin_mono_ns) {
            if let Some(csv) = self.power_csv.as_mut() {
                let row = [
                    format!("{:.3}", (r.t_ns - self.origin_mono_ns) as f64 / 1e9),
                    self.label.clone(),
                    self.agent.clone(),
                    r.source.clone(),
                    r.device.clone(),
                    r.metric.clone(),
                    metric::unit(&r.metric).to_string(),
                    format!("{}", r.value),
                ];
                csv.row(row)?;
            }
            self.power.add(r);
            if r.metric == metric::POWER_W {
                self.latest_power
                    .insert((r.source.clone(), r.device.clone()), r.value);
                self.snapshot.power_w = Some(self.latest_power.values().sum());
            } else if r.metric == metric::BUSY_PCT {
                self.snapshot.gpu_busy_pct = Some(r.value);
            } else if r.metric == metric::FREQ_MHZ {
                self.snapshot.gpu_freq_mhz = Some(r.value);
            }
        }
        let mut tick: Option<(u64, f64, u64)> = None;
        for p in b.processes.iter().filter(|p| p.t_ns >= self.origin_mono_ns) {
            let row = [
                self.elapsed(p.t_ns),
                self.label.clone(),
                self.agent.clone(),
                p.role.as_str().to_string(),
                opt(p.pid),
                p.name.clone(),
                p.cpu_pct.map(|c| format!("{c:.1}")).unwrap_or_default(),
                opt(p.rss_bytes),
                opt(p.vsz_bytes),
                opt(p.threads),
                opt(p.open_fds),
                opt(p.mem_total_bytes),
                p.load_avg_1m.map(|l| format!("{l:.2}")).unwrap_or_default(),
            ];
            self.processes_csv.row(row)?;
            self.server.add(p);
            if p.role != ProcessRole::Machine {
                let t = tick.get_or_insert((p.t_ns, 0.0, 0));
                t.1 += p.cpu_pct.unwrap_or(0.0);
                t.2 += p.rss_bytes.unwrap_or(0);
            }
        }
        if let Some((_, cpu, rss)) = tick {
            self.snapshot.server_cpu_pct = Some(cpu);
            self.snapshot.server_rss_bytes = Some(rss);
        }
        Ok(())
    }

    /// Notes the agent sent since the last call (sources unavailable, processes appearing).
    pub fn drain_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.pending_notes)
    }

    /// The newest figures.
    pub fn snapshot(&self) -> &MonitorSnapshot {
        &self.snapshot
    }

    /// Whether power readings up to `t_ns` have arrived.
    pub fn power_reached(&self, t_ns: u64) -> bool {
        self.power.latest_ns().is_some_and(|l| l >= t_ns)
    }

    /// Energy over a window of the agent's clock.
    pub fn energy(&self, from_ns: u64, to_ns: u64) -> Option<WindowEnergy> {
        self.power.window(from_ns, to_ns)
    }

    /// A cycle's monitor figures over `[from_ns, to_ns]`; older readings are then forgotten.
    pub fn cycle_figures(
        &mut self,
        from_ns: u64,
        to_ns: u64,
        output_tokens: u64,
        baseline_power_w: Option<f64>,
    ) -> CycleFigures {
        let energy = self
            .power
            .window(from_ns, to_ns)
            .map(|w| CycleEnergy::new(w, output_tokens, baseline_power_w));
        let figures = CycleFigures {
            energy,
            server: self.server.summary(from_ns, to_ns),
            gpu_busy_pct_mean: self.power.mean_of(metric::BUSY_PCT, from_ns, to_ns),
            gpu_freq_mhz_mean: self.power.mean_of(metric::FREQ_MHZ, from_ns, to_ns),
        };
        self.power.forget_before(to_ns);
        self.server.forget_before(to_ns);
        figures
    }

    /// Pushes buffered rows to disk.
    pub fn flush(&mut self) -> Result<(), OutDirError> {
        if let Some(p) = self.power_csv.as_mut() {
            p.flush()?;
        }
        self.processes_csv.flush()?;
        Ok(())
    }
}

/// What monitoring adds to a cycle's summary.
#[derive(Debug, Clone, Default)]
pub struct CycleFigures {
    pub energy: Option<CycleEnergy>,
    pub server: Option<ServerUsage>,
    pub gpu_busy_pct_mean: Option<f64>,
    pub gpu_freq_mhz_mean: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokengun_common::{PowerReading, ProcessReading};

    #[test]
    fn writes_rows_and_computes_cycle_figures() {
        let dir = tempfile::tempdir().unwrap();
        let s = 1_000_000_000u64;
        let mut m = MonitorSink::create(dir.path(), "a1", 10 * s, true).unwrap();
        let power = |t, metric: &str, value| PowerReading {
            t_ns: t,
            source: "nvml".into(),
            device: "gpu0".into(),
            metric: metric.into(),
            value,
        };
        let proc_ = |t, cpu| ProcessReading {
            t_ns: t,
            role: ProcessRole::Server,
            pid: Some(9),
            name: "ollama".into(),
            cpu_pct: cpu,
            rss_bytes: Some(1000),
            vsz_bytes: None,
            threads: Some(3),
            open_fds: None,
            mem_total_bytes: None,
            load_avg_1m: None,
        };
        // A reading from before the run is dropped.
        m.take(MonitorBatch {
            power: vec![power(s, "power_w", 1.0)],
            ..Default::default()
        })
        .unwrap();
        m.set_label("8");
        for i in 0..=10u64 {
            m.take(MonitorBatch {
                power: vec![
                    power((10 + i) * s, "power_w", 100.0),
                    power((10 + i) * s, "energy_j", 100.0 * i as f64),
                ],
                processes: vec![proc_((10 + i) * s, Some(150.0))],
                notes: if i == 0 {
                    vec!["rapl unavailable".into()]
                } else {
                    vec![]
                },
            })
            .unwrap();
        }
        assert_eq!(m.drain_notes(), vec!["rapl unavailable"]);
        assert_eq!(m.snapshot().power_w, Some(100.0));
        assert_eq!(m.snapshot().server_cpu_pct, Some(150.0));
        let f = m.cycle_figures(12 * s, 17 * s, 1000, Some(40.0));
        let e = f.energy.unwrap();
        assert!((e.energy_j - 500.0).abs() < 1e-9);
        assert_eq!(e.joules_per_token, Some(0.5));
        assert!((e.net_energy_j.unwrap() - 300.0).abs() < 1e-9);
        assert_eq!(f.server.unwrap().cpu_pct_peak, Some(150.0));
        m.flush().unwrap();
        let power_csv = std::fs::read_to_string(dir.path().join("power.csv")).unwrap();
        assert!(power_csv.starts_with("elapsed_s,cycle,agent,source,device,metric,unit,value\n"));
        assert!(
            power_csv.contains("\n2.000,8,a1,nvml,gpu0,power_w,W,100\n"),
            "{power_csv}"
        );
        assert_eq!(power_csv.lines().count(), 1 + 22);
        let procs = std::fs::read_to_string(dir.path().join("processes.csv")).unwrap();
        assert!(
            procs.contains("\n0.000,8,a1,server,9,ollama,150.0,1000,,3,,,\n"),
            "{procs}"
        );
    }
}
