//! Findings about a level spread over several server instances (registered in `FINDINGS`):
//! one instance saturated while the others idle, or failing alone.

use super::Ctx;
use crate::report::load::TargetRow;
use crate::report::util::{fmt_num, fmt_s};

/// An instance's share of the tokens this many times the even share is an imbalance.
const IMBALANCE: f64 = 1.5;
/// An instance whose median TTFT is this many times the fastest one's is saturated.
const SLOW_TTFT: f64 = 2.0;

/// The first level where one instance was saturated (slow first tokens, or most of the tokens)
/// while others idled, or where one instance failed while the others did not.
pub(super) fn imbalance(c: &Ctx<'_>) -> Option<String> {
    c.levels.iter().find_map(|l| {
        let t = &l.per_target;
        // Fewer instances got requests than the level was spread over: some got none.
        let spread = l.instances as usize;
        if spread >= 2 && t.len() < spread && l.requests > 0 {
            return Some(format!(
                "At level {}, only {} of its {spread} instances received requests: the others idled (with --target-policy pinned, have as many agents as instances)",
                l.label,
                t.len().max(1)
            ));
        }
        if t.len() < 2 {
            return None;
        }
        if let Some(msg) = failing_alone(t) {
            return Some(format!("At level {}, {msg}", l.label));
        }
        let total: u64 = t.iter().map(|x| x.output_tokens).sum();
        let even = total as f64 / t.len() as f64;
        let busiest = t.iter().max_by_key(|x| x.output_tokens)?;
        if even > 0.0 && busiest.output_tokens as f64 >= IMBALANCE * even {
            return Some(format!(
                "At level {}, {} did {}% of the work ({} of {} tokens) while {} instances shared the load: the load is unevenly spread (try --target-policy least-in-flight)",
                l.label,
                busiest.target,
                fmt_num(busiest.output_tokens as f64 * 100.0 / total as f64),
                busiest.output_tokens,
                total,
                t.len()
            ));
        }
        let fastest = t.iter().filter_map(|x| x.ttft_p50_s).reduce(f64::min)?;
        let (slow, s) = t
            .iter()
            .filter_map(|x| x.ttft_p50_s.map(|s| (x, s)))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        (fastest > 0.0 && s >= SLOW_TTFT * fastest).then(|| {
            format!(
                "At level {}, {} answered its first tokens in {} (median) against {} on the fastest instance: it is saturated while others have room",
                l.label,
                slow.target,
                fmt_s(s),
                fmt_s(fastest)
            )
        })
    })
}

/// "X failed N of its M requests; the others none": a dead or broken instance.
fn failing_alone(t: &[TargetRow]) -> Option<String> {
    let failing: Vec<&TargetRow> = t.iter().filter(|x| x.failed > 0).collect();
    if failing.len() != 1 || t.iter().all(|x| x.failed == x.requests) {
        return None;
    }
    let f = failing[0];
    Some(format!(
        "{} failed {} of its {} requests while the other instances failed none: that instance, not the load, is the problem (its records are marked in request_summary.csv's Target column)",
        f.target, f.failed, f.requests
    ))
}

#[cfg(test)]
mod tests {
    use crate::report::findings::{FindingOptions, compute};
    use crate::report::load::{LevelRow, TargetRow};

    fn level(instances: u32, parts: &[(u32, u32, u64)]) -> LevelRow {
        let mut l = LevelRow {
            label: "8".into(),
            x: 8.0,
            ..LevelRow::default()
        };
        l.cycle.requests = parts.iter().map(|p| p.0).sum::<u32>().max(8);
        l.cycle.instances = instances;
        l.cycle.schedule_valid = true;
        l.per_target = parts
            .iter()
            .enumerate()
            .map(|(i, &(requests, failed, tokens))| TargetRow {
                target: format!("http://h:{i}"),
                requests,
                failed,
                output_tokens: tokens,
                ttft_p50_s: Some(0.1),
            })
            .collect();
        l
    }

    fn hints(l: LevelRow) -> String {
        compute(&[l], &FindingOptions::default(), false)
            .hints
            .join("\n")
    }

    #[test]
    fn an_idle_a_failing_or_an_overloaded_instance_is_named() {
        assert!(hints(level(2, &[])).contains("only 1 of its 2 instances received requests"));
        let failing = hints(level(2, &[(4, 4, 0), (4, 0, 400)]));
        assert!(
            failing.contains("http://h:0 failed 4 of its 4 requests"),
            "{failing}"
        );
        let uneven = hints(level(2, &[(6, 0, 900), (2, 0, 100)]));
        assert!(
            uneven.contains("http://h:0 did 90% of the work"),
            "{uneven}"
        );
        assert!(!hints(level(2, &[(4, 0, 400), (4, 0, 400)])).contains("At level"));
    }
}
