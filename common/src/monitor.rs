//! Monitor samples (server processes, machine, power sources) and the energy arithmetic over them:
//! energy in a window from cumulative counters or integrated power, per source and in total.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One power/accelerator reading: `value` of `metric` on `device` of `source` at `t_ns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerReading {
    /// Agent monotonic clock (ns since the agent's epoch) when the reading was taken.
    pub t_ns: u64,
    /// `powermetrics`, `nvml`, `amdgpu`, `rapl`.
    pub source: String,
    /// `gpu0`, `package-0`, `dram-0`, `soc` ...
    pub device: String,
    /// One of the `metric` constants, e.g. [`metric::POWER_W`].
    pub metric: String,
    pub value: f64,
}

/// The metric names of [`PowerReading`] and their units (the unit is the name's suffix).
pub mod metric {
    /// Power of the device (W). The system's power is the sum over devices.
    pub const POWER_W: &str = "power_w";
    /// A cumulative energy counter (J since the source started), when the source has one.
    pub const ENERGY_J: &str = "energy_j";
    /// A power figure averaged by the source itself over its own window (W; NVML's default).
    pub const POWER_AVG_W: &str = "power_avg_w";
    /// Core (GPU graphics/SM) clock, MHz.
    pub const FREQ_MHZ: &str = "freq_mhz";
    /// Memory clock, MHz.
    pub const MEM_FREQ_MHZ: &str = "mem_freq_mhz";
    /// Busy (active residency / utilisation), percent.
    pub const BUSY_PCT: &str = "busy_pct";
    /// Memory controller busy, percent.
    pub const MEM_BUSY_PCT: &str = "mem_busy_pct";
    /// Device memory in use, bytes.
    pub const MEM_USED_BYTES: &str = "mem_used_bytes";
    /// Temperature, degrees Celsius.
    pub const TEMP_C: &str = "temp_c";
    /// Apple Silicon parts of `power_w` (W).
    pub const CPU_POWER_W: &str = "cpu_power_w";
    pub const GPU_POWER_W: &str = "gpu_power_w";
    pub const ANE_POWER_W: &str = "ane_power_w";
    /// macOS thermal pressure: 0 nominal, 1 moderate... (see `powermetrics`), 4 critical.
    pub const THERMAL_PRESSURE: &str = "thermal_pressure";

    /// The unit of a metric, for the CSV's unit column.
    pub fn unit(metric: &str) -> &'static str {
        if metric.ends_with("_w") {
            "W"
        } else if metric.ends_with("_j") {
            "J"
        } else if metric.ends_with("_mhz") {
            "MHz"
        } else if metric.ends_with("_pct") {
            "%"
        } else if metric.ends_with("_bytes") {
            "B"
        } else if metric.ends_with("_c") {
            "C"
        } else {
            ""
        }
    }
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
}

/// What one monitor tick produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MonitorBatch {
    pub power: Vec<PowerReading>,
    pub processes: Vec<ProcessReading>,
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

/// Readings of one metric on one (source, device), time-ordered.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// (agent monotonic ns, value)
    pub points: Vec<(u64, f64)>,
    /// The folded beginning of a running window (see [`Series::fold`]).
    prefix: Option<Prefix>,
}

/// What [`Series::fold`] summed up of a window that begins at `anchor_ns`, before `points[0]`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Prefix {
    anchor_ns: u64,
    /// Where the integral begins: the anchor, or the first point when the series began later.
    start_ns: u64,
    /// The value at the anchor, when the series reached back to it.
    at_anchor: Option<f64>,
    /// Trapezoid integral over `[start_ns, points[0].t]`, value·seconds.
    integral: f64,
    /// Folded points inside the window (t >= anchor): count, sum and largest value.
    n: usize,
    sum: f64,
    peak: Option<f64>,
}

/// A series is folded only when it holds more points than this.
pub const FOLD_POINTS: usize = 1024;

impl Series {
    /// Adds a point; out-of-order points are inserted in place.
    pub fn push(&mut self, t_ns: u64, value: f64) {
        if !value.is_finite() {
            return;
        }
        match self.points.last() {
            Some(&(last, _)) if t_ns < last => {
                let at = self.points.partition_point(|&(t, _)| t <= t_ns);
                self.points.insert(at, (t_ns, value));
            }
            _ => self.points.push((t_ns, value)),
        }
    }

