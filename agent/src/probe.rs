//! `tokengun-agent probe`: what each monitor source finds here, and (with --sample) its readings.

use std::process::ExitCode;
use std::time::Duration;
use tokengun_agent::clock;
use tokengun_agent::monitor::{self, MonitorSpec};
use tokengun_common::monitor::PowerSeries;

pub async fn run(
    watch_process: Vec<String>,
    target: String,
    sample: Duration,
    interval: Duration,
) -> ExitCode {
    if interval < monitor::MIN_INTERVAL {
        eprintln!(
            "error: --interval must be at least {:?}",
            monitor::MIN_INTERVAL
        );
        return ExitCode::from(2);
    }
    for w in &watch_process {
        if let Err(e) = tokengun_common::sources::Watch::parse(w) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
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
        eprintln!("error: the probe failed");
        return ExitCode::FAILURE;
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
        return ExitCode::SUCCESS;
    }
    let result = tokio::task::spawn_blocking(move || sample_for(&spec, sample, interval)).await;
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: sampling failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads every available power source for `sample`, printing readings as CSV, then a summary.
fn sample_for(spec: &MonitorSpec, sample: Duration, interval: Duration) -> ExitCode {
    let (_, mut sources) = monitor::detect_power(spec);
    if sources.is_empty() {
        eprintln!("no power source to sample on this machine");
        return ExitCode::FAILURE;
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
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("no power readings came in {sample:?}");
            ExitCode::FAILURE
        }
    }
}
