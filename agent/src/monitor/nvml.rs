//! NVIDIA GPUs through NVML, loaded at run time (the agent starts where the driver is absent):
//! power, the cumulative energy counter, clocks, utilisation, memory and temperature per GPU.

use super::{Found, MonitorError, MonitorSpec, SOURCE_NVML};
use tokengun_common::PowerReading;
use tokengun_common::monitor::metric;

/// What NVML said about one GPU at one instant, in NVML's own units.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct GpuReadings {
    /// `nvmlDeviceGetPowerUsage`: mW, averaged over about 1 s on Ampere and newer.
    pub power_mw: Option<u32>,
    /// Field `NVML_FI_DEV_POWER_INSTANT` (186), mW.
    pub instant_power_mw: Option<u32>,
    /// `nvmlDeviceGetTotalEnergyConsumption`: mJ since the driver loaded (Volta and newer).
    pub energy_mj: Option<u64>,
    pub sm_mhz: Option<u32>,
    pub mem_mhz: Option<u32>,
    pub util_gpu_pct: Option<u32>,
    pub util_mem_pct: Option<u32>,
    #[serde(rename = "mem_used_b")]
    pub mem_used_bytes: Option<u64>,
    pub temp_c: Option<u32>,
}

/// The readings of one GPU: `power_w` is the instant figure where NVML has it (else its
/// averaged one), `power_avg_w` the averaged one, `energy_j` the counter.
pub fn readings(t_ns: u64, device: &str, g: &GpuReadings) -> Vec<PowerReading> {
    let mut out = Vec::new();
    let mut push = |m: &str, v: Option<f64>| {
        if let Some(value) = v {
            out.push(PowerReading {
                t_ns,
                source: SOURCE_NVML.into(),
                device: device.into(),
                metric: m.into(),
                value,
            });
        }
    };
    let w = |mw: Option<u32>| mw.map(|mw| f64::from(mw) / 1e3);
    push(metric::POWER_W, w(g.instant_power_mw).or(w(g.power_mw)));
    push(metric::POWER_AVG_W, w(g.power_mw));
    push(metric::ENERGY_J, g.energy_mj.map(|mj| mj as f64 / 1e3));
    push(metric::FREQ_MHZ, g.sm_mhz.map(f64::from));
    push(metric::MEM_FREQ_MHZ, g.mem_mhz.map(f64::from));
    push(metric::BUSY_PCT, g.util_gpu_pct.map(f64::from));
    push(metric::MEM_BUSY_PCT, g.util_mem_pct.map(f64::from));
    push(metric::MEM_USED_BYTES, g.mem_used_bytes.map(|b| b as f64));
    push(metric::TEMP_C, g.temp_c.map(f64::from));
    out
}

#[cfg(target_os = "linux")]
pub use linux::Nvml;

