//! The controller's side of monitoring: writes `power.csv`, `processes.csv` and
//! `server_metrics.csv` as samples arrive,
//! keeps the series a cycle's energy and server figures are computed from, and the live figures.

use crate::sinks::run_folder::OutDirError;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use tokengun_common::monitor::{
    CycleEnergy, PowerSeries, ServerUsage, ServerUsageAcc, WindowEnergy, metric,
};
use tokengun_common::run_dir::{OutputError, POWER_CSV, PROCESSES_CSV, SERVER_METRICS_CSV};
use tokengun_common::{MonitorBatch, ProcessRole};

pub use crate::tui::MonitorSnapshot;

pub use tokengun_common::run_dir::{MonitorInfo, POWER_HEADER, PROCESSES_HEADER};

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

/// One agent's series.
struct AgentMon {
    label: String,
    /// The run's origin on this agent's clock: `elapsed_s` counts from it.
    origin_mono_ns: u64,
    power: PowerSeries,
    server: ServerUsageAcc,
    /// Newest power reading per (source, device).
    latest_power: std::collections::BTreeMap<(String, String), f64>,
    /// Newest busy % / clock per (metric, source, device).
    latest_gpu: std::collections::BTreeMap<(String, String, String), f64>,
    snapshot: MonitorSnapshot,
    /// The running cycle's window start on this agent's clock, once its CycleStarted came: its
    /// older readings are folded as they age (see [`FOLD_KEEP_NS`]).
    window_from: Option<u64>,
    /// When readings were last folded (agent clock).
    folded_at: u64,
}

/// Readings younger than this stay as they are; older ones of the running cycle are folded into
/// its window figures, so an hours-long level holds ten minutes of readings (a CycleDone arriving
/// later than this after the agent's last reading would find its window's end folded).
pub const FOLD_KEEP_NS: u64 = 600 * 1_000_000_000;
/// Readings are folded at most this often.
const FOLD_EVERY_NS: u64 = 60 * 1_000_000_000;

/// Receives every agent's monitor batches for a run, into one `power.csv` and `processes.csv`
/// (their `agent` column says whose).
pub struct MonitorSink {
    root: PathBuf,
    label: String,
    power_csv: Option<Csv>,
    processes_csv: Option<Csv>,
    /// Created with the first server metric reading.
    server_metrics_csv: Option<Csv>,
    agents: Vec<AgentMon>,
    /// Notes not yet shown.
    pending_notes: Vec<String>,
}

