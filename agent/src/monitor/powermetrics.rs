//! macOS `powermetrics -f plist`: the NUL-separated document stream split and parsed into
//! readings (parsing is plain Rust and tested everywhere; spawning the tool is macOS-only).

#[cfg(target_os = "macos")]
use super::PowerSource;
use super::{Found, MonitorError, MonitorSpec, SOURCE_POWERMETRICS};
use tokengun_common::PowerReading;
use tokengun_common::monitor::metric;

/// The device name used for the whole SoC.
pub const DEVICE: &str = "soc";

/// Cuts the byte stream into plist documents: at a NUL, or right after `</plist>` (so a sample
/// is seen when it ends, not one interval later when the next NUL comes).
#[derive(Debug, Default)]
pub struct PlistSplitter {
    buf: Vec<u8>,
}

const END: &[u8] = b"</plist>";

impl PlistSplitter {
    /// Feeds bytes; returns the documents completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == 0 {
                self.flush_into(&mut out);
                continue;
            }
            self.buf.push(b);
            if b == b'>' && self.buf.ends_with(END) {
                self.flush_into(&mut out);
            }
        }
        out
    }

    fn flush_into(&mut self, out: &mut Vec<Vec<u8>>) {
        let doc = std::mem::take(&mut self.buf);
        if doc.iter().any(|b| !b.is_ascii_whitespace()) {
            out.push(doc);
        }
    }
}

/// The figures of one powermetrics sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PmSample {
    pub elapsed_ns: u64,
    pub cpu_power_w: Option<f64>,
    pub gpu_power_w: Option<f64>,
    pub ane_power_w: Option<f64>,
    /// CPU + GPU + ANE.
    pub power_w: Option<f64>,
    /// CPU + GPU + ANE energy over the sample's window, J.
    pub energy_j: Option<f64>,
    /// `gpu.freq_hz`, which is in MHz despite its name.
    pub gpu_freq_mhz: Option<f64>,
    /// 100 x (1 - `gpu.idle_ratio`).
    pub gpu_busy_pct: Option<f64>,
    /// Nominal 0, Moderate 1, Heavy 2, Trapping 3, Sleeping/Critical 4.
    pub thermal_pressure: Option<f64>,
}

