//! Per-cycle aggregation across agents: each agent's part of a cycle ([`MemberCycle`]: its
//! start, requests, end, losses), the merged statistics and the console's rows ([`CycleSink`]),
//! the merged live progress, and the cycle's summary row built from all of them.

use crate::link::ClockMap;
use crate::sinks::console::Console;
use crate::sinks::run_folder::{CycleWriter, OutDirError};
use tokengun_common::stats::{AgentCycle, TargetTally};
use tokengun_common::{
    CycleDone, CycleInfo, CyclePlan, CycleStats, CycleSummary, OutcomeKind, Progress, RecordBody,
    RequestRecord, Slo, TokenChunk,
};

/// One agent's part of a cycle.
pub struct MemberCycle {
    /// Its member's index in the fleet.
    pub member: usize,
    pub plan: CyclePlan,
    pub writer: Option<CycleWriter>,
    pub done: Option<CycleDone>,
    pub origin_mono_ns: Option<u64>,
    /// Its cycle origin against the scheduled start, on this machine's clock (several agents).
    pub start_offset_s: Option<f64>,
    pub lost: Option<String>,
    /// Lost, then reconnected and replayed.
    pub recovered: bool,
    /// Until when a lost agent is waited for.
    pub reconnect_until: Option<tokio::time::Instant>,
    pub gaps: u64,
    pub last_heard: tokio::time::Instant,
    pub requests: u32,
    pub completed: u32,
    pub failed: u32,
    pub output_tokens: u64,
}

/// Where a record goes once its part has taken it.
pub struct Sinks<'a> {
    pub cycle: &'a mut CycleSink,
    pub console: &'a mut Console,
}

impl MemberCycle {
    pub fn new(member: usize, plan: CyclePlan, writer: Option<CycleWriter>) -> Self {
        Self {
            member,
            plan,
            writer,
            done: None,
            origin_mono_ns: None,
            start_offset_s: None,
            lost: None,
            recovered: false,
            reconnect_until: None,
            gaps: 0,
            last_heard: tokio::time::Instant::now(),
            requests: 0,
            completed: 0,
            failed: 0,
            output_tokens: 0,
        }
    }

    /// Takes one of this agent's records of its cycle: its start, a request (written and
    /// counted), its end. Returns a progress record for the caller to merge; records of other
    /// cycles are ignored. `clock` and `scheduled` place its start against the others'.
    pub fn apply(
        &mut self,
        body: RecordBody,
        (clock, scheduled): (Option<ClockMap>, Option<std::time::Instant>),
        to: Sinks<'_>,
    ) -> Result<Option<Progress>, OutDirError> {
        let cycle_id = self.plan.cycle_id;
        match body {
            RecordBody::CycleStarted {
                cycle_id: c,
                started_unix_ns,
                origin_mono_ns,
            } if c == cycle_id => {
                self.origin_mono_ns = Some(origin_mono_ns);
                if let (Some(c), Some(t0)) = (clock, scheduled) {
                    let local = c.local_at(origin_mono_ns);
                    self.start_offset_s = Some(if local >= t0 {
                        (local - t0).as_secs_f64()
                    } else {
                        -(t0 - local).as_secs_f64()
                    });
                }
                if let Some(w) = self.writer.as_mut() {
                    w.set_origin(started_unix_ns);
                }
            }
            RecordBody::Request(r) if r.cycle_id == cycle_id => {
                to.console.request_done(&r);
                self.requests += 1;
                if r.outcome == OutcomeKind::Completed {
                    self.completed += 1;
                    self.output_tokens += r.output_tokens;
                } else {
                    self.failed += 1;
                }
                if let Some(w) = self.writer.as_mut() {
                    w.record(&r)?;
                }
                to.cycle.take(*r);
            }
            RecordBody::Progress(pr) if pr.cycle_id == cycle_id => return Ok(Some(pr)),
            RecordBody::CycleDone(d) if d.cycle_id == cycle_id => {
                if d.recovered {
                    // The agent restarted mid-cycle: what was in flight then is gone.
                    self.lost
                        .get_or_insert_with(|| "the agent restarted mid-cycle".into());
                    self.recovered = true;
                }
                self.done = Some(d);
            }
            _ => {} // records of an earlier cycle, already counted
        }
        Ok(None)
    }

