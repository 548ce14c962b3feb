//! `tokengun-agent probe`: what each monitor source finds here, and (with --sample) its readings;
//! `--json` prints the same as one JSON document (README "Probe output"), which a Mac user can
//! send back to be made into a test fixture.

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
    /// Apple Silicon power source: auto (IOReport without root, else powermetrics when running
    /// as root, else none, saying why), ioreport, powermetrics (as root or through sudo -n) or
    /// none. The IOReport, per-process energy and pressure readers were type-checked for
    /// aarch64-apple-darwin by tokengun's CI, never run there: `probe --json --sample 5s` output
    /// from a Mac is what turns them into tested fixtures.
    #[arg(long, default_value = "auto", value_parser = super::power_choice)]
    power: tokengun_common::sources::PowerChoice,
    /// Print one JSON document (sources, what is watched, the power line, readings and
    /// per-device summary with --sample) instead of text.
    #[arg(long)]
    json: bool,
}

/// What `--sample` read: each reading with its seconds since the start, and the per-device
/// summary lines.
struct Sampled {
    readings: Vec<(f64, tokengun_common::PowerReading)>,
    window: Option<tokengun_common::monitor::WindowEnergy>,
    warnings: Vec<String>,
}

/// Probes every source and prints what it found; with `--sample`, reads the power sources too.
pub(super) async fn exec(args: ProbeArgs) -> Result<(), CmdError> {
    let ProbeArgs {
        watch_process,
        target,
        sample,
        interval,
        power,
        json,
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
        power_choice: power,
        ..MonitorSpec::default()
    };
    let probe_spec = spec.clone();
    let Ok((sources, watching)) =
        tokio::task::spawn_blocking(move || monitor::probe(&probe_spec)).await
    else {
        return Err(CmdError::failed("the probe failed"));
    };
    let sampled = if sample.is_zero() {
        None
    } else {
        let s = tokio::task::spawn_blocking(move || sample_for(&spec, sample, interval))
            .await
            .map_err(|e| CmdError::Failed(format!("sampling failed: {e}")))?;
        Some(s)
    };
    if json {
        println!(
            "{}",
            probe_json(power, &sources, &watching, sampled.as_ref())
        );
    } else {
        print_text(&sources, &watching, sampled.as_ref());
    }
    match sampled {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

fn print_text(
    sources: &[tokengun_common::SourceStatus],
    watching: &[String],
    sampled: Option<&Result<Sampled, CmdError>>,
) {
    for s in sources {
        println!(
            "{:<13} {:<11} {}",
            s.source,
            if s.available { "found" } else { "unavailable" },
            s.detail
        );
    }
    for w in watching {
        println!("  watching: {w}");
    }
    let Some(Ok(s)) = sampled else {
        return;
    };
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    println!("t_s,source,device,metric,value");
    for (t, r) in &s.readings {
        println!("{t:.3},{},{},{},{}", r.source, r.device, r.metric, r.value);
    }
    if let Some(w) = &s.window {
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
    }
}

/// The probe as one JSON document (its fields are listed in the README's "Probe output").
fn probe_json(
    power: tokengun_common::sources::PowerChoice,
    sources: &[tokengun_common::SourceStatus],
    watching: &[String],
    sampled: Option<&Result<Sampled, CmdError>>,
) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "tokengun_agent": env!("CARGO_PKG_VERSION"),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "power_choice": power.as_str(),
        "power": monitor::power_line(power, sources),
        "sources": sources,
        "watching": watching,
        // What no CI run has exercised: tokengun's CI type-checks the macOS readers only.
        "macos_type_checked_only": [
            "ioreport",
            "processes energy_j/power_w",
            "thermal_pressure",
            "mem_pressure",
            "swap_used_bytes"
        ],
    });
    match sampled {
        Some(Ok(s)) => {
            doc["readings"] = s
                .readings
                .iter()
                .map(|(t, r)| {
                    serde_json::json!({"t_s": t, "source": r.source, "device": r.device, "metric": r.metric, "value": r.value})
                })
                .collect();
            doc["window"] = serde_json::to_value(&s.window).unwrap_or_default();
            doc["warnings"] = serde_json::json!(s.warnings);
        }
        Some(Err(e)) => doc["sample_error"] = serde_json::json!(e.to_string()),
        None => {}
    }
    doc
}

/// Reads every available power source for `sample`, keeping each reading, then the window's
/// energy per device.
fn sample_for(
    spec: &MonitorSpec,
    sample: Duration,
    interval: Duration,
) -> Result<Sampled, CmdError> {
    let (_, mut sources) = monitor::detect_power(spec);
    if sources.is_empty() {
        return Err(CmdError::Nothing(
            "no power source to sample on this machine".into(),
        ));
    }
    let start = clock::mono_ns();
    let end = start + u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
    let mut series = PowerSeries::default();
    let mut next = std::time::Instant::now();
    let mut first_t: Option<u64> = None;
    let mut out = Sampled {
        readings: Vec::new(),
        window: None,
        warnings: Vec::new(),
    };
    while clock::mono_ns() < end {
        let t = clock::mono_ns();
        first_t.get_or_insert(t);
        let mut got = Vec::new();
        for s in sources.iter_mut() {
            if let Err(e) = s.sample(t, &mut got) {
                out.warnings.push(e.to_string());
            }
        }
        for r in got {
            series.add(&r);
            out.readings
                .push((r.t_ns.saturating_sub(start) as f64 / 1e9, r));
        }
        next += interval;
        std::thread::park_timeout(next.saturating_duration_since(std::time::Instant::now()));
    }
    out.warnings.dedup();
    // From the first reading to the last: the span every series (and counter) covers.
    let first = first_t.unwrap_or(start);
    let last = series.latest_ns().unwrap_or(first);
    out.window = series.window(first, last);
    if out.window.is_none() {
        return Err(CmdError::Nothing(format!(
            "no power readings came in {sample:?}"
        )));
    }
    Ok(out)
}