/// A document could not be read as a powermetrics sample.
#[derive(Debug, thiserror::Error)]
pub enum PmError {
    #[error("powermetrics sent a document that is not a plist: {0}")]
    Plist(#[from] plist::Error),
    #[error("powermetrics sent a plist without {0}")]
    Missing(&'static str),
}

fn num(v: Option<&plist::Value>) -> Option<f64> {
    match v? {
        plist::Value::Real(r) => Some(*r),
        plist::Value::Integer(i) => i.as_signed().map(|i| i as f64),
        _ => None,
    }
}

/// Parses one document. Reads into `plist::Value` (which keeps one of the real tool's duplicated
/// `gpu.idle_ratio` / `gpu.idle_ns` keys) and picks fields by hand. Power comes from the `*_power`
/// keys (mW) or, on older macOS that only has `*_energy` (mJ), from energy over `elapsed_ns`.
pub fn parse_sample(doc: &[u8]) -> Result<PmSample, PmError> {
    let v = plist::Value::from_reader_xml(std::io::Cursor::new(doc))?;
    let root = v
        .as_dictionary()
        .ok_or(PmError::Missing("a top-level dict"))?;
    let elapsed_ns = num(root.get("elapsed_ns"))
        .filter(|e| *e > 0.0)
        .ok_or(PmError::Missing("elapsed_ns"))? as u64;
    let elapsed_s = elapsed_ns as f64 / 1e9;
    let processor = root.get("processor").and_then(plist::Value::as_dictionary);
    // `processor` is absent only when the cpu_power sampler was not asked for.
    let part = |name: &str| -> (Option<f64>, Option<f64>) {
        let Some(p) = processor else {
            return (None, None);
        };
        let energy_mj = num(p.get(&format!("{name}_energy")));
        let power_w = num(p.get(&format!("{name}_power")))
            .map(|mw| mw / 1e3)
            .or_else(|| energy_mj.map(|mj| mj / 1e3 / elapsed_s));
        (power_w, energy_mj.map(|mj| mj / 1e3))
    };
    let (cpu_w, cpu_j) = part("cpu");
    let (gpu_w, gpu_j) = part("gpu");
    let (ane_w, ane_j) = part("ane");
    let sum = |xs: [Option<f64>; 3]| {
        xs.iter()
            .any(Option::is_some)
            .then(|| xs.iter().flatten().sum::<f64>())
    };
    let power_w = processor
        .and_then(|p| num(p.get("combined_power")))
        .map(|mw| mw / 1e3)
        .or_else(|| sum([cpu_w, gpu_w, ane_w]));
    let energy_j = sum([cpu_j, gpu_j, ane_j]).or_else(|| power_w.map(|w| w * elapsed_s));
    let gpu = root.get("gpu").and_then(plist::Value::as_dictionary);
    let gpu_freq_mhz = gpu.and_then(|g| num(g.get("freq_hz")));
    let gpu_busy_pct = gpu
        .and_then(|g| num(g.get("idle_ratio")))
        .map(|idle| (100.0 * (1.0 - idle)).clamp(0.0, 100.0));
    let thermal_pressure = root
        .get("thermal_pressure")
        .and_then(plist::Value::as_string)
        .and_then(tokengun_common::monitor::pressure::thermal_from_name)
        .map(f64::from);
    Ok(PmSample {
        elapsed_ns,
        cpu_power_w: cpu_w,
        gpu_power_w: gpu_w,
        ane_power_w: ane_w,
        power_w,
        energy_j,
        gpu_freq_mhz,
        gpu_busy_pct,
        thermal_pressure,
    })
}

/// Turns samples into readings stamped when each arrived, keeping a cumulative energy counter
/// (the sum of the per-window energies powermetrics reports).
#[derive(Debug, Default)]
pub struct PmReadings {
    energy_total_j: f64,
}

impl PmReadings {
    /// The readings of one sample that completed at `t_ns` (its window is `[t - elapsed, t]`).
    pub fn readings(&mut self, t_ns: u64, s: &PmSample) -> Vec<PowerReading> {
        let mut out = Vec::new();
        let mut push = |m: &str, v: Option<f64>| {
            if let Some(value) = v {
                out.push(PowerReading {
                    t_ns,
                    source: SOURCE_POWERMETRICS.into(),
                    device: DEVICE.into(),
                    metric: m.into(),
                    value,
                });
            }
        };
        if let Some(e) = s.energy_j {
            self.energy_total_j += e;
            push(metric::ENERGY_J, Some(self.energy_total_j));
        }
        push(metric::POWER_W, s.power_w);
        push(metric::CPU_POWER_W, s.cpu_power_w);
        push(metric::GPU_POWER_W, s.gpu_power_w);
        push(metric::ANE_POWER_W, s.ane_power_w);
        push(metric::FREQ_MHZ, s.gpu_freq_mhz);
        push(metric::BUSY_PCT, s.gpu_busy_pct);
        push(metric::THERMAL_PRESSURE, s.thermal_pressure);
        out
    }
}

/// What `powermetrics` says when it is not run as root.
pub const NOT_ROOT: &str = "must be invoked as the superuser";

/// The advice given when powermetrics cannot run for lack of root.
pub const HOW_TO_ROOT: &str = "powermetrics needs root: run the agent with sudo \
(`sudo tokengun-agent serve`), allow it without a password in sudoers, or install the launchd \
daemon in deploy/ (it runs as root)";

/// The power-source table's entry: a `powermetrics` child on macOS, started directly (the agent
/// is root) or through `sudo -n` (a NOPASSWD rule), once it has sent a first sample.
#[cfg(target_os = "macos")]
pub(super) fn detect(spec: &MonitorSpec) -> Result<Found, MonitorError> {
    use std::time::{Duration, Instant};
    if !std::path::Path::new("/usr/bin/powermetrics").exists() {
        return Err(MonitorError::unavailable("/usr/bin/powermetrics not found"));
    }
    let interval_ms = u64::try_from(spec.power_interval.as_millis())
        .unwrap_or(1000)
        .max(250);
    let mut last_err = None;
    // `sudo -n` only when --power powermetrics asked for it (auto uses powermetrics as root only).
    let tries: &[bool] = if spec.allow_sudo {
        &[false, true]
    } else {
        &[false]
    };
    for &sudo in tries {
        let Ok(mut pm) = Powermetrics::spawn(interval_ms, sudo) else {
            continue;
        };
        // The first sample comes one interval in; a refusal comes at once.
        let deadline = Instant::now() + Duration::from_millis(interval_ms * 3 + 1500);
        let mut first = Vec::new();
        while Instant::now() < deadline {
            match pm.sample(0, &mut first) {
                Err(e) => {
                    last_err = Some(e);
                    break;
                }
                Ok(()) if !first.is_empty() => {
                    let how = if sudo { " (through sudo -n)" } else { "" };
                    let detail = format!(
                        "Apple Silicon SoC: CPU, GPU, ANE power, GPU frequency and residency{how}"
                    );
                    return Ok(Found::new(detail, pm));
                }
                Ok(()) => std::thread::park_timeout(Duration::from_millis(50)),
            }
        }
    }
    Err(last_err.unwrap_or_else(|| MonitorError::unavailable(HOW_TO_ROOT)))
}

/// The power-source table's entry: powermetrics is macOS only.
#[cfg(not(target_os = "macos"))]
pub(super) fn detect(_spec: &MonitorSpec) -> Result<Found, MonitorError> {
    Err(MonitorError::unavailable("macOS only"))
}

/// A running `powermetrics` child, read on a thread of its own.
#[cfg(target_os = "macos")]
pub struct Powermetrics {
    child: std::process::Child,
    pending: std::sync::Arc<std::sync::Mutex<(Vec<PowerReading>, Option<MonitorError>)>>,
}

#[cfg(target_os = "macos")]
impl Powermetrics {
    /// Starts `powermetrics` (through `sudo -n` when `sudo` is true) sampling every `interval_ms`.
    pub fn spawn(interval_ms: u64, sudo: bool) -> std::io::Result<Self> {
        use std::io::Read;
        use std::process::{Command, Stdio};
        let args = [
            "--samplers",
            "cpu_power,gpu_power,thermal",
            "-f",
            "plist",
            "--handle-invalid-values",
            "-i",
        ];
        let mut cmd = if sudo {
            let mut c = Command::new("sudo");
            c.args(["-n", "/usr/bin/powermetrics"]);
            c
        } else {
            Command::new("/usr/bin/powermetrics")
        };
        let mut child = cmd
            .args(args)
            .arg(interval_ms.max(100).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let pending = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), None)));
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("no stderr"))?;
        let sink = pending.clone();
        std::thread::Builder::new()
            .name("powermetrics".into())
            .spawn(move || {
                let mut split = PlistSplitter::default();
                let mut conv = PmReadings::default();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match stdout.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    for doc in split.feed(&buf[..n]) {
                        let t = crate::clock::mono_ns();
                        let mut g = sink.lock().unwrap_or_else(|p| p.into_inner());
                        match parse_sample(&doc) {
                            Ok(s) => g.0.extend(conv.readings(t, &s)),
                            Err(e) => g.1 = Some(e.into()),
                        }
                    }
                }
                let mut err = String::new();
                let _ = stderr.read_to_string(&mut err);
                let mut g = sink.lock().unwrap_or_else(|p| p.into_inner());
                let why = if err.contains(NOT_ROOT) {
                    MonitorError::unavailable(HOW_TO_ROOT)
                } else {
                    MonitorError::device("powermetrics stopped", err.trim())
                };
                g.1 = Some(why);
            })?;
        Ok(Self { child, pending })
    }
}