    /// Requests this part should account for: the agent's own count when its cycle end came, a
    /// burst's planned size when it did not, or when an agent restart lost what was in flight (the
    /// restarted agent knows only the requests it recorded).
    pub fn expected_requests(&self) -> u32 {
        let planned = self
            .plan
            .shape
            .planned_requests(self.plan.concurrency)
            .unwrap_or(self.requests);
        match self.done {
            Some(d) if d.recovered => d.requests.max(planned),
            Some(d) => d.requests,
            None => planned,
        }
    }

    /// Nothing more will come from this agent for this cycle.
    pub fn finished(&self, now: tokio::time::Instant) -> bool {
        self.done.is_some()
            || (self.lost.is_some() && self.reconnect_until.is_none_or(|u| now >= u))
    }

    /// The agent ended the cycle early on its own (a restart is a loss, not this).
    pub fn aborted(&self) -> bool {
        self.done.is_some_and(|d| d.aborted && !d.recovered)
    }

    /// Still waited for: neither done nor lost.
    pub fn pending(&self) -> bool {
        self.done.is_none() && self.lost.is_none()
    }
}

/// Where a cycle's request records go as they arrive, across agents: the merged statistics
/// (from raw records, never from per-agent percentiles) and (bounded) the console's table rows.
pub struct CycleSink {
    pub stats: CycleStats,
    /// Each target's part, when the cycle spread over several.
    pub targets: TargetTally,
    slo: Slo,
    /// Table rows without their timelines.
    pub table: Vec<RequestRecord>,
    keep_all_rows: bool,
}

impl CycleSink {
    /// A sink for `plan`'s cycle. Peak-concurrency edges older than `fold_after` (the longest a
    /// request can still be in flight, with a lost agent's replay) are folded, so an hours-long
    /// level stays small.
    pub fn new(plan: &CyclePlan, slo: Slo, fold_after: std::time::Duration) -> Self {
        Self {
            targets: TargetTally::new(plan.targets().iter().map(|t| t.to_string()).collect()),
            stats: CycleStats::with_window(plan.shape.window_ns(plan.duration))
                .fold_after(fold_after),
            slo,
            table: Vec::new(),
            // A burst shows all its requests; longer loops a bounded sample.
            keep_all_rows: plan.shape.planned_requests(plan.concurrency).is_some(),
        }
    }

    pub fn take(&mut self, mut r: RequestRecord) {
        self.stats.add(&r, &self.slo);
        self.targets.add(&r);
        if self.keep_all_rows || self.table.len() <= crate::sinks::console::TABLE_MAX_ROWS {
            // The table needs the rate: keep the first chunk, one holding the tokens between, and
            // the last (tokens_per_s spans first to last), not the whole timeline.
            if r.timeline.len() > 3 {
                let first = r.timeline[0];
                let last = r.timeline[r.timeline.len() - 1];
                let between: u32 = r.timeline[1..r.timeline.len() - 1]
                    .iter()
                    .map(|c| c.tokens)
                    .sum();
                r.timeline = vec![
                    first,
                    TokenChunk {
                        offset_ns: last.offset_ns,
                        tokens: between,
                    },
                    last,
                ];
            }
            self.table.push(r);
        }
    }
}

/// Sums the agents' latest progress into one.
pub fn merged_progress(latest: &[Option<Progress>]) -> Option<Progress> {
    let mut it = latest.iter().flatten();
    let mut acc = it.next()?.clone();
    for p in it {
        acc.in_flight += p.in_flight;
        acc.completed += p.completed;
        acc.failed += p.failed;
        acc.tokens += p.tokens;
        acc.elapsed_ns = acc.elapsed_ns.max(p.elapsed_ns);
        acc.live.extend(p.live.iter().cloned());
        acc.live_omitted += p.live_omitted;
    }
    Some(acc)
}