/// A power.csv / server_metrics.csv row (`POWER_HEADER`) of agent `a`'s reading `r`, taken
/// while cycle `label` ran.
fn reading_row(r: &tokengun_common::PowerReading, a: &AgentMon, label: &str) -> [String; 8] {
    [
        format!("{:.3}", (r.t_ns - a.origin_mono_ns) as f64 / 1e9),
        label.to_string(),
        a.label.clone(),
        r.source.clone(),
        r.device.clone(),
        r.metric.clone(),
        metric::unit(&r.metric).to_string(),
        format!("{}", r.value),
    ]
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

impl MonitorSink {
    /// A sink writing into `root`; files are created when the first agent is added.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            label: String::new(),
            power_csv: None,
            processes_csv: None,
            server_metrics_csv: None,
            agents: Vec::new(),
            pending_notes: Vec::new(),
        }
    }

    /// Adds an agent whose clock read `origin_mono_ns` when the run's monitoring began; returns
    /// its index for [`MonitorSink::take`]. `power`: it has a power source (power.csv is made).
    pub fn add_agent(
        &mut self,
        label: &str,
        origin_mono_ns: u64,
        power: bool,
    ) -> Result<usize, OutDirError> {
        if self.processes_csv.is_none() {
            self.processes_csv = Some(Csv::create(
                self.root.join(PROCESSES_CSV),
                &PROCESSES_HEADER,
            )?);
        }
        if power && self.power_csv.is_none() {
            self.power_csv = Some(Csv::create(self.root.join(POWER_CSV), &POWER_HEADER)?);
        }
        self.agents.push(AgentMon {
            label: label.to_string(),
            origin_mono_ns,
            power: PowerSeries::default(),
            window_from: None,
            folded_at: 0,
            server: ServerUsageAcc::default(),
            latest_power: Default::default(),
            latest_gpu: Default::default(),
            snapshot: MonitorSnapshot::default(),
        });
        Ok(self.agents.len() - 1)
    }

    /// Whether any agent reads a power source.
    pub fn has_power(&self) -> bool {
        self.power_csv.is_some()
    }

    /// The `cycle` column of rows from now on (`baseline`, a level label, or empty).
    pub fn set_label(&mut self, label: &str) {
        self.label = label.to_string();
    }

    /// Appends agent `i`'s server metric readings to `server_metrics.csv` (made with the first).
    fn write_server_metrics(
        &mut self,
        i: usize,
        readings: &[tokengun_common::PowerReading],
    ) -> Result<(), OutDirError> {
        let a = &self.agents[i];
        for r in readings.iter().filter(|r| r.t_ns >= a.origin_mono_ns) {
            if self.server_metrics_csv.is_none() {
                self.server_metrics_csv = Some(Csv::create(
                    self.root.join(SERVER_METRICS_CSV),
                    &POWER_HEADER,
                )?);
            }
            if let Some(csv) = self.server_metrics_csv.as_mut() {
                csv.row(reading_row(r, a, &self.label))?;
            }
        }
        Ok(())
    }

    /// Writes and keeps agent `i`'s batch; readings from before the run (an earlier session's)
    /// are dropped.
    pub fn take(&mut self, i: usize, b: MonitorBatch) -> Result<(), OutDirError> {
        if i >= self.agents.len() {
            return Ok(());
        }
        self.write_server_metrics(i, &b.server_metrics)?;
        let many = self.agents.len() > 1;
        let a = &mut self.agents[i];
        let label = &self.label;
        self.pending_notes.extend(
            b.notes
                .into_iter()
                .map(|n| if many { format!("{}: {n}", a.label) } else { n }),
        );
        let elapsed = |t: u64| format!("{:.3}", (t - a.origin_mono_ns) as f64 / 1e9);
        for r in b.power.iter().filter(|r| r.t_ns >= a.origin_mono_ns) {
            if let Some(csv) = self.power_csv.as_mut() {
                csv.row(reading_row(r, a, label))?;
            }
            a.power.add(r);
            if r.metric == metric::POWER_W {
                a.latest_power
                    .insert((r.source.clone(), r.device.clone()), r.value);
                a.snapshot.power_w = Some(a.latest_power.values().sum());
            } else if r.metric == metric::BUSY_PCT || r.metric == metric::FREQ_MHZ {
                // The mean over devices of their newest reading (several GPUs).
                a.latest_gpu.insert(
                    (r.metric.clone(), r.source.clone(), r.device.clone()),
                    r.value,
                );
                let mean = |m: &str| {
                    let v: Vec<f64> = a
                        .latest_gpu
                        .iter()
                        .filter(|((k, _, _), _)| k == m)
                        .map(|(_, v)| *v)
                        .collect();
                    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
                };
                a.snapshot.gpu_busy_pct = mean(metric::BUSY_PCT);
                a.snapshot.gpu_freq_mhz = mean(metric::FREQ_MHZ);
            }
        }
        let mut tick: Option<(f64, u64)> = None;
        for p in b.processes.iter().filter(|p| p.t_ns >= a.origin_mono_ns) {
            if let Some(csv) = self.processes_csv.as_mut() {
                csv.row([
                    elapsed(p.t_ns),
                    label.clone(),
                    a.label.clone(),
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
                    opt(p.cpu_count),
                    p.energy_j.map(|j| format!("{j:.3}")).unwrap_or_default(),
                    p.power_w.map(|w| format!("{w:.3}")).unwrap_or_default(),
                    opt(p.pressure.mem_pressure),
                    p.pressure
                        .mem_stall_pct
                        .map(|v| format!("{v:.2}"))
                        .unwrap_or_default(),
                    opt(p.pressure.swap_used_bytes),
                    opt(p.pressure.thermal_pressure),
                    p.pressure
                        .temp_c
                        .map(|v| format!("{v:.1}"))
                        .unwrap_or_default(),
                ])?;
            }
            a.server.add(p);
            if p.role != ProcessRole::Machine {
                let t = tick.get_or_insert((0.0, 0));
                t.0 += p.cpu_pct.unwrap_or(0.0);
                t.1 += p.rss_bytes.unwrap_or(0);
            }
        }
        if let Some((cpu, rss)) = tick {
            a.snapshot.server_cpu_pct = Some(cpu);
            a.snapshot.server_rss_bytes = Some(rss);
        }
        let newest = b
            .power
            .iter()
            .map(|r| r.t_ns)
            .chain(b.processes.iter().map(|p| p.t_ns))
            .max();
        if let (Some(from), Some(now)) = (a.window_from, newest)
            && now >= a.folded_at + FOLD_EVERY_NS
        {
            a.folded_at = now;
            let before = now.saturating_sub(FOLD_KEEP_NS);
            a.power.fold(from, before);
            a.server.fold(from, before);
        }
        Ok(())
    }

    /// Agent `i`'s running cycle began at `from_ns` on its clock: its readings may now be folded
    /// into that window's figures as they age ([`MonitorSink::cycle_figures`] ends the window).
    pub fn begin_window(&mut self, i: usize, from_ns: u64) {
        if let Some(a) = self.agents.get_mut(i) {
            a.window_from = Some(from_ns);
        }
    }

    /// Notes the agents sent since the last call (sources unavailable, processes appearing).
    pub fn drain_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.pending_notes)
    }

    /// The newest figures, summed over agents (GPU busy and clock averaged).
    pub fn snapshot(&self) -> MonitorSnapshot {
        let sum = |f: &dyn Fn(&MonitorSnapshot) -> Option<f64>| {
            let v: Vec<f64> = self.agents.iter().filter_map(|a| f(&a.snapshot)).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>())
        };
        let mean = |f: &dyn Fn(&MonitorSnapshot) -> Option<f64>| {
            let v: Vec<f64> = self.agents.iter().filter_map(|a| f(&a.snapshot)).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        MonitorSnapshot {
            power_w: sum(&|s| s.power_w),
            gpu_busy_pct: mean(&|s| s.gpu_busy_pct),
            gpu_freq_mhz: mean(&|s| s.gpu_freq_mhz),
            server_cpu_pct: sum(&|s| s.server_cpu_pct),
            server_rss_bytes: sum(&|s| s.server_rss_bytes.map(|b| b as f64)).map(|b| b as u64),
        }
    }

    /// Whether agent `i`'s power readings up to `t_ns` (its clock) have arrived.
    pub fn power_reached(&self, i: usize, t_ns: u64) -> bool {
        self.agents
            .get(i)
            .is_none_or(|a| a.power.latest_ns().is_some_and(|l| l >= t_ns))
    }

    /// Energy of agent `i` over a window of its clock.
    pub fn energy(&self, i: usize, from_ns: u64, to_ns: u64) -> Option<WindowEnergy> {
        self.agents.get(i)?.power.window(from_ns, to_ns)
    }

    /// A cycle's monitor figures: each agent `(i, from_ns, to_ns)` over its own window, energy and
    /// server figures summed over agents; older readings are then forgotten.
    pub fn cycle_figures(
        &mut self,
        windows: &[(usize, u64, u64)],
        output_tokens: u64,
        baseline_power_w: Option<f64>,
    ) -> CycleFigures {
        let mut energy: Option<WindowEnergy> = None;
        let mut server: Option<ServerUsage> = None;
        let (mut busy, mut freq) = (Vec::new(), Vec::new());
        for &(i, from, to) in windows {
            let Some(a) = self.agents.get_mut(i) else {
                continue;
            };
            if let Some(w) = a.power.window(from, to) {
                energy = Some(match energy.take() {
                    None => w,
                    Some(mut acc) => {
                        acc.energy_j += w.energy_j;
                        acc.duration_s = acc.duration_s.max(w.duration_s);
                        acc.mean_power_w += w.mean_power_w;
                        acc.peak_power_w = match (acc.peak_power_w, w.peak_power_w) {
                            (Some(x), Some(y)) => Some(x + y),
                            (x, y) => x.or(y),
                        };
                        if acc.method != w.method {
                            acc.method = tokengun_common::monitor::EnergyMethod::Mixed;
                        }
                        acc.devices.extend(w.devices);
                        acc
                    }
                });
            }
            if let Some(u) = a.server.summary(from, to) {
                server = Some(match server.take() {
                    None => u,
                    Some(acc) => merge_usage(acc, u),
                });
            }
            busy.extend(a.power.mean_of(metric::BUSY_PCT, from, to));
            freq.extend(a.power.mean_of(metric::FREQ_MHZ, from, to));
            a.power.forget_before(to);
            a.server.forget_before(to);
            a.window_from = None;
        }
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        CycleFigures {
            energy: energy.map(|w| CycleEnergy::new(w, output_tokens, baseline_power_w)),
            server,
            gpu_busy_pct_mean: mean(&busy),
            gpu_freq_mhz_mean: mean(&freq),
        }
    }

    /// Pushes buffered rows to disk.
    pub fn flush(&mut self) -> Result<(), OutDirError> {
        if let Some(p) = self.power_csv.as_mut() {
            p.flush()?;
        }
        if let Some(p) = self.processes_csv.as_mut() {
            p.flush()?;
        }
        if let Some(p) = self.server_metrics_csv.as_mut() {
            p.flush()?;
        }
        Ok(())
    }
}

