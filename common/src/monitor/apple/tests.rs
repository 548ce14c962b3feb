//! The Apple Silicon arithmetic on recorded samples: powermetrics' own figures of the same
//! counters (agent/tests/fixtures/power/powermetrics) are what IOReport's deltas must give.

use super::*;

fn fixture(name: &str) -> String {
    let p = format!(
        "{}/../agent/tests/fixtures/power/powermetrics/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&p).unwrap()
}

/// The text of the value after `<key>{key}</key>` (from `from` on) inside `<{tag}>`, and where it
/// ends.
fn value_after<'a>(doc: &'a str, key: &str, tag: &str, from: usize) -> (&'a str, usize) {
    let k = format!("<key>{key}</key>");
    let at = doc[from..].find(&k).unwrap() + from + k.len();
    let open = format!("<{tag}>");
    let at = doc[at..].find(&open).unwrap() + at + open.len();
    let end = doc[at..].find('<').unwrap() + at;
    (&doc[at..end], end)
}

fn int_after(doc: &str, key: &str, from: usize) -> (i64, usize) {
    let (v, end) = value_after(doc, key, "integer", from);
    (v.parse().unwrap(), end)
}

fn real_after(doc: &str, key: &str, from: usize) -> f64 {
    value_after(doc, key, "real", from).0.parse().unwrap()
}

/// The GPU's residencies as IOReport's GPUPH channel has them: `OFF` (idle), then one state per
/// frequency of the table, from the fixture's `gpu.dvfm_states`.
fn gpu_states(doc: &str) -> (Vec<(String, i64)>, Vec<u32>, f64, f64) {
    let gpu = doc.find("<key>gpu</key>").unwrap();
    let (idle, _) = int_after(doc, "idle_ns", gpu);
    let arr = doc[gpu..].find("<key>dvfm_states</key>").unwrap() + gpu;
    let arr_end = doc[arr..].find("</array>").unwrap() + arr;
    let mut states = vec![("OFF".to_string(), idle)];
    let mut freqs = Vec::new();
    let mut at = arr;
    while let Some(i) = doc[at..arr_end].find("<key>freq</key>") {
        let (f, next) = int_after(doc, "freq", at + i);
        let (used, next) = int_after(doc, "used_ns", next);
        freqs.push(u32::try_from(f).unwrap());
        states.push((format!("P{}", freqs.len()), used));
        at = next;
    }
    (
        states,
        freqs,
        real_after(doc, "freq_hz", gpu),
        real_after(doc, "idle_ratio", gpu),
    )
}

fn ch(channel: &str, unit: &str, value: i64) -> EnergyChannel {
    EnergyChannel {
        channel: channel.into(),
        unit: unit.into(),
        value,
    }
}

#[test]
fn residency_gives_the_clock_powermetrics_reports() {
    for name in ["m2ultra.plist", "m1.plist"] {
        let doc = fixture(name);
        let (states, freqs, freq_mhz, idle_ratio) = gpu_states(&doc);
        let c = residency_mhz(&states, &freqs).unwrap();
        // powermetrics' gpu.freq_hz (MHz) is the same residency-weighted mean.
        assert!(
            (c.mhz - freq_mhz).abs() < 0.5,
            "{name}: {c:?} vs {freq_mhz}"
        );
        assert!(
            (c.active_ratio - (1.0 - idle_ratio)).abs() < 1e-3,
            "{name}: {c:?} vs idle {idle_ratio}"
        );
    }
}

#[test]
fn residency_that_does_not_fit_the_table_is_no_clock() {
    let s = |v: &[(&str, i64)]| {
        v.iter()
            .map(|(n, r)| (n.to_string(), *r))
            .collect::<Vec<_>>()
    };
    // Fewer states than frequencies: a different chip's table.
    assert_eq!(
        residency_mhz(&s(&[("OFF", 5), ("P1", 5)]), &[400, 800]),
        None
    );
    // Only OFF: no active states at all.
    assert_eq!(residency_mhz(&s(&[("OFF", 5)]), &[400]), None);
    assert_eq!(residency_mhz(&s(&[("OFF", 0), ("P1", 0)]), &[400]), None);
    // Idle the whole window: 0 MHz, 0 active, not NaN.
    let idle = residency_mhz(&s(&[("OFF", 10), ("P1", 0)]), &[400]).unwrap();
    assert_eq!((idle.mhz, idle.active_ratio), (0.0, 0.0));
}

