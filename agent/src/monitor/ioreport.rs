//! Apple Silicon power without root: IOReport's "Energy Model" and "GPU Stats" windows (read by
//! `tokengun-macos` through macmon), checked for counters that read 0 before they are used, and
//! turned into readings by `tokengun_common::monitor::apple`. Type-checked in CI, not run there.

use super::{Found, MonitorError, MonitorSpec};

/// How many windows the probe reads before it trusts the counters.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
const PROBE_WINDOWS: usize = 3;

/// The power-source table's entry: an IOReport reader, once its first windows show live counters.
#[cfg(target_os = "macos")]
pub(super) fn detect(spec: &MonitorSpec) -> Result<Found, MonitorError> {
    use std::time::{Duration, Instant};
    use tokengun_common::monitor::apple::{Liveness, energy, residency_mhz};
    // The probe's windows are short: liveness is a question of zero or not.
    let stream = tokengun_macos::ioreport::Stream::start(Duration::from_millis(250))
        .map_err(|e| MonitorError::device("IOReport", e))?;
    let mut live = Liveness::default();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while seen < PROBE_WINDOWS && Instant::now() < deadline {
        for (_, w) in stream
            .drain()
            .map_err(|e| MonitorError::device("IOReport", e))?
        {
            let e =
                energy(&w.energy).map_err(|e| MonitorError::Unavailable(e.to_string().into()))?;
            let busy = residency_mhz(&w.gpu_states, &w.gpu_freqs_mhz).map(|c| c.active_ratio);
            live.add(&e, busy);
            seen += 1;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
    live.verdict()
        .map_err(|e| MonitorError::Unavailable(e.to_string().into()))?;
    let detail = stream.detail.clone();
    drop(stream);
    let interval = spec.power_interval.max(Duration::from_millis(100));
    let stream = tokengun_macos::ioreport::Stream::start(interval)
        .map_err(|e| MonitorError::device("IOReport", e))?;
    Ok(Found::new(
        detail,
        IoReport {
            stream,
            conv: tokengun_common::monitor::apple::SocReadings::default(),
        },
    ))
}

/// The power-source table's entry: IOReport is macOS only.
#[cfg(not(target_os = "macos"))]
pub(super) fn detect(_spec: &MonitorSpec) -> Result<Found, MonitorError> {
    Err(MonitorError::unavailable("macOS only"))
}

/// A running IOReport reader and its arithmetic.
#[cfg(target_os = "macos")]
struct IoReport {
    stream: tokengun_macos::ioreport::Stream,
    conv: tokengun_common::monitor::apple::SocReadings,
}

#[cfg(target_os = "macos")]
impl super::PowerSource for IoReport {
    fn sample(
        &mut self,
        _t_ns: u64,
        out: &mut Vec<tokengun_common::PowerReading>,
    ) -> Result<(), MonitorError> {
        let windows = self
            .stream
            .drain()
            .map_err(|e| MonitorError::device("IOReport", e))?;
        // A window that cannot be read is left out (and said); the others still count.
        let mut first_err = None;
        for (end, w) in windows {
            let t = crate::clock::at(end);
            match self.conv.readings(super::SOURCE_IOREPORT, t, &w) {
                Ok(rs) => out.extend(rs),
                Err(e) => {
                    first_err.get_or_insert(MonitorError::Unavailable(e.to_string().into()));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