    /// Sums up the points of the window that began at `anchor_ns` that lie before `before_ns`
    /// (keeping the last of them, for interpolation), so a long window holds few points. Window
    /// queries starting exactly at the anchor ([`Series::integrate`], [`Series::peak`],
    /// [`Series::mean`], [`Series::covers`], [`Series::at`]) answer as if nothing was folded, as
    /// long as they end at or after the kept point; other queries see only the kept points.
    /// [`PowerSeries::forget_before`] ends the window. Does nothing with at most [`FOLD_POINTS`]
    /// points, or for a different anchor than the one already folded.
    pub fn fold(&mut self, anchor_ns: u64, before_ns: u64) {
        if self.points.len() <= FOLD_POINTS || self.prefix.is_some_and(|p| p.anchor_ns != anchor_ns)
        {
            return;
        }
        // Keep points[k..]: k is the last point before `before_ns`, after the anchor.
        let Some(k) = self
            .points
            .partition_point(|&(t, _)| t < before_ns)
            .checked_sub(1)
        else {
            return;
        };
        let (keep_t, _) = self.points[k];
        let Some(&(first_t, _)) = self.points.first() else {
            return;
        };
        if k == 0 || keep_t <= anchor_ns {
            return;
        }
        let mut p = self.prefix.unwrap_or(Prefix {
            anchor_ns,
            start_ns: anchor_ns.max(first_t),
            at_anchor: self.at(anchor_ns),
            integral: 0.0,
            n: 0,
            sum: 0.0,
            peak: None,
        });
        let from = self.points[0].0.max(p.start_ns);
        p.integral += self.integrate_points(from, keep_t);
        for &(t, v) in &self.points[..k] {
            if t >= anchor_ns {
                p.n += 1;
                p.sum += v;
                p.peak = Some(p.peak.map_or(v, |m: f64| m.max(v)));
            }
        }
        self.points.drain(..k);
        self.prefix = Some(p);
    }

    /// The folded prefix that a query from `from_ns` can build on.
    fn prefix_for(&self, from_ns: u64) -> Option<Prefix> {
        self.prefix.filter(|p| p.anchor_ns == from_ns)
    }

    /// The value at `t_ns`, linear between neighbours; None outside the series' span.
    pub fn at(&self, t_ns: u64) -> Option<f64> {
        match self.prefix_for(t_ns) {
            Some(p) => p.at_anchor,
            None => self.at_points(t_ns),
        }
    }

    /// The value at `t_ns` from the kept points alone, linear between neighbours.
    fn at_points(&self, t_ns: u64) -> Option<f64> {
        let i = self.points.partition_point(|&(t, _)| t < t_ns);
        match (i.checked_sub(1).map(|j| self.points[j]), self.points.get(i)) {
            (_, Some(&(t1, v1))) if t1 == t_ns => Some(v1),
            (Some((t0, v0)), Some(&(t1, v1))) => {
                let f = (t_ns - t0) as f64 / (t1 - t0) as f64;
                Some(v0 + f * (v1 - v0))
            }
            _ => None,
        }
    }

    /// Whether points exist at or before `from_ns` and at or after `to_ns`.
    pub fn covers(&self, from_ns: u64, to_ns: u64) -> bool {
        if let Some(p) = self.prefix_for(from_ns) {
            return p.at_anchor.is_some() && self.points.last().is_some_and(|&(b, _)| b >= to_ns);
        }
        matches!((self.points.first(), self.points.last()),
            (Some(&(a, _)), Some(&(b, _))) if a <= from_ns && b >= to_ns)
    }

    /// Trapezoid integral over `[from_ns, to_ns]` in value·seconds, with the edges interpolated;
    /// only the part the series covers counts. Returns (integral, covered seconds).
    pub fn integrate(&self, from_ns: u64, to_ns: u64) -> (f64, f64) {
        if let Some(p) = self.prefix_for(from_ns) {
            let Some((&(kept, _), &(last, _))) = self.points.first().zip(self.points.last()) else {
                return (0.0, 0.0);
            };
            if to_ns >= kept {
                let b = to_ns.min(last);
                return (
                    p.integral + self.integrate_points(kept, b),
                    b.saturating_sub(p.start_ns) as f64 / 1e9,
                );
            }
        }
        let (Some(&(first, _)), Some(&(last, _))) = (self.points.first(), self.points.last())
        else {
            return (0.0, 0.0);
        };
        let a = from_ns.max(first);
        let b = to_ns.min(last);
        if b <= a {
            return (0.0, 0.0);
        }
        (self.integrate_points(a, b), (b - a) as f64 / 1e9)
    }

