//! `processes.csv` (optional): each process's (and the machine's) CPU and memory over time, and
//! per level the machine's CPU and memory and, when cycles.csv lacks them, the server's.

use super::{LevelRow, RunData, at_agent, label_key, merge_spans, series, widen_span};
use crate::report::ReportError;
use std::collections::BTreeMap;
use std::path::Path;
use tokengun_common::ProcessRole;
use tokengun_common::monitor::ServerUsage;
use tokengun_common::run_dir::{self, PROCESSES_CSV, ProcessRow};

/// processes.csv's readings, gathered; per-level maps are keyed by [`label_key`].
#[derive(Default)]
struct Readings {
    /// Process (or machine) -> (elapsed_s, CPU %).
    cpu: BTreeMap<String, Vec<(f64, f64)>>,
    /// Process (or machine) -> (elapsed_s, bytes).
    rss: BTreeMap<String, Vec<(f64, f64)>>,
    /// (level, process) -> (sum, count, peak) of its CPU %.
    server_cpu: BTreeMap<(String, String), (f64, u32, f64)>,
    /// (level, process) -> its peak resident memory.
    server_rss: BTreeMap<(String, String), f64>,
    /// Level -> (sum, count) of the machine's CPU %.
    machine_cpu: BTreeMap<String, (f64, u32)>,
    /// Level -> the machine's logical CPUs.
    machine_cores: BTreeMap<String, f64>,
    /// Level -> the machine's peak memory used over its total.
    machine_mem: BTreeMap<String, f64>,
    /// (level, process) -> (first t, first J, last t, last J) of its energy counter.
    energy: BTreeMap<(String, String), (f64, f64, f64, f64)>,
    /// Level -> the highest thermal and memory pressure, and swap (first, peak).
    thermal: BTreeMap<String, f64>,
    mem_pressure: BTreeMap<String, f64>,
    swap: BTreeMap<String, (f64, f64)>,
    spans: BTreeMap<String, (f64, f64)>,
}

impl Readings {
    fn gather(rows: &[ProcessRow]) -> Self {
        let mut r = Self::default();
        for row in rows {
            if let Some(t) = row.elapsed_s {
                r.add(row, t);
            }
        }
        r
    }

    fn add(&mut self, row: &ProcessRow, t: f64) {
        let machine = row.role == ProcessRole::Machine.as_str();
        let name = if machine {
            format!("machine{}", at_agent(&row.agent))
        } else {
            format!("{} {} ({})", row.role, row.name, row.pid)
        };
        widen_span(&mut self.spans, &row.cycle, t);
        let in_cycle = !row.cycle.is_empty();
        let key = label_key(&row.cycle);
        if in_cycle {
            self.add_pressure_and_energy(row, &key, &name, machine, t);
        }
        if machine && in_cycle {
            if let Some(n) = row.cpu_count.filter(|n| *n > 0.0) {
                self.machine_cores.insert(key.clone(), n);
            }
        }
        if let Some(c) = row.cpu_pct {
            self.cpu.entry(name.clone()).or_default().push((t, c));
            if in_cycle && machine {
                let e = self.machine_cpu.entry(key.clone()).or_insert((0.0, 0));
                e.0 += c;
                e.1 += 1;
            } else if in_cycle {
                let e = self
                    .server_cpu
                    .entry((key.clone(), name.clone()))
                    .or_insert((0.0, 0, 0.0));
                e.0 += c;
                e.1 += 1;
                e.2 = e.2.max(c);
            }
        }
        if let Some(b) = row.rss_bytes {
            self.rss.entry(name.clone()).or_default().push((t, b));
            if in_cycle && machine {
                if let Some(total) = row.mem_total_bytes.filter(|t| *t > 0.0) {
                    let e = self.machine_mem.entry(key).or_insert(0.0);
                    *e = e.max(b / total);
                }
            } else if in_cycle {
                let e = self.server_rss.entry((key, name)).or_insert(0.0);
                *e = e.max(b);
            }
        }
    }

