//! The agents' monitors around a sweep: started before it (with the idle-power baseline),
//! read between cycles until a cycle's closing power reading is in, and stopped after it.

use super::{RunError, ms};
use crate::fleet::{Fleet, Member};
use crate::link::LinkError;
use crate::plan::{MonitorConfig, RunConfig};
use crate::sinks::console::Console;
use crate::sinks::monitor::{MonitorInfo, MonitorSink};
use crate::sinks::run_folder::{Manifest, RunDir};
use std::time::Duration;
use tokengun_common::{Api, RecordBody};
use tokio_util::sync::CancellationToken;

/// Starts every agent's monitors and the run's monitor files. A monitor that cannot start is a
/// warning: the load is measured without it.
pub async fn start_monitoring(
    cfg: &RunConfig,
    up: &mut Fleet,
    api: Api,
    dir: &RunDir,
    console: &mut Console,
    manifest: &mut Manifest,
) -> Result<Option<MonitorSink>, RunError> {
    let spec = tokengun_proto::MonitorSpec {
        watch_process: cfg.monitor.watch_process.clone(),
        target_url: up.target.clone(),
        process_interval_ms: ms(cfg.monitor.process_interval),
        power_interval_ms: ms(cfg.monitor.power_interval),
        power: true,
        server_hint: if api.family() == "ollama" {
            "ollama".into()
        } else {
            String::new()
        },
        server_metrics_url: cfg.monitor.server_metrics.url(&up.target, api),
        // Empty: each agent's own --power (auto for the agent inside `tokengun run`).
        power_choice: cfg
            .monitor
            .power
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
    };
    let mut sink = MonitorSink::new(dir.root());
    let mut info = MonitorInfo {
        sources: Vec::new(),
        watching: Vec::new(),
        process_interval_ms: ms(cfg.monitor.process_interval),
        power_interval_ms: ms(cfg.monitor.power_interval),
        baseline_s: None,
        baseline_power_w: None,
    };
    let many = up.members.len() > 1;
    for m in &mut up.members {
        let reply = match m.link.start_monitor(spec.clone()).await {
            Ok(r) => r,
            Err(LinkError::Refused {
                code: tonic::Code::InvalidArgument,
                message,
                ..
            }) => {
                // A bad --watch-process pattern: the user's mistake, said before any load.
                return Err(RunError::Monitor(message));
            }
            Err(e) => {
                let w = format!("monitoring is off on {} for this run: {e}", m.label);
                console.line(&format!("warning: {w}"));
                manifest.notes.push(w);
                continue;
            }
        };
        let sources: Vec<tokengun_common::SourceStatus> =
            reply.sources.into_iter().map(Into::into).collect();
        let power: Vec<String> = sources
            .iter()
            .filter(|s| s.available && s.source != tokengun_common::sources::SOURCE_PROCESS)
            .map(|s| format!("{} ({})", s.source, s.detail))
            .collect();
        let prefix = if many {
            format!("{}: ", m.label)
        } else {
            String::new()
        };
        console.line(&format!(
            "monitor: {prefix}{} · power: {}",
            if reply.watching.is_empty() {
                "machine only".to_string()
            } else {
                reply.watching.join("; ")
            },
            if power.is_empty() {
                "none found (run.json monitor.sources, or `tokengun-agent probe`, says why)"
                    .to_string()
            } else {
                power.join(", ")
            }
        ));
        m.monitor = Some(sink.add_agent(&m.label, reply.now_mono_ns, !power.is_empty())?);
        m.monitor_origin = reply.now_mono_ns;
        info.sources.extend(sources.into_iter().map(|mut s| {
            if many {
                s.detail = format!("{}: {}", m.label, s.detail);
            }
            s
        }));
        info.watching
            .extend(reply.watching.into_iter().map(|w| format!("{prefix}{w}")));
    }
    if up.members.iter().all(|m| m.monitor.is_none()) {
        return Ok(None);
    }
    manifest.monitor = Some(info);
    Ok(Some(sink))
}

