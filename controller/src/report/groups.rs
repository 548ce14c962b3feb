//! A run of several groups (models × instance counts × server settings): the groups split
//! apart, their findings side by side and their curves overlaid (as `tokengun compare` does for
//! runs), which group serves the most users at the SLO, and what more instances added.

use super::compare::{overlays, side_by_side};
use super::doc::{Block, Doc, Table};
use super::findings::{self, FindingOptions, Findings, qualifies};
use super::load::{LevelRow, RunData};
use super::util::{fmt_num, opt_s};
use super::{ReportError, ReportOptions, level_table, slo_words};

/// One group of a run: its label and its levels, as a run of its own.
pub struct GroupRun {
    pub label: String,
    pub model: String,
    /// The group's folder segment (instance count, setting).
    pub group: String,
    pub instances: u32,
    /// The server setting (`OLLAMA_NUM_PARALLEL=4`), empty without a managed server.
    pub setting: String,
    pub data: RunData,
}

/// The run's groups in run order; one (the whole run) when every level belongs to one group.
pub fn split(data: &RunData) -> Vec<GroupRun> {
    let mut out: Vec<GroupRun> = Vec::new();
    for l in &data.levels {
        let key = (l.model.as_str(), l.group.as_str());
        let k = match out
            .iter()
            .position(|g| (g.model.as_str(), g.group.as_str()) == key)
        {
            Some(k) => k,
            None => {
                let mut d = data.clone();
                d.levels.clear();
                if !l.model.is_empty() {
                    d.meta.model = l.model.clone();
                }
                out.push(GroupRun {
                    label: if l.group_label.is_empty() {
                        l.model.clone()
                    } else {
                        l.group_label.clone()
                    },
                    model: l.model.clone(),
                    group: l.group.clone(),
                    instances: l.instances,
                    setting: l.setting.clone(),
                    data: d,
                });
                out.len() - 1
            }
        };
        out[k].data.levels.push(l.clone());
    }
    out
}

/// The highest level of a group that qualifies (error rate and SLO share within limits).
fn served_at_slo(levels: &[LevelRow], o: &FindingOptions) -> Option<usize> {
    levels
        .iter()
        .enumerate()
        .filter(|(_, l)| qualifies(l, o))
        .max_by(|a, b| a.1.x.total_cmp(&b.1.x))
        .map(|(i, _)| i)
}

/// "Which model serves how many users at the SLO on this box", one sentence per group, the
/// group that serves the most first.
pub fn serves_statements(groups: &[GroupRun], o: &FindingOptions, slo: &str) -> Vec<String> {
    let rate = groups.first().is_some_and(|g| g.data.meta.is_rate_sweep());
    let unit = if rate {
        "requests/s"
    } else {
        "concurrent users"
    };
    let mut said: Vec<(f64, String)> = groups
        .iter()
        .map(|g| match served_at_slo(&g.data.levels, o) {
            Some(i) => {
                let l = &g.data.levels[i];
                let top = g.data.levels.iter().all(|o| o.x <= l.x);
                (
                    l.x,
                    format!(
                        "{} serves {}{} {unit} at the SLO ({slo}): {} tokens/s in all, TTFT p50 {}, {}% of requests good",
                        g.label,
                        fmt_num(l.x),
                        if top { " or more (its highest level)" } else { "" },
                        fmt_num(l.aggregate_tokens_per_s),
                        opt_s(l.ttft.p50_s),
                        fmt_num(l.good_share() * 100.0)
                    ),
                )
            }
            None => (
                0.0,
                format!(
                    "{} meets the SLO ({slo}) at none of its levels",
                    g.label
                ),
            ),
        })
        .collect();
    said.sort_by(|a, b| b.0.total_cmp(&a.0));
    said.into_iter().map(|(_, s)| s).collect()
}

/// A group's peak aggregate tokens/s.
fn peak(g: &GroupRun) -> Option<f64> {
    g.data
        .levels
        .iter()
        .map(|l| l.aggregate_tokens_per_s)
        .reduce(f64::max)
}

/// What going from `from` to `to` did to the peak throughput, in words.
fn verdict(gain_pct: f64, more_instances: bool) -> &'static str {
    if gain_pct >= 10.0 {
        "adds throughput"
    } else if gain_pct > -10.0 && more_instances {
        "adds nothing worth having (the box, not the server, is the limit)"
    } else if gain_pct > -10.0 {
        "changes little"
    } else if more_instances {
        "costs throughput (the instances compete for the same hardware)"
    } else {
        "costs throughput"
    }
}