/// Two hosts' server figures as one: CPU and memory add up.
fn merge_usage(a: ServerUsage, b: ServerUsage) -> ServerUsage {
    let add_f = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => Some(x + y),
        (x, y) => x.or(y),
    };
    let add_u = |x: Option<u64>, y: Option<u64>| match (x, y) {
        (Some(x), Some(y)) => Some(x + y),
        (x, y) => x.or(y),
    };
    ServerUsage {
        cpu_pct_mean: add_f(a.cpu_pct_mean, b.cpu_pct_mean),
        cpu_pct_peak: add_f(a.cpu_pct_peak, b.cpu_pct_peak),
        rss_peak_bytes: add_u(a.rss_peak_bytes, b.rss_peak_bytes),
        threads_peak: add_u(a.threads_peak, b.threads_peak),
        open_fds_peak: add_u(a.open_fds_peak, b.open_fds_peak),
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
        let mut m = MonitorSink::new(dir.path());
        let a = m.add_agent("a1", 10 * s, true).unwrap();
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
            cpu_count: None,
            energy_j: None,
            power_w: None,
            pressure: Default::default(),
        };
        // A reading from before the run is dropped.
        m.take(
            a,
            MonitorBatch {
                power: vec![power(s, "power_w", 1.0)],
                ..Default::default()
            },
        )
        .unwrap();
        m.set_label("8");
        for i in 0..=10u64 {
            m.take(
                a,
                MonitorBatch {
                    server_metrics: Vec::new(),
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
                },
            )
            .unwrap();
        }
        assert_eq!(m.drain_notes(), vec!["rapl unavailable"]);
        assert_eq!(m.snapshot().power_w, Some(100.0));
        assert_eq!(m.snapshot().server_cpu_pct, Some(150.0));
        let f = m.cycle_figures(&[(a, 12 * s, 17 * s)], 1000, Some(40.0));
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
            // The 7 columns after cpu_count (energy, pressure) are empty: not read here.
            procs.contains("\n0.000,8,a1,server,9,ollama,150.0,1000,,3,,,,,,,,,,,\n"),
            "{procs}"
        );
    }

    #[test]
    fn a_level_of_hours_keeps_minutes_of_readings_and_the_same_figures() {
        // Two sinks see the same three hours at 5 power readings and 1 process reading a
        // second; one is told the cycle's window began (and so folds), the other is not.
        let s = 1_000_000_000u64;
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut folding = MonitorSink::new(d1.path());
        let mut whole = MonitorSink::new(d2.path());
        let a = folding.add_agent("a1", s, true).unwrap();
        let b = whole.add_agent("a1", s, true).unwrap();
        let from = 2 * s + s / 2;
        folding.begin_window(a, from);
        let to = 3 * 3_600 * s;
        let mut t = 2 * s;
        let mut i = 0u64;
        while t <= to + 2 * s {
            let w = 200.0 + ((i * 7919) % 300) as f64;
            let batch = MonitorBatch {
                server_metrics: Vec::new(),
                power: vec![
                    PowerReading {
                        t_ns: t,
                        source: "nvml".into(),
                        device: "gpu0".into(),
                        metric: "power_w".into(),
                        value: w,
                    },
                    PowerReading {
                        t_ns: t,
                        source: "nvml".into(),
                        device: "gpu0".into(),
                        metric: "busy_pct".into(),
                        value: (i % 101) as f64,
                    },
                ],
                processes: if i % 5 == 0 {
                    vec![ProcessReading {
                        t_ns: t,
                        role: ProcessRole::Server,
                        pid: Some(9),
                        name: "ollama".into(),
                        cpu_pct: Some(((i * 31) % 800) as f64),
                        rss_bytes: Some(1_000 + (i * 13) % 5_000),
                        vsz_bytes: None,
                        threads: Some(3 + i % 40),
                        open_fds: Some(10 + i % 90),
                        mem_total_bytes: None,
                        load_avg_1m: None,
                        cpu_count: None,
                        energy_j: None,
                        power_w: None,
                        pressure: Default::default(),
                    }]
                } else {
                    vec![]
                },
                notes: vec![],
            };
            folding.take(a, batch.clone()).unwrap();
            whole.take(b, batch).unwrap();
            t += s / 5;
            i += 1;
        }
        let held = folding.agents[a]
            .power
            .get("nvml", "gpu0", "power_w")
            .unwrap()
            .points
            .len();
        assert!(
            held < 12 * 60 * 5,
            "{held} power readings held after three hours"
        );
        let f = folding.cycle_figures(&[(a, from, to)], 1_000_000, None);
        let g = whole.cycle_figures(&[(b, from, to)], 1_000_000, None);
        let (e, h) = (f.energy.unwrap(), g.energy.unwrap());
        assert!(
            (e.energy_j - h.energy_j).abs() < 1e-6 * h.energy_j,
            "{e:?} vs {h:?}"
        );
        assert_eq!(e.peak_power_w, h.peak_power_w);
        assert_eq!(f.server, g.server);
        let (x, y) = (f.gpu_busy_pct_mean.unwrap(), g.gpu_busy_pct_mean.unwrap());
        assert!((x - y).abs() < 1e-9, "{x} vs {y}");
    }
}
