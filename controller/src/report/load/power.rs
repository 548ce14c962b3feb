//! `power.csv` (optional): each device's power and clock over time, and per level the mean
//! power (when cycles.csv has no energy figures), GPU busy and clock.

use super::{LevelRow, RunData, at_agent, label_key, merge_spans, series, widen_span};
use crate::report::ReportError;
use std::collections::BTreeMap;
use std::path::Path;
use tokengun_common::monitor::{CycleEnergy, EnergyMethod, metric};
use tokengun_common::run_dir::{self, BASELINE_LABEL, POWER_CSV, PowerRow};

/// power.csv's readings, gathered.
#[derive(Default)]
struct Readings {
    /// Device -> (elapsed_s, W).
    power: BTreeMap<String, Vec<(f64, f64)>>,
    /// Device -> (elapsed_s, MHz).
    freq: BTreeMap<String, Vec<(f64, f64)>>,
    /// (level key, metric, device) -> (sum, count) of its readings.
    per_cycle: BTreeMap<(String, &'static str, String), (f64, u32)>,
    /// Level key -> the highest thermal pressure a source read (powermetrics).
    thermal: BTreeMap<String, f64>,
    spans: BTreeMap<String, (f64, f64)>,
}

impl Readings {
    fn gather(rows: &[PowerRow]) -> Self {
        let mut r = Self::default();
        for row in rows {
            let (Some(t), Some(v)) = (row.elapsed_s, row.value) else {
                continue;
            };
            widen_span(&mut r.spans, &row.cycle, t);
            let device = format!("{} {}{}", row.source, row.device, at_agent(&row.agent));
            if row.metric == metric::THERMAL_PRESSURE && !row.cycle.is_empty() {
                let e = r.thermal.entry(label_key(&row.cycle)).or_insert(v);
                *e = e.max(v);
                continue;
            }
            let metric: &'static str = match row.metric.as_str() {
                metric::POWER_W => metric::POWER_W,
                metric::FREQ_MHZ => metric::FREQ_MHZ,
                metric::BUSY_PCT => metric::BUSY_PCT,
                _ => continue,
            };
            match metric {
                metric::POWER_W => r.power.entry(device.clone()).or_default().push((t, v)),
                metric::FREQ_MHZ => r.freq.entry(device.clone()).or_default().push((t, v)),
                _ => {}
            }
            if !row.cycle.is_empty() {
                let e = r
                    .per_cycle
                    .entry((label_key(&row.cycle), metric, device))
                    .or_insert((0.0, 0));
                e.0 += v;
                e.1 += 1;
            }
        }
        r
    }

    /// Over the devices, the sum (or the mean) of each device's mean, for one level and metric.
    fn over_devices(&self, key: &str, metric: &str, mean_of_devices: bool) -> Option<f64> {
        let vals: Vec<f64> = self
            .per_cycle
            .iter()
            .filter(|((c, m, _), _)| c == key && *m == metric)
            .map(|(_, (s, n))| s / f64::from(*n))
            .collect();
        if vals.is_empty() {
            None
        } else if mean_of_devices {
            Some(vals.iter().sum::<f64>() / vals.len() as f64)
        } else {
            Some(vals.iter().sum())
        }
    }
}

/// A level's energy from its mean power: mean power x duration, per token, and above the idle
/// baseline when there is one.
fn energy_from_mean(level: &LevelRow, w: f64, baseline_w: Option<f64>) -> CycleEnergy {
    let tokens = level.output_tokens as f64;
    // (J/token, tokens/J) of an energy, when there were tokens and energy.
    let per_token = |e: f64| (level.output_tokens > 0 && e > 0.0).then(|| (e / tokens, tokens / e));
    let energy_j = w * level.duration_s;
    let gross = per_token(energy_j);
    let net_j = baseline_w.map(|b| (w - b) * level.duration_s);
    let net = net_j.and_then(per_token);
    CycleEnergy {
        mean_power_w: w,
        peak_power_w: None,
        energy_j,
        // The mean of the readings times the duration: the samples integrated, by rectangles.
        method: EnergyMethod::Integrated,
        joules_per_token: gross.map(|g| g.0),
        tokens_per_joule: gross.map(|g| g.1),
        baseline_power_w: baseline_w,
        net_energy_j: net_j,
        net_joules_per_token: net.map(|n| n.0),
        net_tokens_per_joule: net.map(|n| n.1),
        devices: Vec::new(),
    }
}

/// Fills a level's figures cycles.csv lacks; true when it filled its energy.
fn fill_level(level: &mut LevelRow, r: &Readings, baseline_w: Option<f64>) -> bool {
    let key = level.key();
    let mut filled = false;
    if level.energy.is_none() {
        if let Some(w) = r.over_devices(&key, metric::POWER_W, false) {
            level.cycle.energy = Some(energy_from_mean(level, w, baseline_w));
            filled = true;
        }
    }
    if level.gpu_busy_pct_mean.is_none() {
        level.cycle.gpu_busy_pct_mean = r.over_devices(&key, metric::BUSY_PCT, true);
    }
    if level.gpu_freq_mhz_mean.is_none() {
        level.cycle.gpu_freq_mhz_mean = r.over_devices(&key, metric::FREQ_MHZ, true);
    }
    level.thermal_pressure_max = r.thermal.get(&key).copied();
    filled
}

/// Adds power.csv's series and per-level figures, or a note that there is none.
pub(super) fn add(dir: &Path, data: &mut RunData) -> Result<(), ReportError> {
    let Some(rows) = run_dir::read_power(dir)? else {
        data.notes
            .push(format!("no {POWER_CSV}: power and energy are not reported"));
        return Ok(());
    };
    let r = Readings::gather(&rows);
    let baseline_w = r.over_devices(BASELINE_LABEL, metric::POWER_W, false);
    let mut filled = false;
    for level in &mut data.levels {
        filled |= fill_level(level, &r, baseline_w);
    }
    if filled {
        data.notes.push(format!(
            "cycles.csv has no power columns: mean power per level is the mean of {POWER_CSV}'s readings during it, energy = mean power × duration"
        ));
    }
    data.series.power_w = series(r.power);
    data.series.freq_mhz = series(r.freq);
    merge_spans(&mut data.series.cycle_spans, r.spans);
    if data.series.power_w.is_empty() {
        data.notes.push(format!(
            "{POWER_CSV} has no power_w readings: power is not reported"
        ));
    }
    Ok(())
}
