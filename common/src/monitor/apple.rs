//! Apple Silicon arithmetic, plain Rust tested on every platform: IOReport "Energy Model" deltas
//! to joules and to watts over the measured window, GPU residency to MHz, counters that read 0,
//! and per-process energy from `proc_pid_rusage`'s `ri_energy_nj`. The macOS calls that feed it
//! live in the `tokengun-macos` crate; only they are macOS-only.

use super::{PowerReading, metric};
use std::collections::HashMap;

/// The device name of the whole SoC (as powermetrics' readings use it).
pub const DEVICE_SOC: &str = "soc";

/// The part of the SoC an "Energy Model" channel measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Cpu,
    Gpu,
    Ane,
    Dram,
}

/// The domain of an "Energy Model" channel, by name: `CPU Energy` (`DIE_N_CPU Energy` on Ultra),
/// `GPU Energy`, `ANE*`, `DRAM*` (as macmon reads them); None for the rest (per-core channels such as
/// `PCPU0`, which the cluster channels already count, and `GPU SRAM*`, which no figure uses).
pub fn domain(channel: &str) -> Option<Domain> {
    if channel == "GPU Energy" {
        Some(Domain::Gpu)
    } else if channel.ends_with("CPU Energy") {
        Some(Domain::Cpu)
    } else if channel.starts_with("ANE") {
        Some(Domain::Ane)
    } else if channel.starts_with("DRAM") {
        Some(Domain::Dram)
    } else {
        None
    }
}

/// Joules per count of an IOReport energy unit label.
pub fn unit_j(unit: &str) -> Option<f64> {
    match unit.trim() {
        "mJ" => Some(1e-3),
        "uJ" | "µJ" => Some(1e-6),
        "nJ" => Some(1e-9),
        _ => None,
    }
}

/// One "Energy Model" channel of an IOReport delta: the counts it gained over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyChannel {
    pub channel: String,
    pub unit: String,
    pub value: i64,
}

/// One IOReport window as the macOS side read it: the energy channels' deltas, the GPU's
/// performance-state residencies, and what the SMC and sensors said at its end.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SocWindow {
    /// Measured length of the window (between the two IOReport samples), ns.
    pub elapsed_ns: u64,
    pub energy: Vec<EnergyChannel>,
    /// `GPU Stats` / `GPU Performance States` / `GPUPH`: (state name, residency) in order, the
    /// first being `OFF` (or `IDLE`/`DOWN`).
    pub gpu_states: Vec<(String, i64)>,
    /// The GPU's frequency table, MHz, one per active state.
    pub gpu_freqs_mhz: Vec<u32>,
    /// SMC `PSTR`: the whole machine's power, where the chip has it.
    pub sys_power_w: Option<f64>,
    pub cpu_temp_c: Option<f64>,
    pub gpu_temp_c: Option<f64>,
}

/// Energy of each domain over one window, J; None where the chip has no such channel.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SocEnergy {
    pub cpu_j: Option<f64>,
    pub gpu_j: Option<f64>,
    pub ane_j: Option<f64>,
    pub dram_j: Option<f64>,
}

impl SocEnergy {
    /// CPU + GPU + ANE, the sum powermetrics calls combined power; None without any of them.
    pub fn combined_j(&self) -> Option<f64> {
        let parts = [self.cpu_j, self.gpu_j, self.ane_j];
        parts
            .iter()
            .any(Option::is_some)
            .then(|| parts.iter().flatten().sum())
    }
}

/// An IOReport window could not be turned into energy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppleError {
    #[error("IOReport channel {channel:?} has unit {unit:?}, not mJ, uJ or nJ")]
    Unit { channel: String, unit: String },
    #[error(
        "IOReport channel {channel:?} went back by {value} over a window: the window is left out"
    )]
    Negative { channel: String, value: i64 },
    #[error("IOReport window of 0 ns: no power can be had from it")]
    Elapsed,
    #[error("IOReport has no Energy Model channels on this machine (a virtual machine?)")]
    NoChannels,
    /// A counter reads 0 while the machine is plainly running: its figures would be false zeros.
    #[error("IOReport {0} energy counter reads 0 on this machine")]
    Zero(&'static str),
}

