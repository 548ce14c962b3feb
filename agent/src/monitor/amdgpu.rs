//! AMD GPUs through amdgpu's hwmon files in sysfs (power, clocks, temperature, busy, VRAM);
//! Linux only.

use super::sysfs::{read_trim, read_u64, sorted_dir};
use super::{Found, MonitorError, MonitorSpec, PowerSource, SOURCE_AMDGPU};
use std::path::{Path, PathBuf};
use tokengun_common::PowerReading;
use tokengun_common::monitor::metric;

/// The power-source table's entry: AMD GPUs under the spec's sysfs root, on Linux.
pub(super) fn detect(spec: &MonitorSpec) -> Result<Found, MonitorError> {
    if !cfg!(target_os = "linux") {
        return Err(MonitorError::unavailable("Linux only"));
    }
    let a = AmdGpu::detect(&spec.sys_root)?;
    Ok(Found::new(a.devices().join(", "), a))
}

/// One amdgpu card's hwmon files.
#[derive(Debug)]
struct Card {
    device: String,
    power_uw: PathBuf,
    freq_hz: Option<PathBuf>,
    mem_freq_hz: Option<PathBuf>,
    temp_mc: Option<PathBuf>,
    busy_pct: Option<PathBuf>,
    vram_used: Option<PathBuf>,
}

/// AMD GPUs through `<root>/class/drm/card*/device/hwmon/hwmon*` named `amdgpu` (no energy
/// counter there: power is integrated). World-readable, no root needed.
#[derive(Debug)]
pub struct AmdGpu {
    cards: Vec<Card>,
}

impl AmdGpu {
    /// Finds the cards; Err says why the source is unavailable.
    pub fn detect(sys_root: &Path) -> Result<Self, MonitorError> {
        let base = sys_root.join("class/drm");
        let mut cards = Vec::new();
        for card in sorted_dir(&base) {
            let Some(fname) = card.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            // card0, card1 ... but not connectors like card0-DP-1.
            let Some(idx) = fname
                .strip_prefix("card")
                .filter(|i| i.chars().all(|c| c.is_ascii_digit()))
            else {
                continue;
            };
            let dev = card.join("device");
            for hw in sorted_dir(&dev.join("hwmon")) {
                if read_trim(&hw.join("name")).ok().as_deref() != Some("amdgpu") {
                    continue;
                }
                let some = |p: PathBuf| p.exists().then_some(p);
                let Some(power_uw) =
                    some(hw.join("power1_average")).or(some(hw.join("power1_input")))
                else {
                    continue;
                };
                cards.push(Card {
                    device: format!("gpu{idx}"),
                    power_uw,
                    freq_hz: some(hw.join("freq1_input")),
                    mem_freq_hz: some(hw.join("freq2_input")),
                    temp_mc: some(hw.join("temp1_input")),
                    busy_pct: some(dev.join("gpu_busy_percent")),
                    vram_used: some(dev.join("mem_info_vram_used")),
                });
            }
        }
        if cards.is_empty() {
            return Err(MonitorError::NotFound {
                what: "amdgpu hwmon with power1_average/power1_input",
                dir: base,
                hint: "",
            });
        }
        Ok(Self { cards })
    }

    /// The cards found, for the probe's detail.
    pub fn devices(&self) -> Vec<String> {
        self.cards.iter().map(|c| c.device.clone()).collect()
    }
}

impl PowerSource for AmdGpu {
    fn sample(&mut self, t_ns: u64, out: &mut Vec<PowerReading>) -> Result<(), MonitorError> {
        for c in &self.cards {
            let power = read_u64(&c.power_uw).map_err(|source| MonitorError::Io {
                path: c.power_uw.clone(),
                source,
            })?;
            let mut push = |m: &str, value: f64| {
                out.push(PowerReading {
                    t_ns,
                    source: SOURCE_AMDGPU.into(),
                    device: c.device.clone(),
                    metric: m.into(),
                    value,
                });
            };
            push(metric::POWER_W, power as f64 / 1e6);
            let opt = |p: &Option<PathBuf>| p.as_deref().and_then(|p| read_u64(p).ok());
            if let Some(v) = opt(&c.freq_hz) {
                push(metric::FREQ_MHZ, v as f64 / 1e6);
            }
            if let Some(v) = opt(&c.mem_freq_hz) {
                push(metric::MEM_FREQ_MHZ, v as f64 / 1e6);
            }
            if let Some(v) = opt(&c.temp_mc) {
                push(metric::TEMP_C, v as f64 / 1e3);
            }
            if let Some(v) = opt(&c.busy_pct) {
                push(metric::BUSY_PCT, v as f64);
            }
            if let Some(v) = opt(&c.vram_used) {
                push(metric::MEM_USED_BYTES, v as f64);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::sysfs::write;

    #[test]
    fn amdgpu_hwmon_units() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let hw = "class/drm/card1/device/hwmon/hwmon3";
        write(root, &format!("{hw}/name"), "amdgpu");
        write(root, &format!("{hw}/power1_average"), "215000000");
        write(root, &format!("{hw}/freq1_input"), "2100000000");
        write(root, &format!("{hw}/temp1_input"), "61000");
        write(root, "class/drm/card1/device/gpu_busy_percent", "97");
        write(
            root,
            "class/drm/card1/device/mem_info_vram_used",
            "8589934592",
        );
        write(root, "class/drm/card1-DP-1/status", "connected");
        write(root, "class/drm/card0/device/hwmon/hwmon0/name", "i915");
        let mut amd = AmdGpu::detect(root).unwrap();
        assert_eq!(amd.devices(), vec!["gpu1"]);
        let mut out = Vec::new();
        amd.sample(7, &mut out).unwrap();
        let get = |m: &str| out.iter().find(|r| r.metric == m).unwrap().value;
        assert_eq!(get(metric::POWER_W), 215.0);
        assert_eq!(get(metric::FREQ_MHZ), 2100.0);
        assert_eq!(get(metric::TEMP_C), 61.0);
        assert_eq!(get(metric::BUSY_PCT), 97.0);
        assert_eq!(get(metric::MEM_USED_BYTES), 8_589_934_592.0);
        assert!(AmdGpu::detect(&root.join("nothing")).is_err());
    }
}
