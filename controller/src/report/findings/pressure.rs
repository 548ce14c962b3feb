//! Findings from the machine's pressure and the server's own energy (registered in `FINDINGS`):
//! levels that ran throttled or swapping, and whether throughput fell with them; the share of
//! the measured power the server's processes drew, and their joules per token.

use super::{Ctx, pct};
use crate::report::load::LevelRow;
use crate::report::util::{fmt_bytes, fmt_num};
use tokengun_common::monitor::pressure;

/// Swap growth within a level from which it counts as swapping, bytes.
pub const SWAP_GROWTH_MIN_BYTES: f64 = 64.0 * 1024.0 * 1024.0;

/// Whether a level ran under thermal pressure (moderate or worse).
pub fn throttled(l: &LevelRow) -> bool {
    l.thermal_pressure_max
        .is_some_and(|t| t >= f64::from(pressure::THERMAL_MODERATE))
}

/// Whether a level ran under memory pressure, or its swap grew.
pub fn swapping(l: &LevelRow) -> bool {
    l.mem_pressure_max
        .is_some_and(|m| m >= f64::from(pressure::MEM_WARN))
        || l.swap_growth_bytes
            .is_some_and(|g| g >= SWAP_GROWTH_MIN_BYTES)
}

/// Level value as a u8 level for its name.
fn level_u8(v: f64) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// ", and throughput fell with it: A at L0, B at L1" when the first marked level's throughput is
/// below the whole level's before it; ", but throughput did not fall with it" otherwise.
fn fell_with(c: &Ctx<'_>, first: &LevelRow) -> String {
    let before = c
        .whole
        .iter()
        .take_while(|l| !std::ptr::eq(**l, first))
        .last();
    match before {
        Some(b) if first.aggregate_tokens_per_s < b.aggregate_tokens_per_s => format!(
            "; throughput fell with it, from {} at {} to {} at {}",
            c.tps(b),
            c.name(b),
            c.tps(first),
            c.name(first)
        ),
        Some(_) => "; throughput did not fall with it".into(),
        None => String::new(),
    }
}

/// Levels that ran while the machine was throttled (thermal pressure moderate or worse).
pub(super) fn thermal(c: &Ctx<'_>) -> Option<String> {
    let hot: Vec<&LevelRow> = c.whole.iter().copied().filter(|l| throttled(l)).collect();
    let first = *hot.first()?;
    let worst = hot.iter().max_by(|a, b| {
        let t = |l: &LevelRow| l.thermal_pressure_max.unwrap_or(0.0);
        t(a).total_cmp(&t(b))
    })?;
    Some(format!(
        "Thermal pressure: {} ran throttled (thermal pressure {} at {}){}.",
        names(c, &hot),
        pressure::thermal_name(level_u8(worst.thermal_pressure_max.unwrap_or(0.0))),
        c.name(worst),
        fell_with(c, first)
    ))
}

/// Levels that ran under memory pressure or while swap grew (a model that no longer fits).
pub(super) fn memory(c: &Ctx<'_>) -> Option<String> {
    let tight: Vec<&LevelRow> = c.whole.iter().copied().filter(|l| swapping(l)).collect();
    let first = *tight.first()?;
    let mut what = Vec::new();
    let worst = tight
        .iter()
        .filter_map(|l| l.mem_pressure_max)
        .reduce(f64::max);
    if let Some(m) = worst.filter(|m| *m >= f64::from(pressure::MEM_WARN)) {
        what.push(format!(
            "memory pressure {}",
            pressure::mem_name(level_u8(m))
        ));
    }
    if let Some(g) = tight
        .iter()
        .filter_map(|l| l.swap_growth_bytes)
        .reduce(f64::max)
    {
        if g >= SWAP_GROWTH_MIN_BYTES {
            what.push(format!("swap grew by up to {}", fmt_bytes(g)));
        }
    }
    Some(format!(
        "Swapping: {} ran short of memory ({}){}.",
        names(c, &tight),
        what.join(", "),
        fell_with(c, first)
    ))
}

/// `concurrency 16` or `concurrency 16, concurrency 24` (at most four, then how many more).
fn names(c: &Ctx<'_>, ls: &[&LevelRow]) -> String {
    let mut n: Vec<String> = ls.iter().take(4).map(|l| c.name(l)).collect();
    if ls.len() > 4 {
        n.push(format!("{} more", ls.len() - 4));
    }
    n.join(", ")
}