/// Energy of each domain in a window's channels (several channels of one domain add up: the
/// dies of an Ultra, the ANEs of a Max).
pub fn energy(channels: &[EnergyChannel]) -> Result<SocEnergy, AppleError> {
    let mut e = SocEnergy::default();
    for c in channels {
        let Some(d) = domain(&c.channel) else {
            continue;
        };
        let scale = unit_j(&c.unit).ok_or_else(|| AppleError::Unit {
            channel: c.channel.clone(),
            unit: c.unit.clone(),
        })?;
        if c.value < 0 {
            return Err(AppleError::Negative {
                channel: c.channel.clone(),
                value: c.value,
            });
        }
        let slot = match d {
            Domain::Cpu => &mut e.cpu_j,
            Domain::Gpu => &mut e.gpu_j,
            Domain::Ane => &mut e.ane_j,
            Domain::Dram => &mut e.dram_j,
        };
        *slot = Some(slot.unwrap_or(0.0) + c.value as f64 * scale);
    }
    Ok(e)
}

/// The GPU's clock over a window, from its performance-state residencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuClock {
    /// Mean clock while active (residency-weighted), MHz.
    pub mhz: f64,
    /// Active share of the window, 0..1.
    pub active_ratio: f64,
}

/// Residency-weighted mean clock: the states after the leading `OFF`/`IDLE`/`DOWN` ones are the
/// frequency table's, in order. None when the table and states do not fit together, or nothing
/// was counted.
pub fn residency_mhz(states: &[(String, i64)], freqs_mhz: &[u32]) -> Option<GpuClock> {
    let offset = states
        .iter()
        .position(|(n, _)| n != "OFF" && n != "IDLE" && n != "DOWN")?;
    let active = states.get(offset..offset + freqs_mhz.len())?;
    if freqs_mhz.is_empty() || active.iter().chain(states).any(|(_, r)| *r < 0) {
        return None;
    }
    let busy: f64 = active.iter().map(|(_, r)| *r as f64).sum();
    let total: f64 = states.iter().map(|(_, r)| *r as f64).sum();
    if total <= 0.0 {
        return None;
    }
    let mhz = if busy > 0.0 {
        active
            .iter()
            .zip(freqs_mhz)
            .map(|((_, r), f)| *r as f64 * f64::from(*f))
            .sum::<f64>()
            / busy
    } else {
        0.0
    };
    Some(GpuClock {
        mhz,
        active_ratio: busy / total,
    })
}

/// Difference of a cumulative counter: `now - prev`, or across one wrap when the counter wraps
/// at `wrap_at` (its largest value); None when it went back without a wrap (it was reset).
pub fn counter_delta(prev: u64, now: u64, wrap_at: Option<u64>) -> Option<u64> {
    if now >= prev {
        return Some(now - prev);
    }
    let max = wrap_at?;
    (prev <= max && now <= max).then(|| (max - prev) + now + 1)
}

/// Whether the energy counters work here, from the first windows: CPU energy is never 0 over a
/// window (the sampler itself runs on it), and GPU energy is not 0 while its residency says it
/// was busy. Checked over every window so far, so one quiet window is no verdict.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    windows: u32,
    cpu_seen: bool,
    gpu_seen: bool,
    gpu_busy_seen: bool,
    any_channel: bool,
}

impl Liveness {
    /// Counts one window's energy and the GPU's active ratio in it.
    pub fn add(&mut self, e: &SocEnergy, gpu_active_ratio: Option<f64>) {
        self.windows += 1;
        self.any_channel |= e.cpu_j.is_some() || e.gpu_j.is_some() || e.ane_j.is_some();
        self.cpu_seen |= e.cpu_j.is_some_and(|j| j > 0.0);
        self.gpu_seen |= e.gpu_j.is_some_and(|j| j > 0.0);
        self.gpu_busy_seen |= gpu_active_ratio.is_some_and(|a| a > 0.0);
    }

    /// Ok when the counters are live; the error says which one reads 0.
    pub fn verdict(&self) -> Result<(), AppleError> {
        if self.windows == 0 || !self.any_channel {
            return Err(AppleError::NoChannels);
        }
        if !self.cpu_seen {
            return Err(AppleError::Zero("CPU"));
        }
        if self.gpu_busy_seen && !self.gpu_seen {
            return Err(AppleError::Zero("GPU"));
        }
        Ok(())
    }
}

/// Consecutive all-zero windows after which a running source says its counters died.
pub const ZERO_WINDOWS_DEAD: u32 = 5;

/// Turns IOReport windows into readings stamped when each ended, with a cumulative energy counter
/// (the sum of the windows' deltas: exact whatever the windows' lengths) and power as each
/// window's energy over its measured length.
#[derive(Debug, Default)]
pub struct SocReadings {
    energy_total_j: f64,
    zero_run: u32,
}