#[cfg(target_os = "macos")]
impl PowerSource for Powermetrics {
    fn sample(&mut self, _t_ns: u64, out: &mut Vec<PowerReading>) -> Result<(), MonitorError> {
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        out.append(&mut g.0);
        match g.1.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(target_os = "macos")]
impl Drop for Powermetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = format!(
            "{}/tests/fixtures/power/powermetrics/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&p).unwrap()
    }

    /// The real tool repeats `idle_ratio` in the gpu dict; the fixtures lost that duplicate.
    fn with_duplicate_idle_ratio(doc: &[u8]) -> Vec<u8> {
        let s = String::from_utf8(doc.to_vec()).unwrap();
        let marker = "<key>gpu_energy</key><integer>";
        let at = s.rfind(marker).unwrap();
        let mut out = s[..at].to_string();
        out.push_str("<key>idle_ratio</key><real>0.5</real>\n      ");
        out.push_str(&s[at..]);
        out.into_bytes()
    }

    #[test]
    fn m2_ultra_under_load() {
        let s = parse_sample(&fixture("m2ultra.plist")).unwrap();
        assert_eq!(s.elapsed_ns, 1_023_721_416);
        assert!((s.gpu_power_w.unwrap() - 70.9246).abs() < 1e-4, "{s:?}");
        assert!((s.cpu_power_w.unwrap() - 0.835188).abs() < 1e-6);
        assert!((s.power_w.unwrap() - 71.7598).abs() < 1e-4);
        // gpu.freq_hz is MHz.
        assert!((s.gpu_freq_mhz.unwrap() - 1360.85).abs() < 1e-6);
        assert!((s.gpu_busy_pct.unwrap() - 94.63218).abs() < 1e-3);
        assert_eq!(s.thermal_pressure, Some(0.0));
        // Energy over the window agrees with power x elapsed (72607 + 855 mJ over 1.0237 s).
        let e = s.energy_j.unwrap();
        assert!((e - (72.607 + 0.855)).abs() < 1e-9);
        assert!((e / 1.023_721_416 - s.power_w.unwrap()).abs() < 0.1);
    }

