//! The one place where wire (prost) types and domain types meet; nothing else touches prost types.

use crate as pb;
use std::time::Duration;
use tokengun_common as dom;

/// A wire message could not be turned into a domain value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("field {0} is missing")]
    Missing(&'static str),
    #[error("field {field} has unknown value {value} (is the peer a newer version?)")]
    UnknownEnum { field: &'static str, value: i32 },
    #[error("{0}")]
    Invalid(String),
}

fn api_from(v: i32) -> Result<dom::Api, ConvertError> {
    api_from_wire(v)?.ok_or(ConvertError::Missing("api"))
}

/// Domain API to wire API (`None` = unspecified: probe).
pub fn api_to(api: Option<dom::Api>) -> i32 {
    (match api {
        None => pb::Api::Unspecified,
        Some(dom::Api::OllamaGenerate) => pb::Api::OllamaGenerate,
        Some(dom::Api::OllamaChat) => pb::Api::OllamaChat,
        Some(dom::Api::OpenaiCompletions) => pb::Api::OpenaiCompletions,
        Some(dom::Api::OpenaiChat) => pb::Api::OpenaiChat,
    }) as i32
}

/// Wire API to domain API (`None` = unspecified).
pub fn api_from_wire(v: i32) -> Result<Option<dom::Api>, ConvertError> {
    Ok(match pb::Api::try_from(v) {
        Ok(pb::Api::Unspecified) => None,
        Ok(pb::Api::OllamaGenerate) => Some(dom::Api::OllamaGenerate),
        Ok(pb::Api::OllamaChat) => Some(dom::Api::OllamaChat),
        Ok(pb::Api::OpenaiCompletions) => Some(dom::Api::OpenaiCompletions),
        Ok(pb::Api::OpenaiChat) => Some(dom::Api::OpenaiChat),
        Err(_) => {
            return Err(ConvertError::UnknownEnum {
                field: "api",
                value: v,
            });
        }
    })
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&dom::CyclePlan> for pb::CyclePlan {
    fn from(p: &dom::CyclePlan) -> Self {
        pb::CyclePlan {
            cycle_id: p.cycle_id,
            shape: match p.shape {
                dom::LoadShape::Burst => pb::LoadShape::Burst,
                dom::LoadShape::Closed => pb::LoadShape::Closed,
                dom::LoadShape::Open => pb::LoadShape::Open,
            } as i32,
            concurrency: p.concurrency,
            rate_per_s: p.rate_per_s,
            arrival: match p.arrival {
                dom::Arrival::Constant => pb::Arrival::Constant,
                dom::Arrival::Poisson => pb::Arrival::Poisson,
            } as i32,
            duration_ms: ms(p.duration),
            seed: p.seed,
            target_url: p.target_url.clone(),
            api: api_to(Some(p.api)),
            model: p.model.clone(),
            prompts: p
                .prompts
                .iter()
                .map(|q| pb::PromptSpec {
                    text: q.text.clone(),
                    extra_body_json: q.extra_body_json.clone(),
                    max_tokens: q.max_tokens,
                    messages_json: q.messages_json.clone(),
                    input_tokens: q.input_tokens,
                    force_output: q.force_output,
                    later_turns: q.later_turns.clone(),
                })
                .collect(),
            options: Some(pb::RequestOptions {
                max_tokens: p.options.max_tokens,
                temperature: p.options.temperature,
                seed: p.options.seed,
                stop: p.options.stop.clone(),
                keep_alive: p.options.keep_alive.clone(),
            }),
            request_timeout_ms: ms(p.request_timeout),
            extra_body_json: p.extra_body_json.clone(),
            conversation_turns: p.workload.turns,
            think_time_ms: ms(p.workload.think_time),
            think_exponential: p.workload.think_exponential,
            trace_at_ms: p.workload.trace_at_ms.clone(),
            target_urls: p.target_urls.clone(),
            target_policy: match p.target_policy {
                dom::TargetPolicy::RoundRobin => pb::TargetPolicy::RoundRobin,
                dom::TargetPolicy::LeastInFlight => pb::TargetPolicy::LeastInFlight,
                dom::TargetPolicy::Pinned => pb::TargetPolicy::Pinned,
            } as i32,
            pinned_target: p.pinned_target,
            target_offset: p.target_offset,
        }
    }
}

impl TryFrom<pb::CyclePlan> for dom::CyclePlan {
    type Error = ConvertError;
    fn try_from(p: pb::CyclePlan) -> Result<Self, ConvertError> {
        let shape = match pb::LoadShape::try_from(p.shape) {
            Ok(pb::LoadShape::Burst) => dom::LoadShape::Burst,
            Ok(pb::LoadShape::Closed) => dom::LoadShape::Closed,
            Ok(pb::LoadShape::Open) => dom::LoadShape::Open,
            _ => {
                return Err(ConvertError::UnknownEnum {
                    field: "shape",
                    value: p.shape,
                });
            }
        };
        let arrival = match pb::Arrival::try_from(p.arrival) {
            Ok(pb::Arrival::Constant) => dom::Arrival::Constant,
            Ok(pb::Arrival::Poisson) => dom::Arrival::Poisson,
            _ => {
                return Err(ConvertError::UnknownEnum {
                    field: "arrival",
                    value: p.arrival,
                });
            }
        };
        let target_policy = match pb::TargetPolicy::try_from(p.target_policy) {
            Ok(pb::TargetPolicy::RoundRobin) => dom::TargetPolicy::RoundRobin,
            Ok(pb::TargetPolicy::LeastInFlight) => dom::TargetPolicy::LeastInFlight,
            Ok(pb::TargetPolicy::Pinned) => dom::TargetPolicy::Pinned,
            Err(_) => {
                return Err(ConvertError::UnknownEnum {
                    field: "target_policy",
                    value: p.target_policy,
                });
            }
        };
        let plan = dom::CyclePlan {
            target_urls: p.target_urls,
            target_policy,
            pinned_target: p.pinned_target,
            target_offset: p.target_offset,
            cycle_id: p.cycle_id,
            shape,
            concurrency: p.concurrency,
            rate_per_s: p.rate_per_s,
            arrival,
            duration: Duration::from_millis(p.duration_ms),
            seed: p.seed,
            target_url: p.target_url,
            api: api_from(p.api)?,
            model: p.model,
            prompts: p
                .prompts
                .into_iter()
                .map(|q| dom::PromptSpec {
                    text: q.text,
                    max_tokens: q.max_tokens,
                    extra_body_json: q.extra_body_json,
                    messages_json: q.messages_json,
                    input_tokens: q.input_tokens,
                    force_output: q.force_output,
                    later_turns: q.later_turns,
                })
                .collect(),
            options: p
                .options
                .map(|o| dom::RequestOptions {
                    max_tokens: o.max_tokens,
                    temperature: o.temperature,
                    seed: o.seed,
                    stop: o.stop,
                    keep_alive: o.keep_alive,
                })
                .unwrap_or_default(),
            request_timeout: Duration::from_millis(p.request_timeout_ms),
            extra_body_json: p.extra_body_json,
            workload: dom::CycleWorkload {
                turns: p.conversation_turns,
                think_time: Duration::from_millis(p.think_time_ms),
                think_exponential: p.think_exponential,
                trace_at_ms: p.trace_at_ms,
            },
        };
        plan.validate()
            .map_err(|e| ConvertError::Invalid(e.to_string()))?;
        Ok(plan)
    }
}

fn outcome_to(k: dom::OutcomeKind) -> pb::OutcomeKind {
    use dom::OutcomeKind as D;
    use pb::OutcomeKind as P;
    match k {
        D::Completed => P::Completed,
        D::HttpError => P::HttpError,
        D::ConnectError => P::ConnectError,
        D::Timeout => P::Timeout,
        D::Malformed => P::Malformed,
        D::Truncated => P::Truncated,
        D::ServerError => P::ServerError,
        D::Aborted => P::Aborted,
    }
}

fn outcome_from(v: i32) -> Result<dom::OutcomeKind, ConvertError> {
    use dom::OutcomeKind as D;
    use pb::OutcomeKind as P;
    Ok(match P::try_from(v) {
        Ok(P::Completed) => D::Completed,
        Ok(P::HttpError) => D::HttpError,
        Ok(P::ConnectError) => D::ConnectError,
        Ok(P::Timeout) => D::Timeout,
        Ok(P::Malformed) => D::Malformed,
        Ok(P::Truncated) => D::Truncated,
        Ok(P::ServerError) => D::ServerError,
        Ok(P::Aborted) => D::Aborted,
        _ => {
            return Err(ConvertError::UnknownEnum {
                field: "outcome",
                value: v,
            });
        }
    })
}

impl From<&dom::RequestRecord> for pb::RequestRecord {
    fn from(r: &dom::RequestRecord) -> Self {
        pb::RequestRecord {
            cycle_id: r.cycle_id,
            request_id: r.request_id,
            prompt_index: r.prompt_index,
            intended_prompt_tokens: r.workload.intended_prompt_tokens,
            conversation: r.workload.conversation,
            turn: r.workload.turn,
            target_index: r.target_index,
            intended_start_ns: r.intended_start_ns,
            dispatched_ns: r.dispatched_ns,
            sent_ns: r.sent_ns,
            first_byte_ns: r.first_byte_ns,
            first_token_ns: r.first_token_ns,
            first_answer_ns: r.first_answer_ns,
            last_token_ns: r.last_token_ns,
            end_ns: r.end_ns,
            status_code: r.status_code.map(u32::from),
            outcome: outcome_to(r.outcome) as i32,
            error: r.error.clone(),
            output_tokens: r.output_tokens,
            token_source: match r.token_source {
                dom::TokenSource::Server => pb::TokenSource::Server,
                dom::TokenSource::Counted => pb::TokenSource::Counted,
            } as i32,
            counted_tokens: r.counted_tokens,
            utf8_merged_tokens: r.utf8_merged_tokens,
            reasoning_tokens: r.reasoning_tokens,
            prompt_tokens: r.prompt_tokens,
            server_total_ns: r.server.total_ns,
            server_load_ns: r.server.load_ns,
            server_prompt_eval_ns: r.server.prompt_eval_ns,
            server_eval_ns: r.server.eval_ns,
            server_prompt_eval_tokens: r.server.prompt_eval_tokens,
            server_cached_tokens: r.server.cached_tokens,
            server_reasoning_tokens: r.server.reasoning_tokens,
            done_reason: r.done_reason.clone(),
            chunk_offsets_ns: r.timeline.iter().map(|c| c.offset_ns).collect(),
            chunk_tokens: r.timeline.iter().map(|c| c.tokens).collect(),
        }
    }
}

impl TryFrom<pb::RequestRecord> for dom::RequestRecord {
    type Error = ConvertError;
    fn try_from(r: pb::RequestRecord) -> Result<Self, ConvertError> {
        if r.chunk_offsets_ns.len() != r.chunk_tokens.len() {
            return Err(ConvertError::Invalid(format!(
                "request {}: {} chunk offsets but {} chunk token counts",
                r.request_id,
                r.chunk_offsets_ns.len(),
                r.chunk_tokens.len()
            )));
        }
        let status_code = match r.status_code {
            Some(c) => Some(u16::try_from(c).map_err(|_| {
                ConvertError::Invalid(format!("status code {c} is not an HTTP status"))
            })?),
            None => None,
        };
        let token_source = match pb::TokenSource::try_from(r.token_source) {
            Ok(pb::TokenSource::Server) => dom::TokenSource::Server,
            Ok(pb::TokenSource::Counted) => dom::TokenSource::Counted,
            _ => {
                return Err(ConvertError::UnknownEnum {
                    field: "token_source",
                    value: r.token_source,
                });
            }
        };
        Ok(dom::RequestRecord {
            cycle_id: r.cycle_id,
            request_id: r.request_id,
            prompt_index: r.prompt_index,
            workload: dom::RequestWorkload {
                intended_prompt_tokens: r.intended_prompt_tokens,
                conversation: r.conversation,
                turn: r.turn,
            },
            target_index: r.target_index,
            intended_start_ns: r.intended_start_ns,
            dispatched_ns: r.dispatched_ns,
            sent_ns: r.sent_ns,
            first_byte_ns: r.first_byte_ns,
            first_token_ns: r.first_token_ns,
            first_answer_ns: r.first_answer_ns,
            last_token_ns: r.last_token_ns,
            end_ns: r.end_ns,
            status_code,
            outcome: outcome_from(r.outcome)?,
            error: r.error,
            output_tokens: r.output_tokens,
            token_source,
            counted_tokens: r.counted_tokens,
            utf8_merged_tokens: r.utf8_merged_tokens,
            reasoning_tokens: r.reasoning_tokens,
            prompt_tokens: r.prompt_tokens,
            server: dom::ServerTimings {
                total_ns: r.server_total_ns,
                load_ns: r.server_load_ns,
                prompt_eval_ns: r.server_prompt_eval_ns,
                eval_ns: r.server_eval_ns,
                prompt_eval_tokens: r.server_prompt_eval_tokens,
                cached_tokens: r.server_cached_tokens,
                reasoning_tokens: r.server_reasoning_tokens,
            },
            done_reason: r.done_reason,
            timeline: r
                .chunk_offsets_ns
                .into_iter()
                .zip(r.chunk_tokens)
                .map(|(offset_ns, tokens)| dom::TokenChunk { offset_ns, tokens })
                .collect(),
        })
    }
}

fn live_to(r: &dom::LiveRequest) -> pb::LiveRequest {
    pb::LiveRequest {
        request_id: r.request_id,
        phase: match r.phase {
            dom::LivePhase::Waiting => pb::LivePhase::Waiting,
            dom::LivePhase::InProgress => pb::LivePhase::InProgress,
        } as i32,
        tokens: r.tokens,
        intended_start_ns: r.intended_start_ns,
        dispatched_ns: r.dispatched_ns,
        sent_ns: r.sent_ns,
        first_byte_ns: r.first_byte_ns,
        first_token_ns: r.first_token_ns,
    }
}

fn live_from(r: &pb::LiveRequest) -> Result<dom::LiveRequest, ConvertError> {
    let phase = match pb::LivePhase::try_from(r.phase) {
        Ok(pb::LivePhase::Waiting) => dom::LivePhase::Waiting,
        Ok(pb::LivePhase::InProgress) => dom::LivePhase::InProgress,
        Ok(pb::LivePhase::Unspecified) if r.first_token_ns.is_some() => dom::LivePhase::InProgress,
        Ok(pb::LivePhase::Unspecified) => dom::LivePhase::Waiting,
        Err(_) => {
            return Err(ConvertError::UnknownEnum {
                field: "live_requests.phase",
                value: r.phase,
            });
        }
    };
    Ok(dom::LiveRequest {
        request_id: r.request_id,
        phase,
        tokens: r.tokens,
        intended_start_ns: r.intended_start_ns,
        dispatched_ns: r.dispatched_ns,
        sent_ns: r.sent_ns,
        first_byte_ns: r.first_byte_ns,
        first_token_ns: r.first_token_ns,
    })
}

impl From<&dom::Record> for pb::Record {
    fn from(r: &dom::Record) -> Self {
        use pb::record::Body;
        let body = match &r.body {
            dom::RecordBody::CycleStarted {
                cycle_id,
                started_unix_ns,
                origin_mono_ns,
            } => Body::CycleStarted(pb::CycleStarted {
                cycle_id: *cycle_id,
                started_unix_ns: *started_unix_ns,
                origin_mono_ns: *origin_mono_ns,
            }),
            dom::RecordBody::Request(q) => Body::Request(q.as_ref().into()),
            dom::RecordBody::Progress(p) => Body::Progress(pb::Progress {
                cycle_id: p.cycle_id,
                in_flight: p.in_flight,
                completed: p.completed,
                failed: p.failed,
                tokens: p.tokens,
                elapsed_ns: p.elapsed_ns,
                live_requests: p.live.iter().map(live_to).collect(),
                live_requests_omitted: p.live_omitted,
            }),
            dom::RecordBody::CycleDone(d) => Body::CycleDone(pb::CycleDone {
                cycle_id: d.cycle_id,
                requests: d.requests,
                completed: d.completed,
                failed: d.failed,
                aborted: d.aborted,
                ended_mono_ns: d.ended_mono_ns,
                recovered: d.recovered,
                agent_cpu_s: d.self_check.map_or(0.0, |c| c.cpu_s),
                agent_wall_s: d.self_check.map_or(0.0, |c| c.wall_s),
                agent_cores: d.self_check.map_or(0, |c| c.cores),
                loop_delay_p99_ms: d.self_check.and_then(|c| c.loop_delay_p99_ms),
                loop_delay_max_ms: d.self_check.and_then(|c| c.loop_delay_max_ms),
            }),
            dom::RecordBody::Monitor(m) => Body::Monitor(m.as_ref().into()),
        };
        pb::Record {
            seq: r.seq,
            body: Some(body),
        }
    }
}

impl TryFrom<pb::Record> for dom::Record {
    type Error = ConvertError;
    fn try_from(r: pb::Record) -> Result<Self, ConvertError> {
        use pb::record::Body;
        let body = match r.body.ok_or(ConvertError::Missing("record.body"))? {
            Body::CycleStarted(c) => dom::RecordBody::CycleStarted {
                cycle_id: c.cycle_id,
                started_unix_ns: c.started_unix_ns,
                origin_mono_ns: c.origin_mono_ns,
            },
            Body::Request(q) => dom::RecordBody::Request(Box::new(q.try_into()?)),
            Body::Progress(p) => dom::RecordBody::Progress(dom::Progress {
                cycle_id: p.cycle_id,
                in_flight: p.in_flight,
                completed: p.completed,
                failed: p.failed,
                tokens: p.tokens,
                elapsed_ns: p.elapsed_ns,
                live: p
                    .live_requests
                    .iter()
                    .take(dom::LIVE_REQUESTS_MAX)
                    .map(live_from)
                    .collect::<Result<_, _>>()?,
                // Rows beyond the cap (from a peer that sent more) are counted, not kept.
                live_omitted: p.live_requests_omitted.saturating_add(
                    u32::try_from(p.live_requests.len().saturating_sub(dom::LIVE_REQUESTS_MAX))
                        .unwrap_or(u32::MAX),
                ),
            }),
            Body::CycleDone(d) => dom::RecordBody::CycleDone(dom::CycleDone {
                cycle_id: d.cycle_id,
                requests: d.requests,
                completed: d.completed,
                failed: d.failed,
                aborted: d.aborted,
                ended_mono_ns: d.ended_mono_ns,
                recovered: d.recovered,
                // An agent that measured nothing sends no wall time.
                self_check: (d.agent_wall_s > 0.0).then_some(dom::AgentSelfCheck {
                    cpu_s: d.agent_cpu_s,
                    wall_s: d.agent_wall_s,
                    cores: d.agent_cores.max(1),
                    loop_delay_p99_ms: d.loop_delay_p99_ms,
                    loop_delay_max_ms: d.loop_delay_max_ms,
                }),
            }),
            Body::Monitor(m) => dom::RecordBody::Monitor(Box::new(m.try_into()?)),
        };
        Ok(dom::Record { seq: r.seq, body })
    }
}

impl From<&dom::SourceStatus> for pb::SourceStatus {
    fn from(s: &dom::SourceStatus) -> Self {
        pb::SourceStatus {
            source: s.source.clone(),
            available: s.available,
            detail: s.detail.clone(),
        }
    }
}

impl From<pb::SourceStatus> for dom::SourceStatus {
    fn from(s: pb::SourceStatus) -> Self {
        dom::SourceStatus {
            source: s.source,
            available: s.available,
            detail: s.detail,
        }
    }
}

/// A power, clock or server-metric reading: the same shape both ways.
impl From<&dom::PowerReading> for pb::PowerReading {
    fn from(r: &dom::PowerReading) -> Self {
        pb::PowerReading {
            t_ns: r.t_ns,
            source: r.source.clone(),
            device: r.device.clone(),
            metric: r.metric.clone(),
            value: r.value,
        }
    }
}

impl From<pb::PowerReading> for dom::PowerReading {
    fn from(r: pb::PowerReading) -> Self {
        dom::PowerReading {
            t_ns: r.t_ns,
            source: r.source,
            device: r.device,
            metric: r.metric,
            value: r.value,
        }
    }
}

impl From<&dom::MonitorBatch> for pb::MonitorBatch {
    fn from(m: &dom::MonitorBatch) -> Self {
        pb::MonitorBatch {
            power: m.power.iter().map(pb::PowerReading::from).collect(),
            server_metrics: m
                .server_metrics
                .iter()
                .map(pb::PowerReading::from)
                .collect(),
            processes: m
                .processes
                .iter()
                .map(|p| pb::ProcessReading {
                    t_ns: p.t_ns,
                    role: match p.role {
                        dom::ProcessRole::Server => pb::ProcessRole::Server,
                        dom::ProcessRole::Runner => pb::ProcessRole::Runner,
                        dom::ProcessRole::Machine => pb::ProcessRole::Machine,
                    } as i32,
                    pid: p.pid,
                    name: p.name.clone(),
                    cpu_pct: p.cpu_pct,
                    rss_bytes: p.rss_bytes,
                    vsz_bytes: p.vsz_bytes,
                    threads: p.threads,
                    open_fds: p.open_fds,
                    mem_total_bytes: p.mem_total_bytes,
                    load_avg_1m: p.load_avg_1m,
                    cpu_count: p.cpu_count,
                    energy_j: p.energy_j,
                    power_w: p.power_w,
                    mem_pressure: p.pressure.mem_pressure.map(u32::from),
                    mem_stall_pct: p.pressure.mem_stall_pct,
                    swap_used_bytes: p.pressure.swap_used_bytes,
                    thermal_pressure: p.pressure.thermal_pressure.map(u32::from),
                    temp_c: p.pressure.temp_c,
                })
                .collect(),
            notes: m.notes.clone(),
        }
    }
}

impl TryFrom<pb::MonitorBatch> for dom::MonitorBatch {
    type Error = ConvertError;
    fn try_from(m: pb::MonitorBatch) -> Result<Self, ConvertError> {
        let processes = m
            .processes
            .into_iter()
            .map(|p| {
                let role = match pb::ProcessRole::try_from(p.role) {
                    Ok(pb::ProcessRole::Server) => dom::ProcessRole::Server,
                    Ok(pb::ProcessRole::Runner) => dom::ProcessRole::Runner,
                    Ok(pb::ProcessRole::Machine) => dom::ProcessRole::Machine,
                    _ => {
                        return Err(ConvertError::UnknownEnum {
                            field: "process.role",
                            value: p.role,
                        });
                    }
                };
                Ok(dom::ProcessReading {
                    t_ns: p.t_ns,
                    role,
                    pid: p.pid,
                    name: p.name,
                    cpu_pct: p.cpu_pct,
                    rss_bytes: p.rss_bytes,
                    vsz_bytes: p.vsz_bytes,
                    threads: p.threads,
                    open_fds: p.open_fds,
                    mem_total_bytes: p.mem_total_bytes,
                    load_avg_1m: p.load_avg_1m,
                    cpu_count: p.cpu_count,
                    energy_j: p.energy_j,
                    power_w: p.power_w,
                    pressure: dom::monitor::MachinePressure {
                        mem_pressure: p.mem_pressure.and_then(|l| u8::try_from(l).ok()),
                        mem_stall_pct: p.mem_stall_pct,
                        swap_used_bytes: p.swap_used_bytes,
                        thermal_pressure: p.thermal_pressure.and_then(|l| u8::try_from(l).ok()),
                        temp_c: p.temp_c,
                    },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(dom::MonitorBatch {
            power: m.power.into_iter().map(dom::PowerReading::from).collect(),
            server_metrics: m
                .server_metrics
                .into_iter()
                .map(dom::PowerReading::from)
                .collect(),
            processes,
            notes: m.notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_record_round_trips() {
        let r = dom::RequestRecord {
            cycle_id: 2,
            request_id: 5,
            prompt_index: 3,
            workload: dom::RequestWorkload {
                intended_prompt_tokens: Some(40),
                conversation: 2,
                turn: 3,
            },
            target_index: 2,
            intended_start_ns: 1,
            dispatched_ns: 2,
            sent_ns: 2,
            first_byte_ns: Some(3),
            first_token_ns: Some(4),
            first_answer_ns: Some(4),
            last_token_ns: None,
            end_ns: 9,
            status_code: Some(500),
            outcome: dom::OutcomeKind::HttpError,
            error: "boom".into(),
            output_tokens: 7,
            token_source: dom::TokenSource::Counted,
            counted_tokens: 7,
            utf8_merged_tokens: 0,
            reasoning_tokens: 0,
            prompt_tokens: None,
            server: dom::ServerTimings {
                total_ns: Some(1),
                cached_tokens: Some(3),
                reasoning_tokens: Some(2),
                prompt_eval_tokens: Some(5),
                ..Default::default()
            },
            done_reason: String::new(),
            timeline: vec![dom::TokenChunk {
                offset_ns: 4,
                tokens: 7,
            }],
        };
        let rec = dom::Record {
            seq: 42,
            body: dom::RecordBody::Request(Box::new(r)),
        };
        let wire: pb::Record = (&rec).into();
        let back: dom::Record = wire.try_into().unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn progress_with_live_requests_round_trips_and_is_capped() {
        let row = |id: u32| dom::LiveRequest {
            request_id: id,
            phase: if id % 2 == 0 {
                dom::LivePhase::InProgress
            } else {
                dom::LivePhase::Waiting
            },
            tokens: u64::from(id) * 3,
            intended_start_ns: 0,
            dispatched_ns: 10,
            sent_ns: (id > 1).then_some(20),
            first_byte_ns: (id % 2 == 0).then_some(30),
            first_token_ns: (id % 2 == 0).then_some(40),
        };
        let p = dom::Progress {
            cycle_id: 3,
            in_flight: 4,
            completed: 1,
            failed: 0,
            tokens: 99,
            elapsed_ns: 1_000,
            live: (1..=4).map(row).collect(),
            live_omitted: 7,
        };
        let rec = dom::Record {
            seq: 5,
            body: dom::RecordBody::Progress(p),
        };
        let wire: pb::Record = (&rec).into();
        let back: dom::Record = wire.try_into().unwrap();
        assert_eq!(back, rec);

        // A peer sending more rows than the cap: the surplus is counted, not kept.
        let many = pb::Progress {
            cycle_id: 1,
            live_requests: (1..=300u32).map(|i| live_to(&row(i))).collect(),
            live_requests_omitted: 10,
            ..Default::default()
        };
        let wire = pb::Record {
            seq: 1,
            body: Some(pb::record::Body::Progress(many)),
        };
        let dom::RecordBody::Progress(p) = dom::Record::try_from(wire).unwrap().body else {
            panic!("not a progress record");
        };
        assert_eq!(p.live.len(), dom::LIVE_REQUESTS_MAX);
        assert_eq!(p.live_omitted, 10 + 300 - 256);

        // An old peer that leaves the phase unspecified: it is read off the first token.
        let mut unspecified = live_to(&row(2));
        unspecified.phase = 0;
        assert_eq!(
            live_from(&unspecified).unwrap().phase,
            dom::LivePhase::InProgress
        );
    }

    fn plan() -> dom::CyclePlan {
        dom::CyclePlan {
            target_urls: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            target_policy: dom::TargetPolicy::Pinned,
            pinned_target: Some(1),
            target_offset: 1,
            cycle_id: 1,
            shape: dom::LoadShape::Open,
            concurrency: 0,
            rate_per_s: 2.5,
            arrival: dom::Arrival::Poisson,
            duration: Duration::from_secs(3),
            seed: 9,
            target_url: "http://127.0.0.1:1".into(),
            api: dom::Api::OpenaiChat,
            model: "m".into(),
            prompts: vec![dom::PromptSpec {
                text: "p".into(),
                max_tokens: Some(3),
                extra_body_json: r#"{"options":{"temperature":0}}"#.into(),
                messages_json: r#"[{"role":"user","content":"p"}]"#.into(),
                input_tokens: Some(7),
                force_output: true,
                later_turns: vec!["next".into()],
            }],
            request_timeout: Duration::from_secs(1),
            options: dom::RequestOptions {
                max_tokens: Some(7),
                stop: vec!["x".into()],
                ..Default::default()
            },
            extra_body_json: String::new(),
            workload: dom::CycleWorkload {
                turns: 3,
                think_time: Duration::from_millis(250),
                think_exponential: true,
                trace_at_ms: vec![0, 40],
            },
        }
    }

    #[test]
    fn plans_round_trip() {
        let p = plan();
        let wire: pb::CyclePlan = (&p).into();
        assert_eq!(dom::CyclePlan::try_from(wire).unwrap(), p);
    }

    #[test]
    fn unknown_enums_are_refused() {
        let mut p: pb::CyclePlan = (&plan()).into();
        p.api = 99;
        assert_eq!(
            dom::CyclePlan::try_from(p).unwrap_err(),
            ConvertError::UnknownEnum {
                field: "api",
                value: 99
            }
        );
    }

    #[test]
    fn monitor_batches_round_trip() {
        let rec = dom::Record {
            seq: 7,
            body: dom::RecordBody::Monitor(Box::new(dom::MonitorBatch {
                power: vec![dom::PowerReading {
                    t_ns: 5,
                    source: "nvml".into(),
                    device: "gpu0".into(),
                    metric: "energy_j".into(),
                    value: 2401.142,
                }],
                processes: vec![dom::ProcessReading {
                    t_ns: 6,
                    role: dom::ProcessRole::Runner,
                    pid: Some(812),
                    name: "llama-server".into(),
                    cpu_pct: Some(180.5),
                    rss_bytes: Some(1 << 30),
                    vsz_bytes: None,
                    threads: Some(17),
                    open_fds: None,
                    mem_total_bytes: None,
                    load_avg_1m: None,
                    cpu_count: None,
                    energy_j: Some(41.5),
                    power_w: Some(12.25),
                    pressure: dom::monitor::MachinePressure {
                        mem_pressure: Some(1),
                        mem_stall_pct: Some(12.5),
                        swap_used_bytes: Some(1 << 20),
                        thermal_pressure: Some(2),
                        temp_c: Some(71.0),
                    },
                }],
                server_metrics: vec![dom::PowerReading {
                    t_ns: 7,
                    source: "prometheus".into(),
                    device: "server".into(),
                    metric: "llamacpp:requests_deferred".into(),
                    value: 3.0,
                }],
                notes: vec!["open_fds of pid 812: permission denied".into()],
            })),
        };
        let wire: pb::Record = (&rec).into();
        assert_eq!(dom::Record::try_from(wire).unwrap(), rec);
    }
}