impl SocReadings {
    /// The readings of `w`, which ended at `t_ns`, from the `source` named.
    pub fn readings(
        &mut self,
        source: &str,
        t_ns: u64,
        w: &SocWindow,
    ) -> Result<Vec<PowerReading>, AppleError> {
        if w.elapsed_ns == 0 {
            return Err(AppleError::Elapsed);
        }
        let e = energy(&w.energy)?;
        let combined = e.combined_j().ok_or(AppleError::NoChannels)?;
        // A CPU reading 0 over a window is a dead counter, not an idle SoC: say so, record nothing.
        if e.cpu_j.is_none_or(|j| j <= 0.0) {
            self.zero_run += 1;
            if self.zero_run >= ZERO_WINDOWS_DEAD {
                return Err(AppleError::Zero("CPU"));
            }
            return Ok(Vec::new());
        }
        self.zero_run = 0;
        let s = w.elapsed_ns as f64 / 1e9;
        let mut out = Vec::new();
        let mut push = |m: &str, v: Option<f64>| {
            if let Some(value) = v.filter(|v| v.is_finite()) {
                out.push(PowerReading {
                    t_ns,
                    source: source.into(),
                    device: DEVICE_SOC.into(),
                    metric: m.into(),
                    value,
                });
            }
        };
        self.energy_total_j += combined;
        push(metric::ENERGY_J, Some(self.energy_total_j));
        push(metric::POWER_W, Some(combined / s));
        push(metric::CPU_POWER_W, e.cpu_j.map(|j| j / s));
        push(metric::GPU_POWER_W, e.gpu_j.map(|j| j / s));
        push(metric::ANE_POWER_W, e.ane_j.map(|j| j / s));
        push(metric::DRAM_POWER_W, e.dram_j.map(|j| j / s));
        push(metric::SYS_POWER_W, w.sys_power_w.filter(|w| *w > 0.0));
        if let Some(c) = residency_mhz(&w.gpu_states, &w.gpu_freqs_mhz) {
            push(metric::FREQ_MHZ, Some(c.mhz));
            push(metric::BUSY_PCT, Some(100.0 * c.active_ratio));
        }
        push(metric::TEMP_C, w.cpu_temp_c);
        push(metric::GPU_TEMP_C, w.gpu_temp_c);
        Ok(out)
    }
}

/// What one process's energy counter gave at one sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProcEnergy {
    /// J since the process was first seen by this sampler (a cumulative counter).
    pub energy_j: Option<f64>,
    /// Over the interval since the previous sample, W (None at the first).
    pub power_w: Option<f64>,
}

/// Per-process energy from `ri_energy_nj` (nJ since the process started): each process's
/// energy since first seen and its power over each measured interval. A counter that went back
/// (the pid was reused) starts over without adding anything for that interval.
#[derive(Debug, Clone, Default)]
pub struct ProcessEnergy {
    last: HashMap<u32, (u64, u64, f64)>,
}

impl ProcessEnergy {
    /// The counter of `pid` read `energy_nj` at `t_ns`.
    pub fn update(&mut self, pid: u32, t_ns: u64, energy_nj: u64) -> ProcEnergy {
        let Some(&(t0, nj0, total)) = self.last.get(&pid) else {
            self.last.insert(pid, (t_ns, energy_nj, 0.0));
            return ProcEnergy {
                energy_j: Some(0.0),
                power_w: None,
            };
        };
        let dt = t_ns.saturating_sub(t0);
        match counter_delta(nj0, energy_nj, None) {
            Some(d) if dt > 0 => {
                let j = d as f64 / 1e9;
                self.last.insert(pid, (t_ns, energy_nj, total + j));
                ProcEnergy {
                    energy_j: Some(total + j),
                    power_w: Some(j / (dt as f64 / 1e9)),
                }
            }
            Some(_) => ProcEnergy {
                energy_j: Some(total),
                power_w: None,
            },
            None => {
                self.last.insert(pid, (t_ns, energy_nj, total));
                ProcEnergy {
                    energy_j: Some(total),
                    power_w: None,
                }
            }
        }
    }

    /// Forgets processes `alive` says are gone.
    pub fn retain(&mut self, alive: impl Fn(u32) -> bool) {
        self.last.retain(|pid, _| alive(*pid));
    }
}

#[cfg(test)]
mod tests;