/// A finished cycle, as the summary needs it.
pub struct CycleParts<'a> {
    pub model: &'a str,
    /// `warmup`, or the level's label.
    pub label: &'a str,
    pub plan: &'a CyclePlan,
    pub parts: &'a [MemberCycle],
    pub sink: &'a CycleSink,
    pub slo: &'a Slo,
    pub partial: bool,
    /// Each member's label and address (several agents: the summary has a row per agent).
    pub agents: Option<Vec<(String, String)>>,
}

/// The cycle's summary row: merged statistics, the agents' self-checks, and (several agents)
/// each agent's share and how closely their starts agreed.
pub fn summarize(c: &CycleParts<'_>) -> CycleSummary {
    let info = CycleInfo {
        model: c.model.to_string(),
        shape: c.plan.shape.as_str().to_string(),
        level: c.label.to_string(),
        concurrency: c.plan.concurrency,
        rate_per_s: c.plan.shape.is_rate().then_some(c.plan.rate_per_s),
        window_ns: c.plan.shape.window_ns(c.plan.duration),
        expected_requests: c.parts.iter().map(MemberCycle::expected_requests).sum(),
    };
    let mut summary = CycleSummary::from_stats(&info, &c.sink.stats, c.slo, c.partial);
    // Was tokengun itself the bottleneck? Each agent measured its own CPU and loop delay.
    let checks: Vec<_> = c.parts.iter().filter_map(|p| p.done?.self_check).collect();
    summary.apply_self_checks(&checks);
    let Some(agents) = &c.agents else {
        return summary;
    };
    let starts: Vec<f64> = c.parts.iter().filter_map(|p| p.start_offset_s).collect();
    summary.start_spread_s = starts
        .iter()
        .copied()
        .reduce(f64::max)
        .zip(starts.iter().copied().reduce(f64::min))
        .map(|(hi, lo)| hi - lo);
    summary.agents = c
        .parts
        .iter()
        .map(|p| {
            let (agent, address) = agents.get(p.member).cloned().unwrap_or_default();
            AgentCycle {
                agent,
                address,
                requests: p.expected_requests(),
                completed: p.completed,
                failed: p.failed,
                output_tokens: p.output_tokens,
                start_offset_s: p.start_offset_s,
                lost: p.lost.is_some(),
                recovered: p.recovered,
            }
        })
        .collect();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokengun_common::{Api, LoadShape, PromptSpec, RequestOptions};

    fn plan(shape: LoadShape, concurrency: u32) -> CyclePlan {
        CyclePlan {
            target_urls: Vec::new(),
            target_policy: Default::default(),
            pinned_target: None,
            target_offset: 0,
            cycle_id: 2,
            shape,
            concurrency,
            rate_per_s: 0.0,
            arrival: tokengun_common::Arrival::Poisson,
            duration: Duration::from_secs(10),
            seed: 0,
            target_url: "http://127.0.0.1:9".into(),
            api: Api::OllamaGenerate,
            model: "m".into(),
            prompts: vec![PromptSpec::plain("hi")],
            request_timeout: Duration::from_secs(60),
            options: RequestOptions::default(),
            extra_body_json: String::new(),
            workload: Default::default(),
        }
    }

    fn request(cycle_id: u32, id: u32, outcome: OutcomeKind, tokens: u64) -> RequestRecord {
        RequestRecord {
            cycle_id,
            request_id: id,
            prompt_index: 0,
            workload: Default::default(),
            target_index: 0,
            intended_start_ns: 0,
            dispatched_ns: 1_000_000,
            sent_ns: 1_000_000,
            first_byte_ns: Some(100_000_000),
            first_token_ns: Some(200_000_000),
            first_answer_ns: Some(200_000_000),
            last_token_ns: Some(900_000_000),
            end_ns: 1_000_000_000,
            status_code: Some(200),
            outcome,
            error: String::new(),
            output_tokens: tokens,
            token_source: tokengun_common::TokenSource::Counted,
            counted_tokens: tokens,
            utf8_merged_tokens: 0,
            reasoning_tokens: 0,
            prompt_tokens: None,
            server: tokengun_common::ServerTimings::default(),
            done_reason: String::new(),
            timeline: Vec::new(),
        }
    }

    fn progress(in_flight: u32, completed: u32, elapsed_ns: u64) -> Progress {
        Progress {
            cycle_id: 2,
            in_flight,
            completed,
            failed: 1,
            tokens: 10,
            elapsed_ns,
            ..Progress::default()
        }
    }

    fn done(requests: u32, aborted: bool, recovered: bool) -> CycleDone {
        CycleDone {
            cycle_id: 2,
            requests,
            completed: requests,
            failed: 0,
            aborted,
            ended_mono_ns: 0,
            recovered,
            self_check: None,
        }
    }

    /// Applies `body` to `part` with a quiet console and a fresh sink.
    fn apply(part: &mut MemberCycle, sink: &mut CycleSink, body: RecordBody) -> Option<Progress> {
        let mut console = Console::new(true);
        part.apply(
            body,
            (None, None),
            Sinks {
                cycle: sink,
                console: &mut console,
            },
        )
        .expect("no writer, nothing to fail")
    }

    #[test]
    fn merged_progress_sums_the_counts_and_keeps_the_longest_elapsed() {
        assert_eq!(merged_progress(&[None, None]), None);
        let one = progress(2, 3, 5);
        assert_eq!(merged_progress(&[None, Some(one.clone())]), Some(one));
        let all = merged_progress(&[Some(progress(2, 3, 5)), None, Some(progress(1, 4, 9))])
            .expect("two agents said something");
        assert_eq!(all.in_flight, 3);
        assert_eq!(all.completed, 7);
        assert_eq!(all.failed, 2);
        assert_eq!(all.tokens, 20);
        assert_eq!(all.elapsed_ns, 9);
    }

    #[test]
    fn a_part_counts_only_its_own_cycles_records() {
        let p = plan(LoadShape::Burst, 3);
        let mut sink = CycleSink::new(&p, Slo::default(), Duration::from_secs(60));
        let mut part = MemberCycle::new(0, p, None);
        let req = |c, id, o, t| RecordBody::Request(Box::new(request(c, id, o, t)));
        apply(&mut part, &mut sink, req(2, 1, OutcomeKind::Completed, 5));
        apply(&mut part, &mut sink, req(2, 2, OutcomeKind::HttpError, 0));
        // A replayed record of an earlier cycle is not this cycle's.
        apply(&mut part, &mut sink, req(1, 9, OutcomeKind::Completed, 50));
        assert_eq!((part.requests, part.completed, part.failed), (2, 1, 1));
        assert_eq!(part.output_tokens, 5);
        assert_eq!(sink.stats.requests, 2);
        assert_eq!(sink.table.len(), 2);
        let pr = apply(
            &mut part,
            &mut sink,
            RecordBody::Progress(progress(1, 1, 1)),
        );
        assert!(pr.is_some(), "its progress is handed back to be merged");
        assert!(!part.finished(tokio::time::Instant::now()));
        // Its end closes the part; a burst whose end never came expects its planned size.
        assert_eq!(part.expected_requests(), 3);
        apply(
            &mut part,
            &mut sink,
            RecordBody::CycleDone(done(2, false, false)),
        );
        assert!(part.finished(tokio::time::Instant::now()));
        assert_eq!(part.expected_requests(), 2, "the agent's own count");
        assert!(!part.aborted());
    }

    #[test]
    fn a_restarted_agent_is_a_loss_that_expects_at_least_the_plan() {
        let mut sink = CycleSink::new(
            &plan(LoadShape::Burst, 4),
            Slo::default(),
            Duration::from_secs(60),
        );
        let mut part = MemberCycle::new(0, plan(LoadShape::Burst, 4), None);
        apply(
            &mut part,
            &mut sink,
            RecordBody::CycleDone(done(1, true, true)),
        );
        assert!(part.recovered);
        assert_eq!(part.lost.as_deref(), Some("the agent restarted mid-cycle"));
        assert_eq!(part.expected_requests(), 4);
        assert!(!part.aborted(), "a restart is a loss, not an abort");
        let mut closed = MemberCycle::new(0, plan(LoadShape::Closed, 4), None);
        apply(
            &mut closed,
            &mut sink,
            RecordBody::CycleDone(done(7, true, false)),
        );
        assert!(closed.aborted());
        assert_eq!(closed.expected_requests(), 7);
    }

    #[test]
    fn a_lost_part_is_finished_once_its_wait_is_over() {
        let mut part = MemberCycle::new(0, plan(LoadShape::Closed, 1), None);
        let now = tokio::time::Instant::now();
        part.lost = Some("gone".into());
        part.reconnect_until = Some(now + Duration::from_secs(5));
        assert!(!part.finished(now));
        assert!(part.finished(now + Duration::from_secs(5)));
        part.reconnect_until = None;
        assert!(part.finished(now));
    }

    #[test]
    fn the_table_keeps_a_long_loops_first_rows_and_shortens_timelines() {
        let p = plan(LoadShape::Closed, 1);
        let mut sink = CycleSink::new(&p, Slo::default(), Duration::from_secs(60));
        for id in 0..200 {
            let mut r = request(2, id, OutcomeKind::Completed, 5);
            r.timeline = (1..=5)
                .map(|i| TokenChunk {
                    offset_ns: i * 1_000,
                    tokens: 1,
                })
                .collect();
            sink.take(r);
        }
        assert_eq!(sink.stats.requests, 200);
        assert_eq!(sink.table.len(), crate::sinks::console::TABLE_MAX_ROWS + 1);
        let t = &sink.table[0].timeline;
        assert_eq!(t.len(), 3);
        assert_eq!(t.iter().map(|c| c.tokens).sum::<u32>(), 5);
        assert_eq!(t[2].offset_ns, 5_000);
    }

    #[test]
    fn the_summary_has_a_row_per_agent_and_their_start_spread() {
        let p = plan(LoadShape::Burst, 2);
        let mut sink = CycleSink::new(&p, Slo::default(), Duration::from_secs(60));
        let mut a = MemberCycle::new(0, plan(LoadShape::Burst, 1), None);
        let mut b = MemberCycle::new(1, plan(LoadShape::Burst, 1), None);
        let req = |id| RecordBody::Request(Box::new(request(2, id, OutcomeKind::Completed, 4)));
        apply(&mut a, &mut sink, req(1));
        apply(&mut b, &mut sink, req(2));
        a.start_offset_s = Some(0.001);
        b.start_offset_s = Some(0.004);
        b.lost = Some("gone".into());
        let parts = [a, b];
        let agents = vec![
            ("agent1".to_string(), "127.0.0.1:1".to_string()),
            ("agent2".to_string(), "127.0.0.1:2".to_string()),
        ];
        let s = summarize(&CycleParts {
            model: "m",
            label: "2",
            plan: &p,
            parts: &parts,
            sink: &sink,
            slo: &Slo::default(),
            partial: true,
            agents: Some(agents),
        });
        assert_eq!(s.level, "2");
        assert_eq!(s.requests, 2);
        assert!(s.partial);
        assert_eq!(s.agents.len(), 2);
        assert_eq!(s.agents[1].agent, "agent2");
        assert!(s.agents[1].lost);
        assert_eq!(s.agents[0].requests, 1);
        let spread = s.start_spread_s.expect("two starts");
        assert!((spread - 0.003).abs() < 1e-12);
        // One agent: no per-agent rows.
        let one = summarize(&CycleParts {
            agents: None,
            parts: &parts[..1],
            ..CycleParts {
                model: "m",
                label: "2",
                plan: &p,
                parts: &parts,
                sink: &sink,
                slo: &Slo::default(),
                partial: false,
                agents: None,
            }
        });
        assert!(one.agents.is_empty());
        assert_eq!(one.start_spread_s, None);
    }
}