#[test]
fn energy_deltas_over_the_measured_window_give_powermetrics_watts() {
    let doc = fixture("m2ultra.plist");
    let (elapsed, _) = int_after(&doc, "elapsed_ns", 0);
    let proc_at = doc.find("<key>cpu_energy</key>").unwrap();
    let (cpu_mj, _) = int_after(&doc, "cpu_energy", proc_at);
    let (gpu_mj, _) = int_after(&doc, "gpu_energy", proc_at);
    let combined_mw = real_after(&doc, "combined_power", proc_at);
    let gpu_mw = real_after(&doc, "gpu_power", proc_at);
    // The same counts in each unit IOReport labels them with.
    for (unit, k) in [("mJ", 1), ("uJ", 1_000), ("nJ", 1_000_000)] {
        let w = SocWindow {
            elapsed_ns: u64::try_from(elapsed).unwrap(),
            energy: vec![
                ch("CPU Energy", unit, cpu_mj * k),
                ch("GPU Energy", unit, gpu_mj * k),
                ch("ANE", unit, 0),
                ch("DRAM", unit, 2_000 * k),
                ch("PCPU0", unit, 999_999 * k),
            ],
            ..SocWindow::default()
        };
        let mut conv = SocReadings::default();
        let rs = conv.readings("ioreport", 7, &w).unwrap();
        let get = |m: &str| rs.iter().find(|r| r.metric == m).map(|r| r.value);
        // Watts = the delta over elapsed_ns, as powermetrics computes its *_power keys.
        assert!((get(metric::POWER_W).unwrap() - combined_mw / 1e3).abs() < 0.01);
        assert!((get(metric::GPU_POWER_W).unwrap() - gpu_mw / 1e3).abs() < 0.01);
        // The cumulative counter is the sum of the deltas themselves (not power x nominal time).
        assert!((get(metric::ENERGY_J).unwrap() - (cpu_mj + gpu_mj) as f64 / 1e3).abs() < 1e-9);
        // DRAM has a metric of its own; per-core channels are not counted twice.
        let dram = get(metric::DRAM_POWER_W).unwrap();
        assert!((dram - 2.0 / (elapsed as f64 / 1e9)).abs() < 1e-9);
        assert!(
            rs.iter()
                .all(|r| r.source == "ioreport" && r.device == "soc")
        );
    }
}

#[test]
fn the_counter_is_exact_whatever_the_window_lengths() {
    let mut conv = SocReadings::default();
    let mut total = 0.0;
    for (i, (ms, mj)) in [(250u64, 400i64), (261, 410), (1_007, 1_500)]
        .iter()
        .enumerate()
    {
        let w = SocWindow {
            elapsed_ns: ms * 1_000_000,
            energy: vec![ch("CPU Energy", "mJ", *mj), ch("GPU Energy", "mJ", 2 * mj)],
            ..SocWindow::default()
        };
        total += 3.0 * *mj as f64 / 1e3;
        let rs = conv.readings("ioreport", i as u64, &w).unwrap();
        let e = rs.iter().find(|r| r.metric == metric::ENERGY_J).unwrap();
        assert!((e.value - total).abs() < 1e-12);
        let p = rs.iter().find(|r| r.metric == metric::POWER_W).unwrap();
        assert!((p.value - 3.0 * *mj as f64 / *ms as f64).abs() < 1e-9);
    }
}

#[test]
fn bad_windows_are_errors_not_zeros() {
    let mut conv = SocReadings::default();
    let w = |energy| SocWindow {
        elapsed_ns: 1_000_000,
        energy,
        ..SocWindow::default()
    };
    assert_eq!(
        conv.readings("ioreport", 1, &w(vec![ch("CPU Energy", "kWh", 1)])),
        Err(AppleError::Unit {
            channel: "CPU Energy".into(),
            unit: "kWh".into()
        })
    );
    assert!(matches!(
        conv.readings("ioreport", 1, &w(vec![ch("GPU Energy", "mJ", -3)])),
        Err(AppleError::Negative { .. })
    ));
    assert_eq!(
        conv.readings("ioreport", 1, &w(vec![ch("PCPU0", "mJ", 3)])),
        Err(AppleError::NoChannels)
    );
    let zero = SocWindow {
        energy: vec![ch("CPU Energy", "mJ", 1)],
        ..SocWindow::default()
    };
    assert_eq!(
        conv.readings("ioreport", 1, &zero),
        Err(AppleError::Elapsed)
    );
}

#[test]
fn a_counter_that_reads_zero_records_nothing_then_says_so() {
    let mut conv = SocReadings::default();
    let w = SocWindow {
        elapsed_ns: 250_000_000,
        energy: vec![ch("CPU Energy", "mJ", 0), ch("GPU Energy", "mJ", 0)],
        ..SocWindow::default()
    };
    for i in 1..ZERO_WINDOWS_DEAD {
        assert_eq!(conv.readings("ioreport", u64::from(i), &w), Ok(vec![]));
    }
    let e = conv.readings("ioreport", 99, &w).unwrap_err();
    assert_eq!(
        e.to_string(),
        "IOReport CPU energy counter reads 0 on this machine"
    );
}