/// Reads records until `done(sink, events)` holds, `wait` passes or the user stops: monitor
/// records are taken, others (none are expected between cycles) only advance the sequence.
/// Ok(true): done held; Err: every stream broke.
pub async fn pump(
    up: &mut Fleet,
    sink: &mut MonitorSink,
    mut done: impl FnMut(&MonitorSink, &[Member]) -> bool,
    wait: Duration,
    stop: &CancellationToken,
) -> Result<bool, String> {
    let deadline = tokio::time::Instant::now() + wait;
    while !done(sink, &up.members) {
        tokio::select! {
            ev = up.events.recv() => match ev {
                Some((i, stream_no, item)) if stream_no == up.members[i].stream_no => match item {
                    Ok(r) if r.seq > up.members[i].last_seq => {
                        up.members[i].last_seq = r.seq;
                        if let (RecordBody::Monitor(b), Some(mi)) = (r.body, up.members[i].monitor) {
                            sink.take(mi, *b).map_err(|e| e.to_string())?;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        up.members[i].alive = false;
                        if up.alive().next().is_none() {
                            return Err(e.to_string());
                        }
                    }
                },
                Some(_) => {}
                None => return Err("the results streams ended".into()),
            },
            () = tokio::time::sleep_until(deadline) => return Ok(false),
            () = stop.cancelled() => return Ok(false),
        }
    }
    Ok(true)
}

/// Measures idle power before the sweep (summed over agents); None when it could not be.
pub async fn measure_baseline(
    m: &MonitorConfig,
    up: &mut Fleet,
    sink: &mut MonitorSink,
    console: &mut Console,
    stop: &CancellationToken,
) -> Option<f64> {
    console.line(&format!(
        "measuring idle power for {} before the sweep (--baseline)…",
        humantime::format_duration(m.baseline)
    ));
    sink.set_label(tokengun_common::run_dir::BASELINE_LABEL);
    let span = u64::try_from(m.baseline.as_nanos()).unwrap_or(u64::MAX);
    let windows: Vec<(usize, u64, u64)> = up
        .members
        .iter()
        .filter_map(|mb| Some((mb.monitor?, mb.monitor_origin, mb.monitor_origin + span)))
        .collect();
    let wait = m.baseline + m.power_interval * 3 + Duration::from_secs(1);
    let w2 = windows.clone();
    let r = pump(
        up,
        sink,
        |s, _| w2.iter().all(|&(i, _, end)| s.power_reached(i, end)),
        wait,
        stop,
    )
    .await;
    sink.set_label("");
    if let Err(e) = r {
        tracing::warn!("baseline: {e}");
        return None;
    }
    let parts: Vec<f64> = windows
        .iter()
        .filter_map(|&(i, from, to)| sink.energy(i, from, to).map(|w| w.mean_power_w))
        .collect();
    let w = (!parts.is_empty()).then(|| parts.iter().sum::<f64>());
    match w {
        Some(w) => console.line(&format!("  idle power {w:.1} W")),
        None => console.line("  idle power: no readings came; net figures are left out"),
    }
    w
}

/// Stops the agents' monitors and takes their last records (not from lost agents).
pub async fn finish_monitoring(up: &mut Fleet, sink: &mut MonitorSink) {
    let mut targets = Vec::new();
    for (i, m) in up.members.iter().enumerate().filter(|(_, m)| m.alive) {
        match m.link.stop_monitor().await {
            Ok(seq) => targets.push((i, seq)),
            Err(e) => tracing::warn!("stopping the monitor of {} failed: {e}", m.label),
        }
    }
    // Not cancellable: a Ctrl-C has already stopped the load; these are its last samples.
    let never = CancellationToken::new();
    let t2 = targets.clone();
    let _ = pump(
        up,
        sink,
        |_, members| {
            t2.iter()
                .all(|&(i, seq)| members[i].last_seq >= seq || !members[i].alive)
        },
        Duration::from_secs(5),
        &never,
    )
    .await;
    for (i, _) in targets {
        let m = &mut up.members[i];
        if m.alive && m.last_seq > m.acked {
            if let Err(e) = m.link.ack(m.last_seq).await {
                tracing::warn!("ack failed: {e}");
            } else {
                m.acked = m.last_seq;
            }
        }
    }
}
