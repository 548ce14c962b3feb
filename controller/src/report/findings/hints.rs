//! Bottleneck hints (registered in `FINDINGS`): each only when its data exist, said with the
//! numbers behind it.

use super::{Ctx, highest, lowest, pct};
use crate::report::load::LevelRow;
use crate::report::util::{fmt_bytes, fmt_num, fmt_s};

/// Fewer streams at once than requests in flight: the rest waited in the server's queue.
pub(super) fn queueing(c: &Ctx<'_>) -> Option<String> {
    let (_, last) = c.first_last()?;
    let (streams, in_flight) = (last.max_streaming?, last.peak_concurrency);
    if streams == 0 || f64::from(streams) > 0.75 * f64::from(in_flight) {
        return None;
    }
    let same: Vec<&str> = c
        .whole
        .iter()
        .filter(|l| l.max_streaming == Some(streams))
        .map(|l| l.label.as_str())
        .collect();
    Some(format!(
        "Queueing: at {} at most {streams} requests streamed at once while {in_flight} were in flight; the rest waited for their first token (TTFT p50 {}, p99 {}). The server appears to serve about {streams} at a time (the same most-at-once at level(s) {}).",
        c.name(last),
        last.ttft.p50_s.map_or("?".into(), fmt_s),
        last.ttft.p99_s.map_or("?".into(), fmt_s),
        same.join(", ")
    ))
}

/// TTFT growing past the knee while throughput is flat.
pub(super) fn waiting_past_the_knee(c: &Ctx<'_>) -> Option<String> {
    let (_, last) = c.first_last()?;
    let k = c.knee_level?;
    let (a, b) = (k.ttft.p50_s?, last.ttft.p50_s?);
    if k.label == last.label || a <= 0.0 || b < 2.0 * a {
        return None;
    }
    Some(format!(
        "Waiting grows past the knee: TTFT p50 rose from {} at {} to {} at {} while aggregate throughput changed by {:+.1}%: added requests waited rather than added throughput.",
        fmt_s(a),
        c.name(k),
        fmt_s(b),
        c.name(last),
        (last.aggregate_tokens_per_s / k.aggregate_tokens_per_s.max(1e-9) - 1.0) * 100.0
    ))
}

/// The per-request decode rate shared among streams (batching).
pub(super) fn shared_decode(c: &Ctx<'_>) -> Option<String> {
    let (first, last) = c.first_last()?;
    let (a, b) = (
        first.mean_request_tokens_per_s?,
        last.mean_request_tokens_per_s?,
    );
    if a <= 0.0 || b >= 0.7 * a {
        return None;
    }
    Some(format!(
        "Shared decode: the mean per-request rate fell from {} tokens/s at {} to {} at {} ({:+.0}%): concurrent streams share the server's decode capacity.",
        fmt_num(a),
        c.name(first),
        fmt_num(b),
        c.name(last),
        (b / a - 1.0) * 100.0
    ))
}

/// The machine's CPUs pegged on the plateau: by the server, or by something else on the machine.
pub(super) fn machine_cpu(c: &Ctx<'_>) -> Option<String> {
    let l = c
        .plateau
        .iter()
        .find(|l| l.machine_cpu_pct_mean.is_some_and(|m| m >= 90.0))?;
    let busy = fmt_num(l.machine_cpu_pct_mean.unwrap_or(0.0));
    Some(match (l.server_cpu_pct_mean(), l.machine_cpu_count) {
        (Some(s), Some(n)) if s >= 0.9 * 100.0 * n => format!(
            "CPU-bound: at {} the server's processes kept {} of the machine's {} CPUs busy ({busy}% of the machine), on the throughput plateau.",
            c.name(l),
            fmt_num(s / 100.0),
            fmt_num(n)
        ),
        (Some(s), Some(n)) => format!(
            "CPU: the machine was {busy}% busy at {}, on the throughput plateau, but the server's own processes used {} of its {} CPUs ({}%): the rest was other processes (the load generator, if it runs here). The machine, not the server alone, was short of CPU.",
            c.name(l),
            fmt_num(s / 100.0),
            fmt_num(n),
            fmt_num(s / n)
        ),
        _ => format!(
            "CPU: the machine's CPUs were {busy}% busy on average at {}, on the throughput plateau. Whether the server is CPU-bound depends on its share of that: the load generator and other processes run on the same CPUs.",
            c.name(l)
        ),
    })
}