/// "Does a second instance add throughput?" and "what does this setting do?": for groups that
/// differ in one dimension only (instance count, or server setting), each one's peak aggregate
/// tokens/s against the first of them.
pub fn instance_statements(groups: &[GroupRun]) -> Vec<String> {
    let mut out = Vec::new();
    // Instance counts, per model and setting.
    let mut done: Vec<(&str, &str)> = Vec::new();
    for g in groups {
        let key = (g.model.as_str(), g.setting.as_str());
        if done.contains(&key) {
            continue;
        }
        done.push(key);
        let mut same: Vec<&GroupRun> = groups
            .iter()
            .filter(|h| (h.model.as_str(), h.setting.as_str()) == key && h.instances > 0)
            .collect();
        same.sort_by_key(|h| h.instances);
        same.dedup_by_key(|h| h.instances);
        compare_along(
            &same,
            |h| format!("{} instances", h.instances),
            true,
            &mut out,
        );
    }
    // Settings, per model and instance count.
    let mut done: Vec<(&str, u32)> = Vec::new();
    for g in groups.iter().filter(|g| !g.setting.is_empty()) {
        let key = (g.model.as_str(), g.instances);
        if done.contains(&key) {
            continue;
        }
        done.push(key);
        let same: Vec<&GroupRun> = groups
            .iter()
            .filter(|h| (h.model.as_str(), h.instances) == key)
            .collect();
        compare_along(&same, |h| h.setting.clone(), false, &mut out);
    }
    out
}

/// One sentence per group of `same` after the first: its peak against the first's.
fn compare_along(
    same: &[&GroupRun],
    name: impl Fn(&GroupRun) -> String,
    instances: bool,
    out: &mut Vec<String>,
) {
    let Some(first) = same.first() else {
        return;
    };
    let Some(p0) = peak(first).filter(|p| *p > 0.0) else {
        return;
    };
    let context = if instances {
        first.setting.clone()
    } else if first.instances > 1 {
        format!("{} instances", first.instances)
    } else {
        String::new()
    };
    for g in &same[1..] {
        let Some(p) = peak(g) else {
            continue;
        };
        let gain = (p / p0 - 1.0) * 100.0;
        out.push(format!(
            "{}{}: {} peaks at {} tokens/s against {} with {} ({}{}%): going to {} {}",
            first.model,
            if context.is_empty() {
                String::new()
            } else {
                format!(" ({context})")
            },
            name(g),
            fmt_num(p),
            fmt_num(p0),
            name(first),
            if gain >= 0.0 { "+" } else { "" },
            fmt_num(gain),
            name(g),
            verdict(gain, instances)
        ));
    }
}

/// The report of a run of several groups.
pub fn groups_doc(
    data: &RunData,
    groups: &[GroupRun],
    opts: &ReportOptions,
) -> Result<Doc, ReportError> {
    let o = &opts.findings;
    let rate = data.meta.is_rate_sweep();
    let runs: Vec<RunData> = groups.iter().map(|g| g.data.clone()).collect();
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    let found: Vec<Findings> = runs
        .iter()
        .map(|r| findings::compute(&r.levels, o, rate))
        .collect();
    let mut statements = serves_statements(groups, o, &slo_words(data));
    statements.extend(instance_statements(groups));
    let mut blocks = vec![
        Block::Heading("Findings".into()),
        Block::List(statements),
        Block::Heading("Groups side by side".into()),
        Block::Table(side_by_side(&runs, &labels, &found)),
        Block::Heading("Charts".into()),
    ];
    blocks.extend(
        overlays(&runs, &labels, "groups")?
            .into_iter()
            .map(Block::Figure),
    );
    for ((g, f), r) in groups.iter().zip(&found).zip(&runs) {
        blocks.push(Block::Heading(g.label.clone()));
        let mut items = f.statements.clone();
        items.extend(f.hints.iter().cloned());
        items.extend(f.cautions.iter().cloned());
        blocks.push(Block::List(items));
        blocks.push(Block::Table(level_table(&r.levels)));
        if let Some(t) = instance_table(&r.levels) {
            blocks.push(Block::Table(t));
        }
    }
    let mut notes = data.notes.clone();
    notes.push(
        "Per-level charts (timeline, power, server) are drawn for runs of one group; here each group's curves are overlaid above, and its files are in its own folder.".into(),
    );
    blocks.push(Block::Heading("Notes".into()));
    blocks.push(Block::List(notes));
    let count = |f: fn(&GroupRun) -> String| {
        let mut v: Vec<String> = groups.iter().map(f).collect();
        v.sort();
        v.dedup();
        v.len()
    };
    let dims: Vec<String> = [
        (count(|g| g.model.clone()), "models"),
        (count(|g| g.instances.to_string()), "instance counts"),
        (count(|g| g.setting.clone()), "settings"),
    ]
    .iter()
    .filter(|(n, _)| *n > 1)
    .map(|(n, w)| format!("{n} {w}"))
    .collect();
    Ok(Doc {
        title: format!(
            "tokengun report: {} groups ({})",
            groups.len(),
            dims.join(" × ")
        ),
        subtitle: format!(
            "run {} · {} groups · x: {}",
            data.meta.run_id,
            groups.len(),
            super::x_title(data)
        ),
        blocks,
    })
}