/// The server's own share of the measured power at the best level (else the busiest level with
/// per-process energy), and its joules per output token.
pub(super) fn server_energy(c: &Ctx<'_>) -> Option<String> {
    let with = |l: &&LevelRow| l.server_power_share().is_some();
    let l =
        c.f.best
            .map(|i| &c.levels[i])
            .filter(with)
            .or_else(|| c.whole.iter().copied().rfind(with))?;
    let share = l.server_power_share()?;
    let (top, top_w) = l
        .process_power_w
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    let per_token = match (
        l.server_joules_per_token(),
        l.energy.as_ref().and_then(|e| e.joules_per_token),
    ) {
        (Some(s), Some(all)) => format!(
            "; the server's processes took {} J per output token (the whole measured power: {} J)",
            fmt_num(s),
            fmt_num(all)
        ),
        (Some(s), None) => format!(
            "; the server's processes took {} J per output token",
            fmt_num(s)
        ),
        _ => String::new(),
    };
    let parts = if l.process_power_w.len() > 1 {
        format!(
            " ({top} {} of it, {} W)",
            pct(top_w / l.mean_power_w()?.max(f64::MIN_POSITIVE)),
            fmt_num(*top_w)
        )
    } else {
        String::new()
    };
    Some(format!(
        "Energy by process: at {} the server's processes drew {} of the measured power ({} W of {} W){parts}{per_token}.",
        c.name(l),
        pct(share),
        fmt_num(l.server_power_w()?),
        fmt_num(l.mean_power_w()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::{FindingOptions, compute};
    use crate::report::load::LevelRow;
    use tokengun_common::monitor::{CycleEnergy, EnergyMethod};

    /// The findings' whole level, 10 s long.
    fn level(x: f64, tps: f64) -> LevelRow {
        let mut l = super::super::tests::level(x, tps);
        l.cycle.duration_s = 10.0;
        l.cycle.output_tokens = (tps * 10.0) as u64;
        l
    }

    fn all(levels: &[LevelRow]) -> Vec<String> {
        let f = compute(levels, &FindingOptions::default(), false);
        f.statements.into_iter().chain(f.hints).collect()
    }

    #[test]
    fn throttled_levels_and_the_throughput_they_lost() {
        let mut ls = vec![
            level(1., 100.),
            level(2., 190.),
            level(4., 170.),
            level(8., 175.),
        ];
        ls[0].thermal_pressure_max = Some(0.0);
        ls[1].thermal_pressure_max = Some(0.0);
        ls[2].thermal_pressure_max = Some(1.0);
        ls[3].thermal_pressure_max = Some(2.0);
        let got = all(&ls);
        let t = got
            .iter()
            .find(|s| s.starts_with("Thermal pressure"))
            .unwrap();
        assert_eq!(
            t,
            "Thermal pressure: concurrency 4, concurrency 8 ran throttled (thermal pressure heavy at concurrency 8); throughput fell with it, from 190 tokens/s at concurrency 2 to 170 tokens/s at concurrency 4."
        );
        // Nominal all along: nothing said.
        for l in &mut ls {
            l.thermal_pressure_max = Some(0.0);
        }
        assert!(!all(&ls).iter().any(|s| s.starts_with("Thermal")));
    }

    #[test]
    fn swapping_levels_from_pressure_or_swap_growth() {
        let mut ls = vec![level(1., 100.), level(2., 190.), level(4., 250.)];
        ls[2].swap_growth_bytes = Some(512.0 * 1024.0 * 1024.0);
        let got = all(&ls);
        let s = got.iter().find(|s| s.starts_with("Swapping")).unwrap();
        assert!(
            s.contains("concurrency 4 ran short of memory (swap grew by up to 512"),
            "{s}"
        );
        assert!(s.ends_with("throughput did not fall with it."), "{s}");
        // A few MiB of swap churn is no swapping.
        ls[2].swap_growth_bytes = Some(1024.0 * 1024.0);
        assert!(!all(&ls).iter().any(|s| s.starts_with("Swapping")));
        ls[1].mem_pressure_max = Some(2.0);
        let got = all(&ls);
        let s = got.iter().find(|s| s.starts_with("Swapping")).unwrap();
        assert!(
            s.contains("concurrency 2 ran short of memory (memory pressure critical)"),
            "{s}"
        );
    }

    #[test]
    fn the_servers_share_of_the_power_and_its_joules_per_token() {
        let mut ls = vec![level(1., 100.), level(8., 400.)];
        for l in &mut ls {
            l.cycle.energy = Some(CycleEnergy {
                mean_power_w: 50.0,
                peak_power_w: None,
                energy_j: 500.0,
                method: EnergyMethod::Counter,
                joules_per_token: Some(500.0 / l.output_tokens as f64),
                tokens_per_joule: None,
                baseline_power_w: None,
                net_energy_j: None,
                net_joules_per_token: None,
                net_tokens_per_joule: None,
                devices: Vec::new(),
            });
        }
        ls[1].process_power_w = vec![
            ("server ollama (10)".into(), 1.5),
            ("runner ollama (11)".into(), 40.0),
        ];
        let got = all(&ls);
        let s = got
            .iter()
            .find(|s| s.starts_with("Energy by process"))
            .unwrap();
        // 41.5 W of 50 W; 41.5 W x 10 s / 4000 tokens.
        assert_eq!(
            s,
            "Energy by process: at concurrency 8 the server's processes drew 83% of the measured power (41.5 W of 50 W) (runner ollama (11) 80% of it, 40 W); the server's processes took 0.104 J per output token (the whole measured power: 0.125 J)."
        );
        // No per-process energy (Linux, or an old run): nothing said.
        ls[1].process_power_w.clear();
        assert!(!all(&ls).iter().any(|s| s.starts_with("Energy by process")));
    }
}