    /// Trapezoid integral over `[a, b]` of the kept points, edges interpolated (a < b, both
    /// inside their span).
    fn integrate_points(&self, a: u64, b: u64) -> f64 {
        if b <= a {
            return 0.0;
        }
        let mut knots: Vec<(u64, f64)> = Vec::new();
        if let Some(v) = self.at_points(a) {
            knots.push((a, v));
        }
        knots.extend(self.points.iter().copied().filter(|&(t, _)| t > a && t < b));
        if let Some(v) = self.at_points(b) {
            knots.push((b, v));
        }
        knots
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) as f64 / 1e9 * (w[0].1 + w[1].1) / 2.0)
            .sum()
    }

    /// The largest value inside `[from_ns, to_ns]`.
    pub fn peak(&self, from_ns: u64, to_ns: u64) -> Option<f64> {
        let kept = self
            .points
            .iter()
            .filter(|&&(t, _)| t >= from_ns && t <= to_ns)
            .map(|&(_, v)| v)
            .reduce(f64::max);
        match self.prefix_for(from_ns).and_then(|p| p.peak) {
            Some(folded) => Some(kept.map_or(folded, |k| k.max(folded))),
            None => kept,
        }
    }

    /// Mean of the values inside `[from_ns, to_ns]` (unweighted).
    pub fn mean(&self, from_ns: u64, to_ns: u64) -> Option<f64> {
        let (mut n, mut sum) = self.prefix_for(from_ns).map_or((0, 0.0), |p| (p.n, p.sum));
        for &(_, v) in self
            .points
            .iter()
            .filter(|&&(t, _)| t >= from_ns && t <= to_ns)
        {
            n += 1;
            sum += v;
        }
        (n > 0).then(|| sum / n as f64)
    }
}

/// How a window's energy was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnergyMethod {
    /// Difference of the source's cumulative energy counter.
    Counter,
    /// Power samples integrated over time (trapezoid rule).
    Integrated,
    /// Some devices one way, some the other.
    Mixed,
}

impl EnergyMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Integrated => "integrated",
            Self::Mixed => "mixed",
        }
    }
}

/// Energy of one (source, device) over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEnergy {
    pub source: String,
    pub device: String,
    pub energy_j: f64,
    pub mean_power_w: f64,
    pub peak_power_w: Option<f64>,
    pub method: EnergyMethod,
}

/// Energy of every device over a window, and their total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowEnergy {
    pub duration_s: f64,
    pub energy_j: f64,
    pub mean_power_w: f64,
    /// Largest total power at any sampled instant of the window.
    pub peak_power_w: Option<f64>,
    pub method: EnergyMethod,
    pub devices: Vec<DeviceEnergy>,
}

/// Every power series of a run, keyed by (source, device, metric).
#[derive(Debug, Clone, Default)]
pub struct PowerSeries {
    series: BTreeMap<(String, String, String), Series>,
    /// A folded window's (anchor, largest total power at the folded instants).
    folded_peak_total: Option<(u64, f64)>,
}

impl PowerSeries {
    /// Adds a reading.
    pub fn add(&mut self, r: &PowerReading) {
        self.series
            .entry((r.source.clone(), r.device.clone(), r.metric.clone()))
            .or_default()
            .push(r.t_ns, r.value);
    }

    /// The series of one metric, if any.
    pub fn get(&self, source: &str, device: &str, metric: &str) -> Option<&Series> {
        self.series
            .get(&(source.to_string(), device.to_string(), metric.to_string()))
    }

    /// (source, device) pairs that report power or energy.
    fn devices(&self) -> Vec<(String, String)> {
        let mut d: Vec<(String, String)> = self
            .series
            .keys()
            .filter(|(_, _, m)| m == metric::POWER_W || m == metric::ENERGY_J)
            .map(|(s, d, _)| (s.clone(), d.clone()))
            .collect();
        d.dedup();
        d
    }

    /// Folds every long series' readings of the window that began at `anchor_ns` from before
    /// `before_ns` (see [`Series::fold`]): a window of many hours holds few readings.
    pub fn fold(&mut self, anchor_ns: u64, before_ns: u64) {
        if self.folded_peak_total.is_some_and(|(a, _)| a != anchor_ns) {
            return;
        }
        // The peak total power is a sum across devices at each sampled instant: take it over the
        // instants about to be folded while every device's readings are still there.
        let power: Vec<&Series> = self
            .series
            .iter()
            .filter(|((_, _, m), _)| m == metric::POWER_W)
            .map(|(_, s)| s)
            .collect();
        let folding = |s: &Series| -> Option<u64> {
            if s.points.len() <= FOLD_POINTS {
                return None;
            }
            let k = s
                .points
                .partition_point(|&(t, _)| t < before_ns)
                .checked_sub(1)?;
            (k > 0).then(|| s.points[k].0)
        };
        let peak = power
            .iter()
            .filter_map(|s| Some((s, folding(s)?)))
            .flat_map(|(s, keep_t)| {
                s.points
                    .iter()
                    .map(|p| p.0)
                    .filter(move |&t| t >= anchor_ns && t < keep_t)
            })
            .filter_map(|t| {
                power
                    .iter()
                    .map(|s| s.at(t))
                    .try_fold(0.0, |acc, v| v.map(|v| acc + v))
            })
            .reduce(f64::max);
        if let Some(p) = peak {
            let before = self.folded_peak_total.map_or(p, |(_, q)| q.max(p));
            self.folded_peak_total = Some((anchor_ns, before));
        }
        for s in self.series.values_mut() {
            s.fold(anchor_ns, before_ns);
        }
    }

