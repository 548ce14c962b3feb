//! Energy figures of a window (per device and in total) and of a cycle (per token, above idle).

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
