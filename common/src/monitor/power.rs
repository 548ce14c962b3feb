//! Every power series of a run, and the energy of a window from them: from cumulative counters
//! where they span it, else from integrated power.

use super::{DeviceEnergy, EnergyMethod, FOLD_POINTS, PowerReading, Series, WindowEnergy, metric};
use std::collections::BTreeMap;

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
            s.forget_before(t_ns);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::test_util::{Lcg, S, close, r};

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
        assert!(folded.series.values().all(|s| !s.is_folded()));
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
}
