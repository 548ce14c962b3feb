//! Ollama's `/api/ps` readings in `server_metrics.csv` (source `ollama-ps`): per level, the
//! largest share of a model outside GPU memory, and the models that were unloaded and loaded
//! again while the sweep ran.

use super::{LevelRow, label_key};
use std::collections::{BTreeMap, BTreeSet};
use tokengun_common::run_dir::PowerRow;

const SOURCE: &str = "ollama-ps";

/// Adds each level's CPU share and reloads from the `/api/ps` rows.
pub(super) fn add(rows: &[PowerRow], levels: &mut [LevelRow]) {
    let ps: Vec<&PowerRow> = rows.iter().filter(|r| r.source == SOURCE).collect();
    if ps.is_empty() {
        return;
    }
    let mut cpu: BTreeMap<String, f64> = BTreeMap::new();
    // Each poll's instant (its `loaded_models` row), and which models each poll saw.
    let mut polls: Vec<(f64, String)> = Vec::new();
    let mut seen: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for r in &ps {
        let (Some(t), Some(v)) = (r.elapsed_s, r.value) else {
            continue;
        };
        match r.metric.as_str() {
            "loaded_models" => polls.push((t, r.cycle.clone())),
            "cpu_share" if !r.cycle.is_empty() => {
                let c = cpu.entry(label_key(&r.cycle)).or_insert(0.0);
                *c = c.max(v);
            }
            "size_bytes" => {
                seen.entry(r.device.clone())
                    .or_default()
                    .insert(t.to_bits());
            }
            _ => {}
        }
    }
    polls.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut reloads: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // The group a poll belongs to (a run of several): a model absent across a group's edge was
    // unloaded on purpose (another model, another setting), not reloaded mid-sweep.
    let group = |c: &str| c.split_once('|').map_or("", |(g, _)| g).to_string();
    for (model, at) in &seen {
        let present: Vec<bool> = polls
            .iter()
            .map(|(t, _)| at.contains(&t.to_bits()))
            .collect();
        let mut since = 0;
        for i in 1..present.len() {
            if group(&polls[i].1) != group(&polls[i - 1].1) {
                since = i;
                continue;
            }
            if present[i] && !present[i - 1] && present[since..i].iter().any(|p| *p) {
                reloads
                    .entry(label_key(&polls[i].1))
                    .or_default()
                    .push(model.clone());
            }
        }
    }
    for l in levels {
        let key = l.key();
        l.cpu_share_max = cpu.get(&key).copied();
        l.reloaded_models = reloads.remove(&key).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: f64, cycle: &str, device: &str, metric: &str, v: f64) -> PowerRow {
        PowerRow {
            elapsed_s: Some(t),
            cycle: cycle.into(),
            agent: String::new(),
            source: SOURCE.into(),
            device: device.into(),
            metric: metric.into(),
            unit: String::new(),
            value: Some(v),
        }
    }

    #[test]
    fn a_model_gone_from_one_poll_and_back_is_a_reload_in_the_level_it_came_back() {
        let mut rows = Vec::new();
        for (t, cycle, loaded) in [(1.0, "1", true), (2.0, "1", false), (3.0, "2", true)] {
            rows.push(row(
                t,
                cycle,
                "server",
                "loaded_models",
                f64::from(u8::from(loaded)),
            ));
            if loaded {
                rows.push(row(t, cycle, "m", "size_bytes", 10.0));
                rows.push(row(
                    t,
                    cycle,
                    "m",
                    "cpu_share",
                    if t > 2.0 { 0.3 } else { 0.0 },
                ));
            }
        }
        let mut levels = vec![
            LevelRow {
                label: "1".into(),
                ..LevelRow::default()
            },
            LevelRow {
                label: "2".into(),
                ..LevelRow::default()
            },
        ];
        add(&rows, &mut levels);
        assert!(levels[0].reloaded_models.is_empty());
        assert_eq!(levels[1].reloaded_models, ["m"]);
        assert_eq!(levels[0].cpu_share_max, Some(0.0));
        assert_eq!(levels[1].cpu_share_max, Some(0.3));

        // Across a group's edge (the next model's group) an absence is no reload.
        let mut rows = Vec::new();
        for (t, cycle, loaded) in [
            (1.0, "a|1", true),
            (2.0, "b|load", false),
            (3.0, "b|1", true),
        ] {
            rows.push(row(
                t,
                cycle,
                "server",
                "loaded_models",
                f64::from(u8::from(loaded)),
            ));
            if loaded {
                rows.push(row(t, cycle, "m", "size_bytes", 10.0));
            }
        }
        let mut levels = vec![LevelRow {
            label: "1".into(),
            ..LevelRow::default()
        }];
        levels[0].cycle.group_label = "b".into();
        add(&rows, &mut levels);
        assert!(levels[0].reloaded_models.is_empty());
    }
}