/// Each server instance's part of each level, when the levels spread over several.
pub fn instance_table(levels: &[LevelRow]) -> Option<Table> {
    if levels.iter().all(|l| l.per_target.is_empty()) {
        return None;
    }
    let headers = [
        "level",
        "instance",
        "requests",
        "errors",
        "output tokens",
        "share of tokens",
        "TTFT p50",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for l in levels {
        let total: u64 = l.per_target.iter().map(|t| t.output_tokens).sum();
        for t in &l.per_target {
            rows.push(vec![
                l.label.clone(),
                t.target.clone(),
                t.requests.to_string(),
                t.failed.to_string(),
                t.output_tokens.to_string(),
                if total > 0 {
                    format!(
                        "{}%",
                        fmt_num(t.output_tokens as f64 * 100.0 / total as f64)
                    )
                } else {
                    "–".into()
                },
                opt_s(t.ttft_p50_s),
            ]);
        }
    }
    Some(Table { headers, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(model: &str, group: &str, instances: u32, x: f64, tps: f64, good: u32) -> LevelRow {
        let mut l = LevelRow {
            label: fmt_num(x),
            x,
            ..LevelRow::default()
        };
        l.cycle.model = model.into();
        l.cycle.group = group.into();
        l.cycle.group_label = if group.is_empty() {
            String::new()
        } else {
            format!("{model} · {group}")
        };
        l.cycle.instances = instances;
        l.cycle.requests = 10;
        l.cycle.completed = 10;
        l.cycle.goodput_requests = good;
        l.cycle.aggregate_tokens_per_s = tps;
        l.cycle.schedule_valid = true;
        l
    }

    #[test]
    fn groups_split_in_run_order_and_say_who_serves_most_at_the_slo() {
        let data = RunData {
            levels: vec![
                level("7b", "", 0, 1.0, 40.0, 10),
                level("7b", "", 0, 4.0, 120.0, 6),
                level("1b", "", 0, 1.0, 140.0, 10),
                level("1b", "", 0, 4.0, 480.0, 10),
            ],
            ..RunData::default()
        };
        let g = split(&data);
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].label.as_str(), g[0].data.levels.len()), ("7b", 2));
        let s = serves_statements(&g, &FindingOptions::default(), "the SLO");
        assert!(
            s[0].starts_with("1b serves 4 or more (its highest level) concurrent users"),
            "{s:?}"
        );
        assert!(s[1].starts_with("7b serves 1 concurrent users"), "{s:?}");
        // One group: the run as it is.
        let one = RunData {
            levels: data.levels[..2].to_vec(),
            ..RunData::default()
        };
        assert_eq!(split(&one).len(), 1);
    }

    #[test]
    fn a_second_instance_is_judged_by_its_peak_throughput() {
        let data = RunData {
            levels: vec![
                level("m", "1-instance", 1, 4.0, 100.0, 10),
                level("m", "2-instances", 2, 4.0, 190.0, 10),
                level("n", "1-instance", 1, 4.0, 100.0, 10),
                level("n", "2-instances", 2, 4.0, 98.0, 10),
            ],
            ..RunData::default()
        };
        let s = instance_statements(&split(&data));
        assert_eq!(s.len(), 2);
        assert!(
            s[0].contains("+90%") && s[0].contains("adds throughput"),
            "{s:?}"
        );
        assert!(s[1].contains("adds nothing"), "{s:?}");
    }

    #[test]
    fn settings_are_compared_per_model_and_instance_count() {
        let mut levels = vec![
            level("m", "np1", 1, 4.0, 100.0, 10),
            level("m", "np4", 1, 4.0, 300.0, 10),
        ];
        levels[0].cycle.setting = "OLLAMA_NUM_PARALLEL=1".into();
        levels[1].cycle.setting = "OLLAMA_NUM_PARALLEL=4".into();
        let s = instance_statements(&split(&RunData {
            levels,
            ..RunData::default()
        }));
        assert_eq!(
            s,
            [
                "m: OLLAMA_NUM_PARALLEL=4 peaks at 300 tokens/s against 100 with OLLAMA_NUM_PARALLEL=1 (+200%): going to OLLAMA_NUM_PARALLEL=4 adds throughput"
            ]
        );
    }
}