#[test]
fn liveness_names_the_dead_counter() {
    let e = |cpu: f64, gpu: f64| SocEnergy {
        cpu_j: Some(cpu),
        gpu_j: Some(gpu),
        ..SocEnergy::default()
    };
    assert_eq!(Liveness::default().verdict(), Err(AppleError::NoChannels));
    let mut l = Liveness::default();
    l.add(&e(0.2, 0.0), Some(0.0));
    // An idle GPU at 0 J is no fault.
    assert_eq!(l.verdict(), Ok(()));
    l.add(&e(0.2, 0.0), Some(0.4));
    let v = l.verdict().unwrap_err();
    assert_eq!(
        v.to_string(),
        "IOReport GPU energy counter reads 0 on this machine"
    );
    let mut l = Liveness::default();
    l.add(&e(0.0, 0.0), None);
    l.add(&e(0.0, 0.0), None);
    assert_eq!(l.verdict(), Err(AppleError::Zero("CPU")));
    // One live window among quiet ones is enough.
    let mut l = Liveness::default();
    l.add(&e(0.0, 0.0), Some(0.5));
    l.add(&e(0.3, 0.1), Some(0.5));
    assert_eq!(l.verdict(), Ok(()));
    let mut l = Liveness::default();
    l.add(&SocEnergy::default(), None);
    assert_eq!(l.verdict(), Err(AppleError::NoChannels));
}

#[test]
fn counters_across_a_wrap_and_a_reset() {
    assert_eq!(counter_delta(10, 25, None), Some(15));
    assert_eq!(
        counter_delta(u64::from(u32::MAX) - 5, 4, Some(u64::from(u32::MAX))),
        Some(10)
    );
    assert_eq!(counter_delta(30, 4, None), None);
    // A value above the wrap point is no wrap of that counter.
    assert_eq!(counter_delta(u64::MAX, 4, Some(u64::from(u32::MAX))), None);
}

#[test]
fn process_energy_per_measured_interval() {
    let mut p = ProcessEnergy::default();
    let s = 1_000_000_000u64;
    assert_eq!(
        p.update(812, s, 5_000_000_000),
        ProcEnergy {
            energy_j: Some(0.0),
            power_w: None
        }
    );
    // 30 J over 1.5 s (the sampler ran late): 20 W, not 30.
    let r = p.update(812, s + s * 3 / 2, 35_000_000_000);
    assert_eq!(r.energy_j, Some(30.0));
    assert!((r.power_w.unwrap() - 20.0).abs() < 1e-12);
    // The pid was reused: the counter starts over, nothing is added or subtracted.
    let r = p.update(812, 3 * s, 1_000_000_000);
    assert_eq!((r.energy_j, r.power_w), (Some(30.0), None));
    let r = p.update(812, 4 * s, 3_000_000_000);
    assert_eq!(r.energy_j, Some(32.0));
    assert!((r.power_w.unwrap() - 2.0).abs() < 1e-12);
    // Two reads at one instant: no power figure rather than a division by zero.
    assert_eq!(p.update(812, 4 * s, 3_000_000_001).power_w, None);
    p.retain(|pid| pid != 812);
    assert_eq!(p.update(812, 5 * s, 9).energy_j, Some(0.0));
}

#[test]
fn ioreport_readings_give_a_cycles_energy_per_token_above_idle() {
    use crate::monitor::{CycleEnergy, EnergyMethod, PowerSeries};
    // 1 s windows: 5 W idle for 3 s, then 25 W for 4 s while 400 tokens came.
    let mut conv = SocReadings::default();
    let mut series = PowerSeries::default();
    let s = 1_000_000_000u64;
    for i in 1..=7u64 {
        let mj = if i <= 3 { 5_000 } else { 25_000 };
        let w = SocWindow {
            elapsed_ns: s,
            energy: vec![
                ch("CPU Energy", "mJ", mj / 5),
                ch("GPU Energy", "mJ", mj * 4 / 5),
            ],
            ..SocWindow::default()
        };
        for r in conv.readings("ioreport", i * s, &w).unwrap() {
            series.add(&r);
        }
    }
    let idle = series.window(s, 3 * s).unwrap();
    assert!((idle.mean_power_w - 5.0).abs() < 1e-9, "{idle:?}");
    let busy = series.window(3 * s, 7 * s).unwrap();
    assert_eq!(busy.method, EnergyMethod::Counter);
    assert!((busy.energy_j - 100.0).abs() < 1e-9, "{busy:?}");
    let e = CycleEnergy::new(busy, 400, Some(idle.mean_power_w));
    assert!((e.joules_per_token.unwrap() - 0.25).abs() < 1e-12);
    // 100 J less 5 W x 4 s of idle: 80 J above idle, 0.2 J per token.
    assert!((e.net_energy_j.unwrap() - 80.0).abs() < 1e-9);
    assert!((e.net_joules_per_token.unwrap() - 0.2).abs() < 1e-12);
}