/// The power-source table's entry: NVIDIA GPUs through NVML, on Linux.
pub(super) fn detect(_spec: &MonitorSpec) -> Result<Found, MonitorError> {
    #[cfg(target_os = "linux")]
    {
        let n = Nvml::detect()?;
        Ok(Found::new(n.names.join(", "), n))
    }
    #[cfg(not(target_os = "linux"))]
    Err(MonitorError::unavailable(
        "NVIDIA GPUs are read on Linux only",
    ))
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{GpuReadings, readings};
    use crate::monitor::{MonitorError, PowerSource};
    use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
    use nvml_wrapper::enums::device::SampleValue;
    use nvml_wrapper::error::NvmlError;
    use nvml_wrapper::structs::device::FieldId;
    use nvml_wrapper::sys_exports::field_id::NVML_FI_DEV_POWER_INSTANT;
    use tokengun_common::PowerReading;

    /// The loaded library and the GPUs it found.
    pub struct Nvml {
        nvml: nvml_wrapper::Nvml,
        count: u32,
        /// "gpu0: NVIDIA H100 80GB HBM3", for the probe.
        pub names: Vec<String>,
    }

    impl Nvml {
        /// Loads `libnvidia-ml.so.1`; Err says why NVIDIA is unavailable.
        pub fn detect() -> Result<Self, MonitorError> {
            let nvml = nvml_wrapper::Nvml::init().map_err(|e| match e {
                NvmlError::LibloadingError(_) => MonitorError::unavailable(
                    "libnvidia-ml.so.1 not found (no NVIDIA driver on this machine)",
                ),
                NvmlError::DriverNotLoaded => {
                    MonitorError::unavailable("the NVIDIA driver is not loaded")
                }
                NvmlError::NoPermission => {
                    MonitorError::unavailable("no permission to talk to the NVIDIA driver")
                }
                other => MonitorError::device("NVML could not start", other),
            })?;
            let count = nvml
                .device_count()
                .map_err(|e| MonitorError::device("NVML found no GPUs", e))?;
            if count == 0 {
                return Err(MonitorError::unavailable("NVML loaded but sees no GPU"));
            }
            let names = (0..count)
                .map(|i| {
                    let name = nvml
                        .device_by_index(i)
                        .and_then(|d| d.name())
                        .unwrap_or_else(|_| "unknown".into());
                    format!("gpu{i}: {name}")
                })
                .collect();
            Ok(Self { nvml, count, names })
        }

        fn read(&self, i: u32) -> Result<GpuReadings, NvmlError> {
            let d = self.nvml.device_by_index(i)?;
            let instant_power_mw = d
                .field_values_for(&[FieldId(NVML_FI_DEV_POWER_INSTANT)])
                .ok()
                .and_then(|v| v.into_iter().next())
                .and_then(|s| s.ok())
                .and_then(|s| s.value.ok())
                .and_then(|v| match v {
                    SampleValue::U32(x) => Some(x),
                    SampleValue::U64(x) => u32::try_from(x).ok(),
                    SampleValue::I64(x) => u32::try_from(x).ok(),
                    _ => None,
                });
            let util = d.utilization_rates().ok();
            Ok(GpuReadings {
                power_mw: d.power_usage().ok(),
                instant_power_mw,
                energy_mj: d.total_energy_consumption().ok(),
                sm_mhz: d.clock_info(Clock::SM).ok(),
                mem_mhz: d.clock_info(Clock::Memory).ok(),
                util_gpu_pct: util.as_ref().map(|u| u.gpu),
                util_mem_pct: util.as_ref().map(|u| u.memory),
                mem_used_bytes: d.memory_info().ok().map(|m| m.used),
                temp_c: d.temperature(TemperatureSensor::Gpu).ok(),
            })
        }
    }

    impl PowerSource for Nvml {
        fn sample(&mut self, t_ns: u64, out: &mut Vec<PowerReading>) -> Result<(), MonitorError> {
            // One GPU that cannot be read does not blank the others.
            let mut failed = None;
            for i in 0..self.count {
                match self.read(i) {
                    Ok(g) => out.extend(readings(t_ns, &format!("gpu{i}"), &g)),
                    Err(e) => failed = Some(MonitorError::device(format!("NVML gpu{i}"), e)),
                }
            }
            failed.map_or(Ok(()), Err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokengun_common::monitor::{EnergyMethod, PowerSeries};

    #[derive(serde::Deserialize)]
    struct Fixture {
        samples: Vec<Sample>,
    }

    #[derive(serde::Deserialize)]
    struct Sample {
        t_s: f64,
        #[serde(flatten)]
        g: GpuReadings,
    }

    fn fixture() -> Vec<Sample> {
        let p = format!(
            "{}/tests/fixtures/power/nvidia/nvml-samples.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let f: Fixture = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        f.samples
    }

    fn series() -> PowerSeries {
        let mut s = PowerSeries::default();
        for x in fixture() {
            for r in readings((x.t_s * 1e9) as u64, "gpu0", &x.g) {
                s.add(&r);
            }
        }
        s
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn h100_units() {
        let first = &fixture()[0];
        let rs = readings(0, "gpu0", &first.g);
        let get = |m: &str| rs.iter().find(|r| r.metric == m).unwrap().value;
        assert_eq!(get(metric::POWER_W), 72.861); // the instant figure
        assert_eq!(get(metric::POWER_AVG_W), 90.949);
        assert_eq!(get(metric::ENERGY_J), 2401.142);
        assert_eq!(get(metric::FREQ_MHZ), 345.0);
        assert_eq!(get(metric::MEM_USED_BYTES), 503_316_480.0);
    }

    /// The energy counter and the integrated instant power agree over idle and load windows of
    /// the recorded H100 run: the arithmetic is checked against the card's own counter.
    #[test]
    fn counter_and_integrated_power_agree_on_the_recording() {
        let s = series();
        for (from, to, lo_w, hi_w) in [(S / 2, 9 * S, 60.0, 110.0), (11 * S, 18 * S, 600.0, 720.0)]
        {
            let counted = s.window(from, to).unwrap();
            assert_eq!(counted.method, EnergyMethod::Counter);
            let power = s.get("nvml", "gpu0", metric::POWER_W).unwrap();
            let (integrated_j, covered_s) = power.integrate(from, to);
            assert!((covered_s - counted.duration_s).abs() < 1e-9);
            let diff = (integrated_j - counted.energy_j).abs() / counted.energy_j;
            assert!(
                diff < 0.05,
                "window {from}..{to}: counter {} J, integrated {integrated_j} J",
                counted.energy_j
            );
            assert!(
                counted.mean_power_w > lo_w && counted.mean_power_w < hi_w,
                "{counted:?}"
            );
            assert!(counted.peak_power_w.unwrap() >= counted.mean_power_w * 0.9);
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn without_the_driver_it_is_unavailable_not_a_panic() {
        // CI machines have no NVIDIA driver; where one exists this is a real detection.
        match Nvml::detect() {
            Ok(n) => assert!(!n.names.is_empty()),
            Err(why) => assert!(!why.to_string().is_empty()),
        }
    }

    /// The agent's NVML conversion against nvidia-smi's own figures of the same recorded period:
    /// idle and full-load power agree (each tool samples at its own instants, so means are compared).
    #[test]
    fn nvml_readings_agree_with_nvidia_smi_on_the_recording() {
        let p = format!(
            "{}/tests/fixtures/power/nvidia/nvidia-smi-query.csv",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(p).unwrap();
        // `power.draw.instant [W]` is the fifth column, "73.89 W".
        let smi: Vec<f64> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split(',').nth(4))
            .filter_map(|c| c.trim().trim_end_matches(" W").parse().ok())
            .collect();
        assert!(smi.len() > 200);
        let ours: Vec<f64> = fixture()
            .iter()
            .flat_map(|x| readings(0, "gpu0", &x.g))
            .filter(|r| r.metric == metric::POWER_W)
            .map(|r| r.value)
            .collect();
        let mean = |v: &[f64], keep: &dyn Fn(f64) -> bool| {
            let k: Vec<f64> = v.iter().copied().filter(|x| keep(*x)).collect();
            k.iter().sum::<f64>() / k.len() as f64
        };
        let idle = |w: f64| w < 100.0;
        let load = |w: f64| w > 400.0;
        let (smi_idle, our_idle) = (mean(&smi, &idle), mean(&ours, &idle));
        let (smi_load, our_load) = (mean(&smi, &load), mean(&ours, &load));
        assert!(
            (smi_idle - our_idle).abs() < 2.0,
            "idle: nvidia-smi {smi_idle} W, agent {our_idle} W"
        );
        assert!(
            (smi_load - our_load).abs() / smi_load < 0.05,
            "load: nvidia-smi {smi_load} W, agent {our_load} W"
        );
    }
}
