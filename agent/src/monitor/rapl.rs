//! CPU package and DRAM energy through RAPL powercap counters in sysfs (with wrap); Linux only.

use super::sysfs::{read_trim, read_u64, sorted_dir};
use super::{Found, MonitorError, MonitorSpec, PowerSource, SOURCE_RAPL};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use tokengun_common::PowerReading;
use tokengun_common::monitor::metric;

/// The power-source table's entry: RAPL under the spec's sysfs root, on Linux.
pub(super) fn detect(spec: &MonitorSpec) -> Result<Found, MonitorError> {
    if !cfg!(target_os = "linux") {
        return Err(MonitorError::unavailable("Linux only"));
    }
    let r = Rapl::detect(&spec.sys_root)?;
    Ok(Found::new(r.devices().join(", "), r))
}

/// The advice when `energy_uj` is root-only.
const RAPL_ROOT: &str = "energy_uj is readable by root only since Linux 5.10 (CVE-2020-8694): \
run the agent as root, or make the energy_uj files readable (e.g. a systemd-tmpfiles rule; this \
re-opens the PLATYPUS side channel on that machine)";

/// One powercap zone's counter, unwrapped into a running total.
#[derive(Debug)]
struct Zone {
    device: String,
    energy_uj: PathBuf,
    max_range_uj: u64,
    last_raw_uj: Option<u64>,
    total_uj: u64,
    last_t_ns: Option<u64>,
}

impl Zone {
    /// Adds the counter's advance since the last reading (one wrap at most between readings).
    fn advance(&mut self, raw_uj: u64) -> u64 {
        let delta = match self.last_raw_uj {
            None => 0,
            Some(prev) if raw_uj >= prev => raw_uj - prev,
            Some(prev) => self.max_range_uj.saturating_sub(prev) + raw_uj,
        };
        self.last_raw_uj = Some(raw_uj);
        self.total_uj += delta;
        delta
    }
}

/// RAPL through `<root>/class/powercap/intel-rapl:*` (also AMD Zen): package and DRAM zones.
/// Core/uncore subzones are inside the package figure and psys overlaps it, so they are skipped.
#[derive(Debug)]
pub struct Rapl {
    zones: Vec<Zone>,
}

impl Rapl {
    /// Finds the zones and reads each once; Err says why the source is unavailable.
    pub fn detect(sys_root: &Path) -> Result<Self, MonitorError> {
        let base = sys_root.join("class/powercap");
        let mut zones = Vec::new();
        for dir in sorted_dir(&base) {
            let Some(fname) = dir.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(id) = fname.strip_prefix("intel-rapl:") else {
                continue;
            };
            let Ok(name) = read_trim(&dir.join("name")) else {
                continue;
            };
            let top = !id.contains(':');
            let device = if top && name.starts_with("package") {
                name.clone()
            } else if name == "dram" {
                format!("dram-{}", id.split(':').next().unwrap_or("0"))
            } else {
                continue;
            };
            let max_range_uj = read_u64(&dir.join("max_energy_range_uj")).unwrap_or(u64::MAX);
            zones.push(Zone {
                device,
                energy_uj: dir.join("energy_uj"),
                max_range_uj,
                last_raw_uj: None,
                total_uj: 0,
                last_t_ns: None,
            });
        }
        if zones.is_empty() {
            return Err(MonitorError::NotFound {
                what: "RAPL package zones",
                dir: base,
                hint: " (not an x86 machine, the intel_rapl driver is not loaded, or a VM)",
            });
        }
        let mut rapl = Self { zones };
        let mut probe = Vec::new();
        rapl.sample(0, &mut probe)?;
        // The probe only proves the files are readable: counting starts at the first real sample.
        for z in &mut rapl.zones {
            z.last_raw_uj = None;
            z.last_t_ns = None;
            z.total_uj = 0;
        }
        Ok(rapl)
    }

    /// The zones found, for the probe's detail.
    pub fn devices(&self) -> Vec<String> {
        self.zones.iter().map(|z| z.device.clone()).collect()
    }
}

