//! `tokengun-agent probe`: what each monitor source finds here, and (with --sample) its readings.

use super::CmdError;
use crate::clock;
use crate::monitor::{self, MonitorSpec};
use clap::Args;
use std::time::Duration;
use tokengun_common::monitor::PowerSeries;
use tokengun_common::sources::Watch;

#[derive(Args)]
pub(super) struct ProbeArgs {
    /// Process name or pattern to watch, as pgrep matches it, or pid:N (repeatable).
    #[arg(long = "watch-process", value_name = "PATTERN")]
    watch_process: Vec<String>,
    /// The inference server's URL: a local one's listening process is found and watched.
    #[arg(long, default_value = tokengun_common::defaults::TARGET)]
    target: String,
    /// Read the power sources for this long and print every reading as CSV, then the mean
    /// power and energy per device (e.g. 5s; 0 = only probe).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    sample: Duration,
    /// Between power readings with --sample (e.g. 200ms).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    interval: Duration,
}

/// Probes every source and prints what it found; with `--sample`, reads the power sources too.
pub(super) async fn exec(args: ProbeArgs) -> Result<(), CmdError> {
    let ProbeArgs {
        watch_process,
        target,
        sample,
        interval,
    } = args;
    if interval < monitor::MIN_INTERVAL {
        return Err(CmdError::Usage(format!(
            "--interval must be at least {:?}",
            monitor::MIN_INTERVAL
        )));
    }
    for w in &watch_process {
        Watch::parse(w).map_err(CmdError::usage)?;
    }
    let spec = MonitorSpec {
        watch_process,
        target_url: target,
        power_interval: interval,
        ..MonitorSpec::default()
    };
    let probe_spec = spec.clone();
    let Ok((sources, watching)) =
        tokio::task::spawn_blocking(move || monitor::probe(&probe_spec)).await
    else {
        return Err(CmdError::failed("the probe failed"));
    };
    for s in &sources {
        println!(
            "{:<13} {:<11} {}",
            s.source,
            if s.available { "found" } else { "unavailable" },
            s.detail
        );
    }
    for w in &watching {
        println!("  watching: {w}");
    }
    if sample.is_zero() {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || sample_for(&spec, sample, interval))
        .await
        .map_err(|e| CmdError::Failed(format!("sampling failed: {e}")))?
}

/// Reads every available power source for `sample`, printing readings as CSV, then a summary.
fn sample_for(spec: &MonitorSpec, sample: Duration, interval: Duration) -> Result<(), CmdError> {
    let (_, mut sources) = monitor::detect_power(spec);
    if sources.is_empty() {
        return Err(CmdError::Nothing(
            "no power source to sample on this machine".into(),
        ));
    }
    println!("t_s,source,device,metric,value");
    let start = clock::mono_ns();
    let end = start + u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
    let mut series = PowerSeries::default();
    let mut next = std::time::Instant::now();
    let mut first_t: Option<u64> = None;
    while clock::mono_ns() < end {
        let t = clock::mono_ns();
        first_t.get_or_insert(t);
        let mut out = Vec::new();
        for s in sources.iter_mut() {
            if let Err(e) = s.sample(t, &mut out) {
                eprintln!("warning: {e}");
            }
        }
        for r in &out {
            println!(
                "{:.3},{},{},{},{}",
                (r.t_ns - start) as f64 / 1e9,
                r.source,
                r.device,
                r.metric,
                r.value
            );
            series.add(r);
        }
        next += interval;
        std::thread::park_timeout(next.saturating_duration_since(std::time::Instant::now()));
    }
    // From the first reading to the last: the span every series (and counter) covers.
    let first = first_t.unwrap_or(start);
    let last = series.latest_ns().unwrap_or(first);
    match series.window(first, last) {
        Some(w) => {
            for d in &w.devices {
                println!(
                    "# {} {}: mean {:.2} W, peak {} W, {:.3} J over {:.2} s ({})",
                    d.source,
                    d.device,
                    d.mean_power_w,
                    d.peak_power_w.map_or("-".into(), |p| format!("{p:.2}")),
                    d.energy_j,
                    w.duration_s,
                    d.method.as_str()
                );
            }
            Ok(())
        }
        None => Err(CmdError::Nothing(format!(
            "no power readings came in {sample:?}"
        ))),
    }
}
