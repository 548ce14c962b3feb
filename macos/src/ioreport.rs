//! IOReport without root: a thread reads one delta of the "Energy Model" and "GPU Stats"
//! channels per interval through macmon's `IOReport`, with the GPU's frequency table, the SMC's
//! system power and the HID temperature sensors, and hands each window over as a
//! [`SocWindow`]. The windows tile time (macmon keeps its baseline sample between calls); each
//! one's length is measured on the monotonic clock between consecutive returns.

use macmon::sources::{
    IOHIDSensors, IOReport, SMC, cfio_get_residencies, cfio_integer_value, get_soc_info,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};
use tokengun_common::monitor::apple::{EnergyChannel, SocWindow};

/// One window, ended at the instant given, or why the reader stopped.
pub type Window = Result<(Instant, SocWindow), String>;

/// A running IOReport reader; dropping it stops the thread after its current window.
pub struct Stream {
    rx: Receiver<Window>,
    stop: Arc<AtomicBool>,
    /// What was found: the chip's name and GPU table size.
    pub detail: String,
}

impl Stream {
    /// Subscribes (on the reader thread: IOReport handles stay on the thread that made them)
    /// and starts reading a window every `interval`.
    pub fn start(interval: Duration) -> Result<Self, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<String, String>>();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::Builder::new()
            .name("ioreport".into())
            .spawn(move || {
                let soc = match get_soc_info() {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("SoC information: {e}")));
                        return;
                    }
                };
                let channels = vec![
                    ("Energy Model", None),
                    ("GPU Stats", Some("GPU Performance States")),
                ];
                let mut ior = match IOReport::new(channels) {
                    Ok(i) => i,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("IOReport subscription: {e}")));
                        return;
                    }
                };
                // gpu_freqs[0] is the OFF state's entry (as macmon reads the table).
                let freqs: Vec<u32> = soc.gpu_freqs.get(1..).unwrap_or_default().to_vec();
                // The SMC's PSTR only where the chip has it: asked once, then every window.
                let mut smc = SMC::new()
                    .ok()
                    .and_then(|mut s| s.read_float_val("PSTR").is_ok().then_some(s));
                let hid = IOHIDSensors::new().ok();
                let _ = ready_tx.send(Ok(format!(
                    "{} ({}): CPU, GPU, ANE, DRAM energy, GPU clock and residency{}",
                    soc.chip_name,
                    soc.mac_model,
                    if smc.is_some() {
                        ", system power (SMC)"
                    } else {
                        ""
                    }
                )));
                let ms = u64::try_from(interval.as_millis()).unwrap_or(1000).max(1);
                let mut last = Instant::now();
                while !stop2.load(Ordering::Relaxed) {
                    let Some((sample, _)) = ior.get_samples(ms, 1).pop() else {
                        break;
                    };
                    let end = Instant::now();
                    let mut w = SocWindow {
                        elapsed_ns: u64::try_from(end.duration_since(last).as_nanos())
                            .unwrap_or(u64::MAX),
                        gpu_freqs_mhz: freqs.clone(),
                        ..SocWindow::default()
                    };
                    last = end;
                    for x in sample {
                        if x.group == "Energy Model" {
                            w.energy.push(EnergyChannel {
                                value: cfio_integer_value(x.item),
                                channel: x.channel,
                                unit: x.unit,
                            });
                        } else if x.group == "GPU Stats"
                            && x.subgroup == "GPU Performance States"
                            && x.channel == "GPUPH"
                        {
                            w.gpu_states = cfio_get_residencies(x.item);
                        }
                    }
                    w.sys_power_w = smc
                        .as_mut()
                        .and_then(|s| s.read_float_val("PSTR").ok())
                        .map(f64::from);
                    if let Some(h) = hid.as_ref() {
                        let (cpu, gpu) = temperatures(&h.get_metrics());
                        (w.cpu_temp_c, w.gpu_temp_c) = (cpu, gpu);
                    }
                    if tx.send(Ok((end, w))).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("cannot start the IOReport thread: {e}"))?;
        let detail = ready_rx
            .recv()
            .map_err(|_| "the IOReport thread ended before it subscribed".to_string())??;
        Ok(Self { rx, stop, detail })
    }

    /// The windows that ended since the last call; Err when the reader stopped.
    pub fn drain(&self) -> Result<Vec<(Instant, SocWindow)>, String> {
        let mut out = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(Ok(w)) => out.push(w),
                Ok(Err(e)) => return Err(e),
                Err(TryRecvError::Empty) => return Ok(out),
                Err(TryRecvError::Disconnected) if out.is_empty() => {
                    return Err("the IOReport reader stopped".into());
                }
                Err(TryRecvError::Disconnected) => return Ok(out),
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Mean CPU and GPU temperature of the HID sensors macmon names (`pACC`/`eACC MTR Temp
/// Sensor*`, `GPU MTR Temp Sensor*`).
fn temperatures(sensors: &[(String, f32)]) -> (Option<f64>, Option<f64>) {
    let mean = |pick: &dyn Fn(&str) -> bool| {
        let v: Vec<f64> = sensors
            .iter()
            .filter(|(n, t)| pick(n) && *t > 0.0)
            .map(|(_, t)| f64::from(*t))
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    (
        mean(&|n| n.starts_with("pACC MTR Temp Sensor") || n.starts_with("eACC MTR Temp Sensor")),
        mean(&|n| n.starts_with("GPU MTR Temp Sensor")),
    )
}