    /// Forgets readings older than `t_ns`, keeping the last one before it (for interpolation),
    /// and ends any folded window: memory stays bounded over long runs.
    pub fn forget_before(&mut self, t_ns: u64) {
        self.folded_peak_total = None;
        for s in self.series.values_mut() {
            s.prefix = None;
            let keep_from = s
                .points
                .partition_point(|&(t, _)| t < t_ns)
                .saturating_sub(1);
            s.points.drain(..keep_from);
        }
    }

    /// The newest reading time of any series (agent monotonic ns).
    pub fn latest_ns(&self) -> Option<u64> {
        self.series
            .values()
            .filter_map(|s| s.points.last().map(|p| p.0))
            .max()
    }

    /// Mean of `metric` over all devices that report it, inside the window (e.g. GPU busy %).
    pub fn mean_of(&self, metric_name: &str, from_ns: u64, to_ns: u64) -> Option<f64> {
        let means: Vec<f64> = self
            .series
            .iter()
            .filter(|((_, _, m), _)| m == metric_name)
            .filter_map(|(_, s)| s.mean(from_ns, to_ns))
            .collect();
        (!means.is_empty()).then(|| means.iter().sum::<f64>() / means.len() as f64)
    }

    /// Energy over `[from_ns, to_ns]`: per device from its counter where the counter's readings
    /// span the window, else from its power samples; None when no device has data there.
    pub fn window(&self, from_ns: u64, to_ns: u64) -> Option<WindowEnergy> {
        if to_ns <= from_ns {
            return None;
        }
        let duration_s = (to_ns - from_ns) as f64 / 1e9;
        let mut devices = Vec::new();
        for (source, device) in self.devices() {
            let power = self.get(&source, &device, metric::POWER_W);
            let counter = self
                .get(&source, &device, metric::ENERGY_J)
                .filter(|c| c.covers(from_ns, to_ns));
            let peak_power_w = power.and_then(|p| p.peak(from_ns, to_ns));
            let (energy_j, method) = match counter {
                Some(c) => match (c.at(from_ns), c.at(to_ns)) {
                    (Some(a), Some(b)) => (b - a, EnergyMethod::Counter),
                    _ => continue,
                },
                None => match power {
                    Some(p) => {
                        let (area, covered_s) = p.integrate(from_ns, to_ns);
                        // Less than half the window seen: no honest figure for this device.
                        if covered_s < duration_s / 2.0 {
                            continue;
                        }
                        // Scale a small uncovered edge by the mean of what was seen.
                        (area * duration_s / covered_s, EnergyMethod::Integrated)
                    }
                    None => continue,
                },
            };
            devices.push(DeviceEnergy {
                source,
                device,
                energy_j,
                mean_power_w: energy_j / duration_s,
                peak_power_w,
                method,
            });
        }
        if devices.is_empty() {
            return None;
        }
        let energy_j: f64 = devices.iter().map(|d| d.energy_j).sum();
        let method = if devices.iter().all(|d| d.method == EnergyMethod::Counter) {
            EnergyMethod::Counter
        } else if devices.iter().all(|d| d.method == EnergyMethod::Integrated) {
            EnergyMethod::Integrated
        } else {
            EnergyMethod::Mixed
        };
        Some(WindowEnergy {
            duration_s,
            energy_j,
            mean_power_w: energy_j / duration_s,
            peak_power_w: self.peak_total(&devices, from_ns, to_ns),
            method,
            devices,
        })
    }

    /// The largest sum of device powers at any instant one of them was sampled in the window.
    fn peak_total(&self, devices: &[DeviceEnergy], from_ns: u64, to_ns: u64) -> Option<f64> {
        let series: Vec<&Series> = devices
            .iter()
            .filter_map(|d| self.get(&d.source, &d.device, metric::POWER_W))
            .collect();
        if series.is_empty() {
            return None;
        }
        let kept = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .filter(|&t| t >= from_ns && t <= to_ns)
            .filter_map(|t| {
                series
                    .iter()
                    .map(|s| s.at(t))
                    .try_fold(0.0, |acc, v| v.map(|v| acc + v))
            })
            .reduce(f64::max);
        // A folded window: the instants folded away had their totals taken when folding (over
        // every device reporting power then).
        match self.folded_peak_total.filter(|(a, _)| *a == from_ns) {
            Some((_, folded)) => Some(kept.map_or(folded, |k| k.max(folded))),
            None => kept,
        }
    }
}

