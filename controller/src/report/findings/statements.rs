//! The findings proper: the best level, the saturation knee, where errors begin, and the most
//! efficient level per joule (registered in `FINDINGS`).

use super::{Ctx, Knee, capitalised, pct, qualifies, top_qualifying, whole};
use crate::report::load::LevelRow;
use crate::report::util::{fmt_num, fmt_s};
use tokengun_common::monitor::CycleEnergy;

/// The best level, or why there is none.
pub(super) fn best_level_statement(c: &Ctx<'_>) -> Option<String> {
    let levels = c.levels;
    Some(match (c.f.best, c.f.peak) {
        (Some(b), _) => best_level_words(c, &levels[b]),
        (None, Some(p)) => format!(
            "Best level: none qualifies ({}); the highest throughput was {} at {}, with {} of requests meeting the SLO and error rate {}.",
            c.qualifying(),
            c.tps(&levels[p]),
            c.name(&levels[p]),
            pct(levels[p].good_share()),
            pct(levels[p].error_rate)
        ),
        (None, None) => "Best level: no whole level to judge.".into(),
    })
}

/// The best level `l` with its figures, the tie it won, and a TTFT caveat.
fn best_level_words(c: &Ctx<'_>, l: &LevelRow) -> String {
    let mut s = format!(
        "Best level: {} with {} in total, {} of requests meeting the SLO, error rate {} ({}).",
        c.name(l),
        c.tps(l),
        pct(l.good_share()),
        pct(l.error_rate),
        c.qualifying()
    );
    let top = top_qualifying(c.levels, c.o).unwrap_or(0.0).max(0.0);
    if let Some(higher) = c
        .levels
        .iter()
        .find(|h| qualifies(h, c.o) && h.aggregate_tokens_per_s == top && h.label != l.label)
    {
        s.push_str(&format!(
            " {} reached {} ({:+.1}%), within the {} tie tolerance, so the lower level is preferred.",
            capitalised(&c.name(higher)),
            c.tps(higher),
            (higher.aggregate_tokens_per_s / l.aggregate_tokens_per_s - 1.0) * 100.0,
            pct(c.o.best_tolerance)
        ));
    }
    // Without a TTFT limit, a level can "qualify" while its requests wait for long.
    if let (Some(first), Some(at_best)) = (c.whole.first().and_then(|l| l.ttft.p50_s), l.ttft.p50_s)
    {
        if first > 0.0 && at_best >= 3.0 * first {
            s.push_str(&format!(
                " Its TTFT p50 is {} against {} at the first level: if waiting matters, rerun with --slo-ttft so the SLO judges it.",
                fmt_s(at_best),
                fmt_s(first)
            ));
        }
    }
    s
}

/// Where the throughput curve bends, with the slopes that say so.
pub(super) fn knee_statement(c: &Ctx<'_>) -> Option<String> {
    let unit = if c.rate_sweep {
        "per added request/s"
    } else {
        "per added concurrent request"
    };
    Some(match &c.f.knee {
        Knee::TooFewLevels => {
            "Saturation knee: fewer than two whole levels, no slope to judge.".into()
        }
        Knee::StillScaling {
            initial_slope,
            last_slope,
        } => format!(
            "Saturation knee: not reached. The last step still gained {} tokens/s {unit} ({} of the initial {}): more load may still pay.",
            fmt_num(*last_slope),
            pct(last_slope / initial_slope),
            fmt_num(*initial_slope)
        ),
        Knee::At {
            index,
            initial_slope,
            next_slope,
        } => {
            let l = &c.levels[*index];
            let next = c.levels[*index + 1..].iter().find(|n| whole(n));
            format!(
                "Saturation knee: {} ({}). The next step{} gained {} tokens/s {unit}, {} of the initial {} (threshold {}): adding load past this point stopped paying.",
                c.name(l),
                c.tps(l),
                next.map(|n| format!(" to {}", c.name(n)))
                    .unwrap_or_default(),
                fmt_num(*next_slope),
                pct(next_slope / initial_slope),
                fmt_num(*initial_slope),
                pct(c.o.knee_fraction)
            )
        }
    })
}

/// Where errors begin and where they pass the limit, or that there were none.
pub(super) fn errors_statement(c: &Ctx<'_>) -> Option<String> {
    let levels = c.levels;
    let Some(i) = c.f.errors_begin else {
        return Some(format!(
            "Errors: none at any level ({} requests in all).",
            levels.iter().map(|l| u64::from(l.requests)).sum::<u64>()
        ));
    };
    let l = &levels[i];
    let mut s = format!(
        "Errors begin at {}: {} of {} requests failed ({}){}.",
        c.name(l),
        l.failed,
        l.requests,
        pct(l.error_rate),
        if l.errors_by_kind.is_empty() {
            String::new()
        } else {
            format!(", {}", l.errors_by_kind.replace(';', ", "))
        }
    );
    match c.f.errors_over_limit {
        Some(j) if j != i => s.push_str(&format!(
            " They pass the {} limit at {} ({}).",
            pct(c.o.max_error_rate),
            c.name(&levels[j]),
            pct(levels[j].error_rate)
        )),
        None => s.push_str(&format!(
            " No level passes the {} limit.",
            pct(c.o.max_error_rate)
        )),
        _ => {}
    }
    Some(s)
}

/// The most tokens per joule, when power was measured.
pub(super) fn efficiency_statement(c: &Ctx<'_>) -> Option<String> {
    let l = &c.levels[c.f.most_efficient?];
    let energy = |f: fn(&CycleEnergy) -> Option<f64>| l.energy.as_ref().and_then(f);
    let mut s = format!(
        "Most efficient per joule: {} at {} tokens/J ({} J/token, mean power {} W).",
        c.name(l),
        fmt_num(l.tokens_per_joule().unwrap_or(0.0)),
        fmt_num(energy(|e| e.joules_per_token).unwrap_or(0.0)),
        l.mean_power_w().map_or("?".into(), fmt_num)
    );
    if let Some(net) = energy(|e| e.net_tokens_per_joule) {
        s.push_str(&format!(
            " Above the idle baseline ({} W): {} tokens/J.",
            energy(|e| e.baseline_power_w).map_or("?".into(), fmt_num),
            fmt_num(net)
        ));
    }
    if let Some(b) = c.f.best.filter(|&b| Some(b) != c.f.most_efficient) {
        if let Some(tpj) = c.levels[b].tokens_per_joule() {
            s.push_str(&format!(
                " The best level ({}) gets {} tokens/J.",
                c.name(&c.levels[b]),
                fmt_num(tpj)
            ));
        }
    }
    Some(s)
}