/// The server's CPU at the knee against the last level.
pub(super) fn server_cpu_at_the_knee(c: &Ctx<'_>) -> Option<String> {
    let (_, last) = c.first_last()?;
    let k = c.knee_level?;
    let (a, b) = (k.server_cpu_pct_mean()?, last.server_cpu_pct_mean()?);
    if k.label == last.label {
        return None;
    }
    let flat = (b - a).abs() <= 0.1 * a.max(1.0);
    Some(format!(
        "Server CPU: {}% of a core at the knee ({}), {}% at {}{}.",
        fmt_num(a),
        c.name(k),
        fmt_num(b),
        c.name(last),
        if flat {
            ": flat while the load grew (no more CPU work past the knee; on its own this does not say whether CPU is the limit)"
        } else {
            ""
        }
    ))
}

/// The accelerator busy on the whole plateau.
pub(super) fn gpu_saturated(c: &Ctx<'_>) -> Option<String> {
    if c.plateau.len() < 2 {
        return None;
    }
    let busy: Vec<f64> = c
        .plateau
        .iter()
        .filter_map(|l| l.gpu_busy_pct_mean)
        .collect();
    if busy.len() != c.plateau.len() || busy.iter().any(|b| *b < 90.0) {
        return None;
    }
    Some(format!(
        "GPU: busy {}–{}% from {} on, while throughput stayed flat: the accelerator looks saturated.",
        fmt_num(lowest(&busy)),
        fmt_num(highest(&busy)),
        c.name(c.plateau[0])
    ))
}

/// Power flat on the plateau while throughput is flat too.
pub(super) fn power_flat(c: &Ctx<'_>) -> Option<String> {
    if c.plateau.len() < 2 {
        return None;
    }
    let watts: Vec<f64> = c.plateau.iter().filter_map(|l| l.mean_power_w()).collect();
    if watts.len() != c.plateau.len() {
        return None;
    }
    let tp: Vec<f64> = c.plateau.iter().map(|l| l.aggregate_tokens_per_s).collect();
    let (lo, hi, tlo, thi) = (lowest(&watts), highest(&watts), lowest(&tp), highest(&tp));
    if lo <= 0.0 || hi > 1.05 * lo || thi > 1.10 * tlo {
        return None;
    }
    Some(format!(
        "Power flat: mean power stayed within {}–{} W from {} on while throughput stayed within {}–{} tokens/s: more load drew no more power, consistent with a device at its limit.",
        fmt_num(lo),
        fmt_num(hi),
        c.name(c.plateau[0]),
        fmt_num(tlo),
        fmt_num(thi)
    ))
}

/// The server's peak memory rising level after level.
pub(super) fn memory_climbing(c: &Ctx<'_>) -> Option<String> {
    let rss: Vec<(&LevelRow, f64)> = c
        .whole
        .iter()
        .filter_map(|l| l.server_rss_peak_bytes().map(|r| (*l, r)))
        .collect();
    let (&(la, a), &(lb, b)) = (rss.first()?, rss.last()?);
    let rising = rss.windows(2).all(|w| w[1].1 >= w[0].1);
    if a <= 0.0 || b < 1.2 * a || !rising {
        return None;
    }
    Some(format!(
        "Memory climbing: the server's peak memory rose level after level, from {} at {} to {} at {}.",
        fmt_bytes(a),
        c.name(la),
        fmt_bytes(b),
        c.name(lb)
    ))
}

/// The machine's memory nearly full at a level.
pub(super) fn memory_pressure(c: &Ctx<'_>) -> Option<String> {
    let l = c
        .whole
        .iter()
        .find(|l| l.machine_mem_used_peak_frac.is_some_and(|m| m >= 0.9))?;
    Some(format!(
        "Memory pressure: the machine's memory was {} used at its peak at {}.",
        pct(l.machine_mem_used_peak_frac.unwrap_or(0.0)),
        c.name(l)
    ))
}
