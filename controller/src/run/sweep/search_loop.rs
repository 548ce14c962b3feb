//! The sweep of an SLO search: the warm-up if any, then the levels [`next_probe`] asks for, one
//! at a time, each judged by [`meets`] as it ends; the probes and the answer go to run.json.

use super::{Step, Sweep};
use crate::plan::search::{Next, Probe, SearchSpec, meets, next_probe};
use crate::plan::{Level, Phase, cycle_plan, phases};
use crate::run::{RunError, RunReport};
use tokengun_common::run_dir::{SearchProbe, SearchRecord};

impl Sweep<'_> {
    /// Runs the search to its answer (or until stopped), then closes the run.
    pub(super) async fn search(mut self, spec: SearchSpec) -> Result<RunReport, RunError> {
        let mut broken = None;
        if let Some(w) = phases(&self.cfg, &self.up.target)
            .into_iter()
            .find(|p| p.is_warmup())
        {
            if let Step::Stop(r) = self.phase(&w, None).await? {
                return self.finish(r).await;
            }
        }
        let mut probes: Vec<Probe> = Vec::new();
        let mut record = SearchRecord {
            slo: slo_words(&spec, &self.cfg.slo),
            probes: Vec::new(),
            answer: None,
            failed_above: None,
            reason: "stopped before an answer".into(),
        };
        for index in 0.. {
            let x = match next_probe(&spec, &probes) {
                Next::Probe(x) => x,
                Next::Done(a) => {
                    record.answer = a.level;
                    record.failed_above = a.failed_above;
                    record.reason = a.reason;
                    break;
                }
            };
            if self.stop.is_cancelled() {
                break;
            }
            let runs = probes.iter().filter(|p| p.x == x).count();
            let phase = self.probe_phase(index, x, runs);
            let label = phase.label.clone();
            self.manifest.levels.push(label.clone());
            if let Step::Stop(r) = self.phase(&phase, None).await? {
                broken = r;
                break;
            }
            let Some(summary) = self.manifest.cycles.last() else {
                break;
            };
            let (met, why) = meets(&spec, summary);
            self.console.line(&format!(
                "  search: {label} {} the SLO{}",
                if met { "met" } else { "did not meet" },
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({why})")
                }
            ));
            record.probes.push(SearchProbe {
                label,
                x,
                met,
                why: why.clone(),
                goodput_requests_per_s: summary.goodput_requests_per_s,
            });
            probes.push(Probe { x, met, why });
        }
        let answer = answer_words(&record);
        self.console.line(&format!(
            "\n■ search: highest level meeting the SLO: {answer}; {}",
            record.reason
        ));
        self.manifest.search = Some(record);
        self.finish(broken).await
    }
}

impl Sweep<'_> {
    /// The phase of probe `index` at level `x`, its `runs`-th repetition after the first.
    fn probe_phase(&self, index: usize, x: f64, runs: usize) -> Phase {
        let level = if self.cfg.shape.is_rate() {
            Level {
                concurrency: self.cfg.levels.first().map_or(0, |l| l.concurrency),
                rate_per_s: Some(x),
            }
        } else {
            Level {
                concurrency: x as u32,
                rate_per_s: None,
            }
        };
        let label = if runs == 0 {
            level.label()
        } else {
            format!("{}-rep{}", level.label(), runs + 1)
        };
        let plan = cycle_plan(
            &self.cfg,
            &self.up.target,
            crate::plan::compile::level_cycle_id(index),
            level,
            self.cfg.shape,
            self.cfg.duration,
        );
        // A search runs one group (the plan refuses several): its model and targets.
        let mut group = self.groups[0].clone();
        if self.cfg.matrix.targets.len() <= 1 {
            group.targets = vec![self.up.target.clone()];
        }
        Phase {
            level,
            plan: crate::plan::compile::for_group(plan, &group, self.cfg.matrix.policy),
            kind: crate::plan::PhaseKind::Level,
            group: 0,
            level_index: index,
            label,
        }
    }
}

/// The answer and its bracket, in words.
fn answer_words(r: &SearchRecord) -> String {
    match (r.answer, r.failed_above) {
        (Some(a), Some(f)) => format!("{a} (the boundary lies between {a} and {f})"),
        (Some(a), None) => format!("{a} (the highest level probed; the boundary may be above)"),
        (None, Some(f)) => format!("none (even {f} failed)"),
        (None, None) => "none".into(),
    }
}

/// The SLO searched for, in words.
fn slo_words(spec: &SearchSpec, slo: &tokengun_common::Slo) -> String {
    let mut per = vec![format!("at least {} tokens/s", slo.tokens_per_s)];
    if let Some(t) = slo.ttft_s {
        per.push(format!("TTFT at most {t} s"));
    }
    if let Some(t) = slo.e2e_s {
        per.push(format!("end-to-end at most {t} s"));
    }
    let mut s = format!(
        "at least {:.0}% of requests meeting the per-request SLO ({})",
        spec.min_good_share * 100.0,
        per.join(", ")
    );
    if let Some(t) = spec.ttft_p99_max_s {
        s.push_str(&format!(", TTFT p99 at most {t} s"));
    }
    s.push_str(&format!(
        ", at most {:.1}% errors",
        spec.max_error_rate * 100.0
    ));
    s
}