/// Net (above idle) per-token figures are given only when the energy above idle is at least this
/// share of the whole: smaller differences are within what power readings can tell apart.
pub const NET_MIN_SHARE: f64 = 0.02;

/// A cycle's energy figures, as written to `cycles.csv` and `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleEnergy {
    pub mean_power_w: f64,
    pub peak_power_w: Option<f64>,
    pub energy_j: f64,
    pub method: EnergyMethod,
    /// None when the cycle produced no output tokens.
    pub joules_per_token: Option<f64>,
    pub tokens_per_joule: Option<f64>,
    /// The idle power measured before the sweep, when it was.
    pub baseline_power_w: Option<f64>,
    /// Energy above the idle baseline (energy - baseline x duration).
    pub net_energy_j: Option<f64>,
    pub net_joules_per_token: Option<f64>,
    pub net_tokens_per_joule: Option<f64>,
    pub devices: Vec<DeviceEnergy>,
}

impl CycleEnergy {
    /// Per-token figures of a window that produced `output_tokens`.
    pub fn new(w: WindowEnergy, output_tokens: u64, baseline_power_w: Option<f64>) -> Self {
        let per = |e: f64| {
            (output_tokens > 0 && e > 0.0)
                .then(|| (e / output_tokens as f64, output_tokens as f64 / e))
        };
        let net_energy_j = baseline_power_w.map(|b| w.energy_j - b * w.duration_s);
        let gross = per(w.energy_j);
        // Energy above idle within the measurement's own noise is no figure: per token it would
        // divide by about zero. Below NET_MIN_SHARE of the gross energy it is left out.
        let net = net_energy_j
            .filter(|n| *n >= NET_MIN_SHARE * w.energy_j)
            .and_then(per);
        Self {
            mean_power_w: w.mean_power_w,
            peak_power_w: w.peak_power_w,
            energy_j: w.energy_j,
            method: w.method,
            joules_per_token: gross.map(|g| g.0),
            tokens_per_joule: gross.map(|g| g.1),
            baseline_power_w,
            net_energy_j,
            net_joules_per_token: net.map(|n| n.0),
            net_tokens_per_joule: net.map(|n| n.1),
            devices: w.devices,
        }
    }
}

/// Server-process figures over a cycle (server and runner processes summed per instant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ServerUsage {
    pub cpu_pct_mean: Option<f64>,
    pub cpu_pct_peak: Option<f64>,
    pub rss_peak_bytes: Option<u64>,
    pub threads_peak: Option<u64>,
    pub open_fds_peak: Option<u64>,
}

/// Accumulates server-process readings of one window, summing processes sampled at one instant.
#[derive(Debug, Default)]
pub struct ServerUsageAcc {
    /// t_ns -> the processes of that tick, summed.
    ticks: BTreeMap<u64, TickSum>,
    /// The folded beginning of a running window: (anchor, its figures so far).
    folded: Option<(u64, TickFold)>,
}

/// Ticks of a window summed up by [`ServerUsageAcc::fold`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct TickFold {
    ticks: usize,
    cpu_n: usize,
    cpu_sum: f64,
    cpu_peak: Option<f64>,
    rss_peak: Option<u64>,
    threads_peak: Option<u64>,
    fds_peak: Option<u64>,
}

fn max_opt<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y > x { y } else { x }),
        (x, y) => x.or(y),
    }
}

/// (cpu %, rss bytes, threads, open fds) summed over the processes of one tick.
type TickSum = (Option<f64>, Option<u64>, Option<u64>, Option<u64>);

fn add_opt<T: std::ops::Add<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}

impl TickFold {
    fn add(&mut self, t: &TickSum) {
        self.ticks += 1;
        if let Some(c) = t.0 {
            self.cpu_n += 1;
            self.cpu_sum += c;
        }
        self.cpu_peak = max_opt(self.cpu_peak, t.0);
        self.rss_peak = max_opt(self.rss_peak, t.1);
        self.threads_peak = max_opt(self.threads_peak, t.2);
        self.fds_peak = max_opt(self.fds_peak, t.3);
    }
}

impl ServerUsageAcc {
    /// Adds a reading (machine rows are ignored).
    pub fn add(&mut self, r: &ProcessReading) {
        if r.role == ProcessRole::Machine {
            return;
        }
        let e = self.ticks.entry(r.t_ns).or_default();
        e.0 = add_opt(e.0, r.cpu_pct);
        e.1 = add_opt(e.1, r.rss_bytes);
        e.2 = add_opt(e.2, r.threads);
        e.3 = add_opt(e.3, r.open_fds);
    }