    #[test]
    fn m1_idle_and_the_duplicated_key() {
        let s = parse_sample(&with_duplicate_idle_ratio(&fixture("m1.plist"))).unwrap();
        assert!((s.power_w.unwrap() - 0.0594301).abs() < 1e-7);
        assert!((s.gpu_freq_mhz.unwrap() - 714.836).abs() < 1e-6);
        // One of the two values is kept, never an error.
        let busy = s.gpu_busy_pct.unwrap();
        assert!(
            (busy - 1.6659).abs() < 1e-3 || (busy - 50.0).abs() < 1e-9,
            "{busy}"
        );
    }

    #[test]
    fn older_macos_without_power_keys() {
        let doc = String::from_utf8(fixture("m1.plist")).unwrap();
        let mut lines: Vec<&str> = doc.lines().collect();
        // Drop every `*_power` key and the value after it, as macOS 12 sent them.
        let mut i = 0;
        while i < lines.len() {
            if lines[i].contains("_power</key>") {
                let drop_next = !lines[i].contains("<real>");
                lines.remove(i);
                if drop_next {
                    lines.remove(i);
                }
            } else {
                i += 1;
            }
        }
        let s = parse_sample(lines.join("\n").as_bytes()).unwrap();
        // 89 mJ CPU + 31 mJ GPU over 2.019 s.
        assert!(
            (s.power_w.unwrap() - 0.120 / 2.019_178_75).abs() < 1e-9,
            "{s:?}"
        );
        assert!((s.cpu_power_w.unwrap() - 0.0440773).abs() < 1e-4);
    }

    #[test]
    fn stream_in_any_chunk_size() {
        // Three samples as the tool sends them: NUL before each later document.
        let docs = [
            fixture("m1.plist"),
            fixture("m1-2.plist"),
            with_duplicate_idle_ratio(&fixture("m2ultra.plist")),
        ];
        let mut stream = Vec::new();
        for (i, d) in docs.iter().enumerate() {
            if i > 0 {
                stream.push(0);
            }
            stream.extend_from_slice(d);
            stream.push(b'\n');
        }
        let expect: Vec<PmSample> = docs.iter().map(|d| parse_sample(d).unwrap()).collect();
        for chunk in [1usize, 7, 13, 4096, stream.len()] {
            let mut split = PlistSplitter::default();
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                for doc in split.feed(c) {
                    got.push(parse_sample(&doc).unwrap());
                }
            }
            assert_eq!(got, expect, "chunk size {chunk}");
        }
    }

    #[test]
    fn readings_keep_a_cumulative_counter() {
        let s = parse_sample(&fixture("m2ultra.plist")).unwrap();
        let mut conv = PmReadings::default();
        let first = conv.readings(1_000, &s);
        let second = conv.readings(2_000, &s);
        let energy = |rs: &[PowerReading]| {
            rs.iter()
                .find(|r| r.metric == metric::ENERGY_J)
                .unwrap()
                .value
        };
        assert!((energy(&second) - 2.0 * energy(&first)).abs() < 1e-9);
        assert!(first.iter().any(|r| r.metric == metric::FREQ_MHZ));
        assert!(
            first
                .iter()
                .all(|r| r.source == "powermetrics" && r.device == "soc")
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_sample(b"<plist><dict><key>x</key>").is_err());
        assert!(parse_sample(b"not xml at all").is_err());
    }
}