impl PowerSource for Rapl {
    fn sample(&mut self, t_ns: u64, out: &mut Vec<PowerReading>) -> Result<(), MonitorError> {
        for z in &mut self.zones {
            let raw = match read_u64(&z.energy_uj) {
                Ok(v) => v,
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    return Err(MonitorError::unavailable(RAPL_ROOT));
                }
                Err(source) => {
                    return Err(MonitorError::Io {
                        path: z.energy_uj.clone(),
                        source,
                    });
                }
            };
            let delta_uj = z.advance(raw);
            let reading = |m: &str, value: f64| PowerReading {
                t_ns,
                source: SOURCE_RAPL.into(),
                device: z.device.clone(),
                metric: m.into(),
                value,
            };
            out.push(reading(metric::ENERGY_J, z.total_uj as f64 / 1e6));
            if let Some(prev) = z.last_t_ns.filter(|&p| t_ns > p) {
                let dt_s = (t_ns - prev) as f64 / 1e9;
                out.push(reading(metric::POWER_W, delta_uj as f64 / 1e6 / dt_s));
            }
            z.last_t_ns = Some(t_ns);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::sysfs::write;
    use tokengun_common::monitor::PowerSeries;

    const MAX: u64 = 262_143_328_850;

    fn rapl_tree(root: &Path, package_uj: u64) {
        let z = "class/powercap/intel-rapl:0";
        write(root, &format!("{z}/name"), "package-0");
        write(root, &format!("{z}/energy_uj"), &package_uj.to_string());
        write(root, &format!("{z}/max_energy_range_uj"), &MAX.to_string());
        write(root, "class/powercap/intel-rapl:0:0/name", "core");
        write(root, "class/powercap/intel-rapl:0:0/energy_uj", "5");
        write(root, "class/powercap/intel-rapl:0:1/name", "dram");
        write(root, "class/powercap/intel-rapl:0:1/energy_uj", "1000000");
        write(
            root,
            "class/powercap/intel-rapl:0:1/max_energy_range_uj",
            &MAX.to_string(),
        );
    }

    #[test]
    fn rapl_counts_across_a_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        rapl_tree(root, MAX - 850);
        let mut rapl = Rapl::detect(root).unwrap();
        assert_eq!(rapl.devices(), vec!["package-0", "dram-0"]);
        let s = 1_000_000_000u64;
        let mut series = PowerSeries::default();
        let mut take = |rapl: &mut Rapl, t| {
            let mut out = Vec::new();
            rapl.sample(t, &mut out).unwrap();
            for r in &out {
                series.add(r);
            }
            out
        };
        let first = take(&mut rapl, s);
        assert!(
            first.iter().all(|r| r.metric != metric::POWER_W),
            "no power from a single reading: {first:?}"
        );
        // The counter wraps: MAX - 850 -> 5000 is 5850 uJ, not minus 262 kJ.
        write(root, "class/powercap/intel-rapl:0/energy_uj", "5000");
        write(root, "class/powercap/intel-rapl:0:1/energy_uj", "3000000");
        let out = take(&mut rapl, 2 * s);
        let pkg_power = out
            .iter()
            .find(|r| r.device == "package-0" && r.metric == metric::POWER_W)
            .unwrap();
        assert!((pkg_power.value - 0.00585).abs() < 1e-12, "{out:?}");
        // 40 W on the package for the next second.
        write(root, "class/powercap/intel-rapl:0/energy_uj", "40005000");
        take(&mut rapl, 3 * s);
        let w = series.window(2 * s, 3 * s).unwrap();
        let pkg = w.devices.iter().find(|d| d.device == "package-0").unwrap();
        assert!((pkg.energy_j - 40.0).abs() < 1e-9);
        assert_eq!(w.method, tokengun_common::monitor::EnergyMethod::Counter);
    }

    #[test]
    fn rapl_absent_or_root_only_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let e = Rapl::detect(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no RAPL package zones"), "{e}");
        rapl_tree(dir.path(), 1);
        let f = dir.path().join("class/powercap/intel-rapl:0/energy_uj");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o000)).unwrap();
        // Root reads anything; the refusal can only be seen as another user.
        if std::fs::read(&f).is_err() {
            let e = Rapl::detect(dir.path()).unwrap_err().to_string();
            assert!(e.contains("root"), "{e}");
        }
    }
}