    /// Figures over the readings inside `[from_ns, to_ns]`; None when there were none. A window
    /// folded from `from_ns` (see [`ServerUsageAcc::fold`]) counts its folded ticks too.
    pub fn summary(&self, from_ns: u64, to_ns: u64) -> Option<ServerUsage> {
        let mut f = self
            .folded
            .filter(|(anchor, _)| *anchor == from_ns)
            .map_or_else(TickFold::default, |(_, f)| f);
        for (_, t) in self.ticks.range(from_ns..=to_ns) {
            f.add(t);
        }
        if f.ticks == 0 {
            return None;
        }
        Some(ServerUsage {
            cpu_pct_mean: (f.cpu_n > 0).then(|| f.cpu_sum / f.cpu_n as f64),
            cpu_pct_peak: f.cpu_peak,
            rss_peak_bytes: f.rss_peak,
            threads_peak: f.threads_peak,
            open_fds_peak: f.fds_peak,
        })
    }

    /// Sums up the ticks of the window that began at `anchor_ns` from before `before_ns`, so a
    /// window of many hours holds few ticks; [`ServerUsageAcc::summary`] from the anchor counts
    /// them. Does nothing with at most [`FOLD_POINTS`] ticks, or for another anchor than the one
    /// already folded. [`ServerUsageAcc::forget_before`] ends the window.
    pub fn fold(&mut self, anchor_ns: u64, before_ns: u64) {
        if self.ticks.len() <= FOLD_POINTS
            || self.folded.is_some_and(|(a, _)| a != anchor_ns)
            || before_ns <= anchor_ns
        {
            return;
        }
        let mut f = self.folded.map_or_else(TickFold::default, |(_, f)| f);
        let keep = self.ticks.split_off(&before_ns);
        let older = std::mem::replace(&mut self.ticks, keep);
        for (t, tick) in older {
            if t >= anchor_ns {
                f.add(&tick);
            }
        }
        self.folded = Some((anchor_ns, f));
    }

    /// Forgets readings older than `t_ns` and any folded window (memory stays bounded over long
    /// runs).
    pub fn forget_before(&mut self, t_ns: u64) {
        self.ticks = self.ticks.split_off(&t_ns);
        self.folded = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t_ns: u64, device: &str, m: &str, value: f64) -> PowerReading {
        PowerReading {
            t_ns,
            source: "test".into(),
            device: device.into(),
            metric: m.into(),
            value,
        }
    }

    const S: u64 = 1_000_000_000;