    /// A row's energy counter (processes) or pressure figures (the machine), in level `key`.
    fn add_pressure_and_energy(
        &mut self,
        row: &ProcessRow,
        key: &str,
        name: &str,
        machine: bool,
        t: f64,
    ) {
        let max_into = |m: &mut BTreeMap<String, f64>, v: Option<f64>| {
            if let Some(v) = v {
                let e = m.entry(key.to_string()).or_insert(v);
                *e = e.max(v);
            }
        };
        if !machine {
            if let Some(j) = row.energy_j {
                let e = self
                    .energy
                    .entry((key.to_string(), name.to_string()))
                    .or_insert((t, j, t, j));
                (e.2, e.3) = (t, j);
            }
            return;
        }
        max_into(&mut self.thermal, row.thermal_pressure);
        max_into(&mut self.mem_pressure, row.mem_pressure);
        if let Some(b) = row.swap_used_bytes {
            let e = self.swap.entry(key.to_string()).or_insert((b, b));
            e.1 = e.1.max(b);
        }
    }

    /// A level's server figures, summed over its processes: CPU means and peaks, memory peaks.
    fn server(&self, key: &str) -> (Option<(f64, f64)>, Option<f64>) {
        let cpu: Vec<&(f64, u32, f64)> = self
            .server_cpu
            .iter()
            .filter(|((c, _), _)| c == key)
            .map(|(_, v)| v)
            .collect();
        let rss: Vec<f64> = self
            .server_rss
            .iter()
            .filter(|((c, _), _)| c == key)
            .map(|(_, v)| *v)
            .collect();
        (
            (!cpu.is_empty()).then(|| {
                (
                    cpu.iter().map(|(s, n, _)| s / f64::from(*n)).sum(),
                    cpu.iter().map(|(_, _, p)| *p).sum(),
                )
            }),
            (!rss.is_empty()).then(|| rss.iter().sum()),
        )
    }

    /// Fills a level's server figures cycles.csv lacks, and its machine figures.
    fn fill_level(&self, level: &mut LevelRow) {
        let key = level.key();
        let (cpu, rss) = self.server(&key);
        if let Some((mean, peak)) = cpu.filter(|_| level.server_cpu_pct_mean().is_none()) {
            let u = usage(level);
            u.cpu_pct_mean = Some(mean);
            u.cpu_pct_peak = Some(peak);
        }
        if let Some(bytes) = rss.filter(|_| level.server_rss_peak_bytes().is_none()) {
            usage(level).rss_peak_bytes = Some(bytes as u64);
        }
        level.machine_cpu_pct_mean = self.machine_cpu.get(&key).map(|(s, n)| s / f64::from(*n));
        level.machine_cpu_count = self.machine_cores.get(&key).copied();
        level.machine_mem_used_peak_frac = self.machine_mem.get(&key).copied();
        level.process_power_w = self
            .energy
            .iter()
            .filter(|((c, _), (t0, _, t1, _))| *c == key && t1 > t0)
            .map(|((_, n), (t0, j0, t1, j1))| (n.clone(), (j1 - j0).max(0.0) / (t1 - t0)))
            .collect();
        level.thermal_pressure_max = tokengun_common::monitor::max_opt(
            level.thermal_pressure_max,
            self.thermal.get(&key).copied(),
        );
        level.mem_pressure_max = self.mem_pressure.get(&key).copied();
        level.swap_growth_bytes = self.swap.get(&key).map(|(first, peak)| peak - first);
    }
}

fn usage(level: &mut LevelRow) -> &mut ServerUsage {
    level.cycle.server.get_or_insert_with(ServerUsage::default)
}

/// Adds processes.csv's series and per-level figures, or a note that there is none.
pub(super) fn add(dir: &Path, data: &mut RunData) -> Result<(), ReportError> {
    let Some(rows) = run_dir::read_processes(dir)? else {
        data.notes.push(format!(
            "no {PROCESSES_CSV}: server CPU and memory are not reported"
        ));
        return Ok(());
    };
    let r = Readings::gather(&rows);
    for level in &mut data.levels {
        r.fill_level(level);
    }
    data.series.cpu_pct = series(r.cpu);
    data.series.rss_bytes = series(r.rss);
    merge_spans(&mut data.series.cycle_spans, r.spans);
    Ok(())
}