    /// A small deterministic generator for the folding tests.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn a_folded_window_answers_as_the_whole_one_did() {
        // An hour of two GPUs at 5 Hz (power, busy, a cumulative energy counter) from before
        // the window's anchor; folded every minute as the controller does, keeping 10 min.
        let mut rng = Lcg(7);
        let mut folded = PowerSeries::default();
        let mut whole = PowerSeries::default();
        let anchor = 30 * S + S / 3;
        let mut energy = [0.0f64; 2];
        let mut t = 5 * S;
        while t < 3_600 * S {
            for (d, e) in energy.iter_mut().enumerate() {
                let dev = format!("gpu{d}");
                let w = 100.0 + (rng.next() % 600) as f64;
                *e += w * 0.2;
                for (m, v) in [
                    (metric::POWER_W, w),
                    (metric::BUSY_PCT, (rng.next() % 101) as f64),
                    (metric::ENERGY_J, *e),
                ] {
                    let reading = r(t + d as u64 * 1_000, &dev, m, v);
                    folded.add(&reading);
                    whole.add(&reading);
                }
            }
            if t % (60 * S) < 200_000_000 {
                folded.fold(anchor, t.saturating_sub(600 * S));
            }
            t += 200_000_000 + rng.next() % 1_000;
        }
        let held: usize = folded.series.values().map(|s| s.points.len()).sum();
        assert!(held < 6 * 3_400, "{held} readings held after folding");
        for end in [3_500 * S, 3_599 * S, 3_700 * S] {
            let (a, b) = (
                folded.window(anchor, end).unwrap(),
                whole.window(anchor, end).unwrap(),
            );
            assert!(
                close(a.energy_j, b.energy_j),
                "{} vs {}",
                a.energy_j,
                b.energy_j
            );
            assert!(close(a.mean_power_w, b.mean_power_w));
            assert!(close(a.duration_s, b.duration_s));
            assert_eq!(a.peak_power_w, b.peak_power_w);
            assert_eq!(a.method, b.method);
            assert_eq!(a.devices.len(), b.devices.len());
            for (x, y) in a.devices.iter().zip(&b.devices) {
                assert!(close(x.energy_j, y.energy_j), "{x:?} vs {y:?}");
                assert_eq!(x.method, y.method);
            }
            let (mf, mw) = (
                folded.mean_of(metric::BUSY_PCT, anchor, end).unwrap(),
                whole.mean_of(metric::BUSY_PCT, anchor, end).unwrap(),
            );
            assert!(close(mf, mw), "{mf} vs {mw}");
            // And each series on its own: integral, peak, mean, coverage, value at the anchor.
            for (k, s) in &whole.series {
                let f = &folded.series[k];
                let (i1, c1) = f.integrate(anchor, end);
                let (i2, c2) = s.integrate(anchor, end);
                assert!(
                    close(i1, i2) && close(c1, c2),
                    "{k:?}: {i1} {c1} vs {i2} {c2}"
                );
                assert_eq!(f.peak(anchor, end), s.peak(anchor, end));
                assert!(close(
                    f.mean(anchor, end).unwrap(),
                    s.mean(anchor, end).unwrap()
                ));
                assert_eq!(f.covers(anchor, end), s.covers(anchor, end));
                assert_eq!(f.at(anchor), s.at(anchor));
            }
        }
        // The window's end forgets the fold with the readings.
        folded.forget_before(3_599 * S);
        assert!(folded.series.values().all(|s| s.prefix.is_none()));
    }

    #[test]
    fn a_series_that_began_after_the_anchor_folds_from_its_first_point() {
        let mut f = Series::default();
        for i in 0..3_000u64 {
            f.push(100 * S + i * S, (i % 17) as f64);
        }
        let w = f.clone();
        f.fold(50 * S, 2_000 * S);
        assert!(f.points.len() < 1_200);
        assert_eq!(f.covers(50 * S, 3_000 * S), w.covers(50 * S, 3_000 * S));
        assert!(!f.covers(50 * S, 3_000 * S));
        let (a, b) = (
            f.integrate(50 * S, 3_000 * S),
            w.integrate(50 * S, 3_000 * S),
        );
        assert!(close(a.0, b.0) && close(a.1, b.1), "{a:?} vs {b:?}");
        assert_eq!(f.mean(50 * S, 2_900 * S), w.mean(50 * S, 2_900 * S));
        // Another anchor is not folded over.
        f.fold(60 * S, 2_500 * S);
        assert!(f.points.len() > 900);
    }

    #[test]
    fn folded_server_ticks_give_the_same_summary() {
        let mut rng = Lcg(11);
        let mut folded = ServerUsageAcc::default();
        let mut whole = ServerUsageAcc::default();
        let anchor = 10 * S;
        for i in 0..7_200u64 {
            let t = 3 * S + i * S / 2;
            for pid in [1u32, 2] {
                let p = ProcessReading {
                    t_ns: t,
                    role: ProcessRole::Server,
                    pid: Some(pid),
                    name: "srv".into(),
                    cpu_pct: (rng.next() % 10 != 0).then(|| (rng.next() % 400) as f64),
                    rss_bytes: Some(rng.next() % 1_000_000),
                    vsz_bytes: None,
                    threads: Some(rng.next() % 64),
                    open_fds: (i % 3 != 0).then(|| rng.next() % 500),
                    mem_total_bytes: None,
                    load_avg_1m: None,
                    cpu_count: None,
                };
                folded.add(&p);
                whole.add(&p);
            }
            if i % 120 == 0 {
                folded.fold(anchor, t.saturating_sub(600 * S));
            }
        }
        assert!(folded.ticks.len() < 2_500, "{}", folded.ticks.len());
        for end in [3_000 * S, 3_603 * S, 4_000 * S] {
            let (a, b) = (
                folded.summary(anchor, end).unwrap(),
                whole.summary(anchor, end).unwrap(),
            );
            assert!(close(a.cpu_pct_mean.unwrap(), b.cpu_pct_mean.unwrap()));
            assert_eq!(
                (
                    a.cpu_pct_peak,
                    a.rss_peak_bytes,
                    a.threads_peak,
                    a.open_fds_peak
                ),
                (
                    b.cpu_pct_peak,
                    b.rss_peak_bytes,
                    b.threads_peak,
                    b.open_fds_peak
                )
            );
        }
        folded.forget_before(3_000 * S);
        assert!(folded.folded.is_none());
    }

    #[test]
    fn integrates_power_with_interpolated_edges() {
        let mut p = PowerSeries::default();
        for (t, w) in [(0, 100.0), (S, 100.0), (2 * S, 300.0), (3 * S, 300.0)] {
            p.add(&r(t, "gpu0", metric::POWER_W, w));
        }
        // [0.5 s, 2.5 s]: 0.5 s at 100, a 1 s ramp 100..300 (200 J), 0.5 s at 300.
        let w = p.window(S / 2, 5 * S / 2).unwrap();
        assert!((w.energy_j - (50.0 + 200.0 + 150.0)).abs() < 1e-9, "{w:?}");
        assert!((w.mean_power_w - 200.0).abs() < 1e-9);
        assert_eq!(w.method, EnergyMethod::Integrated);
        assert_eq!(w.peak_power_w, Some(300.0));
    }

    #[test]
    fn prefers_the_counter_and_sums_devices() {
        let mut p = PowerSeries::default();
        for i in 0..=10u64 {
            // gpu0: counter rising 50 J/s (power samples say 70 W, and are ignored for energy).
            p.add(&r(
                i * S / 10,
                "gpu0",
                metric::ENERGY_J,
                1000.0 + 5.0 * i as f64,
            ));
            p.add(&r(i * S / 10, "gpu0", metric::POWER_W, 70.0));
            // dram: power only, 10 W.
            p.add(&r(i * S / 10, "dram-0", metric::POWER_W, 10.0));
        }
        let w = p.window(0, S).unwrap();
        assert_eq!(w.method, EnergyMethod::Mixed);
        assert!((w.energy_j - 60.0).abs() < 1e-9, "{w:?}");
        assert_eq!(w.peak_power_w, Some(80.0));
        let gpu = w.devices.iter().find(|d| d.device == "gpu0").unwrap();
        assert_eq!(gpu.method, EnergyMethod::Counter);
        // A window the counter does not span falls back to power, if that spans half of it.
        assert!(p.window(2 * S, 3 * S).is_none());
    }

    #[test]
    fn per_token_and_net_figures() {
        let w = WindowEnergy {
            duration_s: 10.0,
            energy_j: 1000.0,
            mean_power_w: 100.0,
            peak_power_w: Some(120.0),
            method: EnergyMethod::Counter,
            devices: vec![],
        };
        let e = CycleEnergy::new(w.clone(), 500, Some(40.0));
        assert_eq!(e.joules_per_token, Some(2.0));
        assert_eq!(e.tokens_per_joule, Some(0.5));
        assert_eq!(e.net_energy_j, Some(600.0));
        assert!((e.net_joules_per_token.unwrap() - 1.2).abs() < 1e-12);
        // Load that costs nothing measurable above idle: net energy reported, no per-token figure.
        let flat = CycleEnergy::new(w.clone(), 500, Some(99.99));
        assert!(flat.net_energy_j.unwrap().abs() < 1.0);
        assert_eq!(flat.net_tokens_per_joule, None);
        assert_eq!(flat.net_joules_per_token, None);
        let none = CycleEnergy::new(w, 0, None);
        assert_eq!(none.joules_per_token, None);
        assert_eq!(none.net_energy_j, None);
    }

    #[test]
    fn series_inserts_out_of_order_points() {
        let mut s = Series::default();
        s.push(2, 2.0);
        s.push(1, 1.0);
        s.push(3, f64::NAN);
        assert_eq!(s.points, vec![(1, 1.0), (2, 2.0)]);
        assert_eq!(s.at(0), None);
        assert_eq!(s.at(3), None);
    }

    #[test]
    fn server_usage_sums_processes_of_one_tick() {
        let mut acc = ServerUsageAcc::default();
        let p = |t, role, cpu, rss| ProcessReading {
            t_ns: t,
            role,
            pid: Some(1),
            name: "x".into(),
            cpu_pct: cpu,
            rss_bytes: rss,
            vsz_bytes: None,
            threads: Some(4),
            open_fds: None,
            mem_total_bytes: None,
            load_avg_1m: None,
            cpu_count: None,
        };
        acc.add(&p(1, ProcessRole::Server, Some(10.0), Some(100)));
        acc.add(&p(1, ProcessRole::Runner, Some(90.0), Some(1000)));
        acc.add(&p(1, ProcessRole::Machine, Some(50.0), Some(9999)));
        acc.add(&p(2, ProcessRole::Server, Some(20.0), Some(100)));
        let s = acc.summary(0, 10).unwrap();
        assert_eq!(s.cpu_pct_peak, Some(100.0));
        assert_eq!(s.cpu_pct_mean, Some(60.0));
        assert_eq!(s.rss_peak_bytes, Some(1100));
        assert_eq!(s.threads_peak, Some(8));
        assert_eq!(s.open_fds_peak, None);
        assert!(acc.summary(3, 10).is_none());
    }
}
