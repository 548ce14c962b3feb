//! The load engine: one executor for every load shape (burst, closed, open), one task per
//! in-flight request, each timestamped on the monotonic clock at the moment its bytes arrive, each
//! ending in a [`RequestRecord`] whatever happens.

use crate::backend::{self, Chunk};
use crate::http::{HttpClient, MAX_SMALL_BODY};
use crate::live::{LiveEntry, LiveRequests, LiveSlot};
use crate::log::RecordLog;
use crate::stamp::ReadStamp;
use crate::targets::Targets;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokengun_common::schedule::prompt_index;
use tokengun_common::stats::place_server_tokens;
use tokengun_common::transport::root_cause;
use tokengun_common::{
    AgentSelfCheck, CycleDone, CyclePlan, LIVE_REQUESTS_MAX, LoadShape, OutcomeKind, Progress,
    RecordBody, RequestRecord, RequestWorkload, ServerTimings, TokenChunk, TokenSource,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod conversation;
mod prepared;
mod units;

pub use prepared::{EngineError, PreparedCycle};

use units::{Fired, Selected, reap};

/// How often a running cycle reports progress.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Live counters of a cycle, bumped by its workers (relaxed atomics: figures for display).
#[derive(Debug, Default)]
pub struct CycleCounters {
    pub started: AtomicU32,
    pub tokens: AtomicU64,
    pub completed: AtomicU32,
    pub failed: AtomicU32,
    /// Conversations begun (conversation plans only).
    pub conversations: AtomicU32,
}

/// What every request of a cycle shares.
struct Shared {
    client: HttpClient,
    plan: CyclePlan,
    targets: Targets,
    /// One ready request body per prompt of the workload.
    bodies: Vec<Bytes>,
    origin: Instant,
    /// `origin` on the agent clock (ns since [`crate::clock::epoch`]), for read stamps.
    origin_mono_ns: u64,
    /// Aborts the cycle: in-flight requests end at once, recorded as aborted.
    cancel: CancellationToken,
    /// Drains it: no new request starts, in-flight ones run on (a child of `cancel`).
    drain: CancellationToken,
    /// The drain stopped requests the plan still had to send.
    cut_short: std::sync::atomic::AtomicBool,
    counters: CycleCounters,
    /// In-flight requests, for the live rows of each progress report.
    live: LiveRequests,
    log: Arc<RecordLog>,
}

fn ns_since(origin: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Shared {
    /// When the bytes just handed over were read off the socket, ns from the origin: the
    /// connection's read stamp (see [`crate::stamp`]), never later than now; now without one.
    fn read_at_ns(&self, stamp: Option<&ReadStamp>) -> u64 {
        let now = ns_since(self.origin, Instant::now());
        stamp
            .and_then(ReadStamp::last_read_ns)
            .map_or(now, |ns| ns.saturating_sub(self.origin_mono_ns).min(now))
    }

    fn next_request_id(&self) -> u32 {
        self.counters.started.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The prompt request `request_id` sends (chosen by the seed) and its ready body.
    fn select(&self, request_id: u32, trace_prompt: Option<usize>) -> Selected {
        let prompt = trace_prompt
            .filter(|p| *p < self.bodies.len())
            .unwrap_or_else(|| prompt_index(self.plan.seed, request_id, self.bodies.len()));
        Selected {
            prompt,
            body: self.bodies[prompt].clone(),
            conversation: 0,
            turn: 0,
            keep_answer: false,
        }
    }

    /// One unit of the cycle's load from `intended_at`: a request, or a whole conversation when
    /// the plan has turns; returns when it ended.
    async fn unit(
        &self,
        intended_at: Instant,
        cap: Option<&Semaphore>,
        trace_prompt: Option<usize>,
    ) -> Instant {
        if self.plan.workload.is_conversation() {
            return conversation::converse(self, intended_at, cap).await;
        }
        let id = self.next_request_id();
        let sel = self.select(id, trace_prompt);
        self.fire(id, intended_at, cap, sel).await.ended
    }

    /// Runs one request and logs its record; returns when the request ended.
    async fn fire(
        &self,
        request_id: u32,
        intended_at: Instant,
        cap: Option<&Semaphore>,
        sel: Selected,
    ) -> Fired {
        let (rec, answer) = run_request(self, request_id, intended_at, cap, sel).await;
        let ended = self.origin + Duration::from_nanos(rec.end_ns);
        let c = &self.counters;
        let failed = rec.outcome.is_failure();
        if failed {
            c.failed.fetch_add(1, Ordering::Relaxed);
        } else {
            c.completed.fetch_add(1, Ordering::Relaxed);
        }
        self.log.append(RecordBody::Request(Box::new(rec)));
        Fired {
            ended,
            failed,
            answer,
        }
    }

    fn progress(&self) -> Progress {
        let c = &self.counters;
        let started = c.started.load(Ordering::Relaxed);
        let completed = c.completed.load(Ordering::Relaxed);
        let failed = c.failed.load(Ordering::Relaxed);
        let (live, live_omitted) = self.live.snapshot(LIVE_REQUESTS_MAX);
        Progress {
            cycle_id: self.plan.cycle_id,
            in_flight: started.saturating_sub(completed + failed),
            completed,
            failed,
            tokens: c.tokens.load(Ordering::Relaxed),
            elapsed_ns: ns_since(self.origin, Instant::now()),
            live,
            live_omitted,
        }
    }
}

/// Releases the cycle's requests as its shape says, into `workers`; returns workers lost to a
/// panic while it ran (finished ones are reaped as it goes, so a long open loop holds no memory
/// for requests already recorded).
async fn dispatch(shared: &Arc<Shared>, workers: &mut JoinSet<()>) -> u32 {
    let mut lost = 0;
    let plan = &shared.plan;
    let end = shared.origin + plan.duration;
    match plan.shape {
        // The study's cycle: every request is meant to start at the origin.
        LoadShape::Burst => {
            for _ in 0..plan.concurrency {
                let s = shared.clone();
                workers.spawn(async move {
                    s.unit(s.origin, None, None).await;
                });
            }
        }
        // Each worker replaces its request the moment it ends, until the duration is over.
        LoadShape::Closed => {
            for _ in 0..plan.concurrency {
                let s = shared.clone();
                workers.spawn(async move {
                    // The next request is meant to start the instant the previous one ended.
                    let mut intended = s.origin;
                    while intended < end {
                        if s.drain.is_cancelled() {
                            s.cut_short.store(true, Ordering::Relaxed);
                            break;
                        }
                        intended = s.unit(intended, None, None).await;
                    }
                });
            }
        }
        // Arrivals follow the schedule whatever the server does; a request that must wait for
        // the in-flight cap still counts its latency from its arrival.
        LoadShape::Open => {
            let cap =
                (plan.concurrency > 0).then(|| Arc::new(Semaphore::new(plan.concurrency as usize)));
            for (at, trace_prompt) in units::arrivals(plan) {
                let intended = shared.origin + at;
                tokio::select! {
                    () = tokio::time::sleep_until(intended) => {}
                    () = shared.drain.cancelled() => {
                        shared.cut_short.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                let s = shared.clone();
                let cap = cap.clone();
                workers.spawn(async move {
                    s.unit(intended, cap.as_deref(), trace_prompt).await;
                });
                lost += reap(workers);
            }
        }
    }
    lost
}

/// Runs one cycle to its end, appending every record to `log`: `CycleStarted`, one `Request` per
/// request as each ends, `Progress` every [`PROGRESS_EVERY`]. Returns the cycle's totals; the
/// caller logs them as `CycleDone` once it can take the next cycle. `cancel` aborts it (requests
/// in flight end as aborted); `drain` (a child token of `cancel`) only stops new requests.
pub async fn run_cycle(
    client: HttpClient,
    cycle: PreparedCycle,
    log: Arc<RecordLog>,
    cancel: CancellationToken,
    drain: CancellationToken,
) -> CycleDone {
    let PreparedCycle {
        plan,
        targets,
        bodies,
    } = cycle;
    // tokengun's own cost over the cycle: CPU time of this process and the runtime's delay.
    let cpu_before_s = crate::selfcheck::process_cpu_s();
    let loop_probe = crate::selfcheck::LoopProbe::start();
    let origin = Instant::now();
    log.append(RecordBody::CycleStarted {
        cycle_id: plan.cycle_id,
        started_unix_ns: unix_now_ns(),
        origin_mono_ns: crate::clock::at(origin.into_std()),
    });
    let cycle_id = plan.cycle_id;
    let shared = Arc::new(Shared {
        client,
        plan,
        targets,
        bodies,
        origin,
        origin_mono_ns: crate::clock::at(origin.into_std()),
        cancel,
        drain,
        cut_short: std::sync::atomic::AtomicBool::new(false),
        counters: CycleCounters::default(),
        live: LiveRequests::default(),
        log: log.clone(),
    });
    let mut workers = JoinSet::new();
    let mut tick = tokio::time::interval_at(origin + PROGRESS_EVERY, PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The open-loop dispatcher runs for the whole duration while progress is reported.
    let mut lost = {
        let dispatching = dispatch(&shared, &mut workers);
        tokio::pin!(dispatching);
        loop {
            tokio::select! {
                lost = &mut dispatching => break lost,
                _ = tick.tick() => {
                    log.append(RecordBody::Progress(shared.progress()));
                }
            }
        }
    };
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(Ok(())) => {}
                // A worker that panicked wrote no record: count it so totals still add up.
                Some(Err(e)) => {
                    tracing::error!("request task of cycle {cycle_id} failed: {e}");
                    lost += 1;
                }
                None => break,
            },
            _ = tick.tick() => {
                log.append(RecordBody::Progress(shared.progress()));
            }
        }
    }
    let last = shared.progress();
    let (completed, failed) = (last.completed, last.failed);
    log.append(RecordBody::Progress(last));
    let wall_s = origin.elapsed().as_secs_f64();
    let loop_delay = loop_probe.finish().await;
    let self_check = cpu_before_s
        .zip(crate::selfcheck::process_cpu_s())
        .map(|(before, after)| AgentSelfCheck {
            cpu_s: (after - before).max(0.0),
            wall_s,
            cores: crate::selfcheck::cores(),
            loop_delay_p99_ms: loop_delay.map(|d| d.p99_ms),
            loop_delay_max_ms: loop_delay.map(|d| d.max_ms),
        });
    CycleDone {
        cycle_id,
        requests: shared.counters.started.load(Ordering::Relaxed),
        completed,
        failed: failed + lost,
        aborted: shared.cancel.is_cancelled() || shared.cut_short.load(Ordering::Relaxed),
        ended_mono_ns: crate::clock::mono_ns(),
        recovered: false,
        self_check,
    }
}

/// The state of one request as it is measured.
struct Measure<'a> {
    rec: RequestRecord,
    /// Its row in the live table (left when the measure is dropped).
    live: LiveEntry<'a>,
    done: bool,
    /// The request left the client-side queue and went to the server.
    sent: bool,
    /// Keep the answer's text, and the text kept.
    keep_answer: bool,
    answer: String,
    /// (timeline index, most tokens it may hide) for events with multi-byte characters.
    held_room: Vec<(usize, u32)>,
}

impl Measure<'_> {
    /// Records a failure; the first one wins, later ones are its consequences, and nothing after
    /// the server's `done` undoes a completed generation.
    fn fail(&mut self, kind: OutcomeKind, error: impl Into<String>) {
        if !self.done && !self.rec.outcome.is_failure() {
            self.rec.outcome = kind;
            self.rec.error = error.into();
        }
    }
}

async fn run_request(
    s: &Shared,
    request_id: u32,
    intended_at: Instant,
    cap: Option<&Semaphore>,
    sel: Selected,
) -> (RequestRecord, String) {
    let dispatched = Instant::now();
    let deadline = intended_at + s.plan.request_timeout;
    let prompt = sel.prompt;
    let intended_start_ns = ns_since(s.origin, intended_at);
    let dispatched_ns = ns_since(s.origin, dispatched);
    let mut m = Measure {
        live: s.live.enter(request_id, intended_start_ns, dispatched_ns),
        rec: RequestRecord {
            cycle_id: s.plan.cycle_id,
            request_id,
            prompt_index: u32::try_from(prompt).unwrap_or(u32::MAX),
            workload: RequestWorkload {
                // A later turn's prompt is longer than the prompt's own: not said.
                intended_prompt_tokens: s
                    .plan
                    .prompts
                    .get(prompt)
                    .and_then(|p| p.input_tokens)
                    .filter(|_| sel.turn <= 1),
                conversation: sel.conversation,
                turn: sel.turn,
            },
            target_index: 0,
            dispatched_ns,
            intended_start_ns,
            // Overwritten when the request really goes out; stays here if it never does.
            sent_ns: dispatched_ns,
            first_byte_ns: None,
            first_token_ns: None,
            first_answer_ns: None,
            last_token_ns: None,
            end_ns: 0,
            status_code: None,
            // Provisional: any failure overwrites it; a stream that never says done is truncated.
            outcome: OutcomeKind::Completed,
            error: String::new(),
            output_tokens: 0,
            token_source: TokenSource::Counted,
            counted_tokens: 0,
            utf8_merged_tokens: 0,
            reasoning_tokens: 0,
            prompt_tokens: None,
            server: ServerTimings::default(),
            done_reason: String::new(),
            timeline: Vec::new(),
        },
        done: false,
        sent: false,
        keep_answer: sel.keep_answer,
        answer: String::new(),
        held_room: Vec::new(),
    };
    // Held until the end is stamped, so the next request cannot appear to overlap this one.
    let mut permit = None;
    tokio::select! {
        () = async {
            // Waiting for the in-flight cap is client queueing: it counts in the latencies.
            if let Some(c) = cap {
                permit = c.acquire().await.ok();
            }
            m.rec.sent_ns = ns_since(s.origin, Instant::now());
            // A conversation's turns stay on one instance (its prefix cache holds the history).
            let target = if sel.conversation > 0 {
                s.targets.choose_sticky(sel.conversation)
            } else {
                s.targets.choose(request_id, m.rec.sent_ns)
            };
            m.rec.target_index = u32::try_from(target).unwrap_or(u32::MAX);
            let _in_flight = s.targets.enter(target);
            m.live.sent(m.rec.sent_ns);
            m.sent = true;
            exchange(s, &mut m, sel.body, target).await;
        } => {}
        () = s.cancel.cancelled() => m.fail(OutcomeKind::Aborted, "cycle aborted"),
        () = tokio::time::sleep_until(deadline) => m.fail(
            OutcomeKind::Timeout,
            format!("no complete answer within {:?}", s.plan.request_timeout),
        ),
    }
    let end = Instant::now();
    drop(permit);
    let r = &mut m.rec;
    r.end_ns = ns_since(s.origin, end);
    if !m.sent {
        // It never left the in-flight cap's queue: it was never in flight, so Sent = End.
        r.sent_ns = r.end_ns;
    }
    r.counted_tokens = r.timeline.iter().map(|c| u64::from(c.tokens)).sum();
    if r.token_source == TokenSource::Counted {
        r.output_tokens = r.counted_tokens;
    }
    place_server_tokens(r, &m.held_room);
    if !m.done && r.outcome == OutcomeKind::Completed {
        r.outcome = OutcomeKind::Truncated;
        r.error = "the stream ended before the server said it was done".into();
    }
    (m.rec, m.answer)
}

/// Sends the request and reads the stream into `m` until it ends, fails or is done.
async fn exchange(s: &Shared, m: &mut Measure<'_>, body: Bytes, target: usize) {
    let req = hyper::Request::post(s.targets.uri(target).clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::ACCEPT,
            if s.plan.api.family() == "openai" {
                "text/event-stream"
            } else {
                "application/x-ndjson"
            },
        )
        // Lets a server's logs (and the simulator's ground truth) be matched to this record.
        .header(
            "x-tokengun-request",
            format!("{}-{}", s.plan.cycle_id, m.rec.request_id),
        )
        .body(Full::new(body));
    let req = match req {
        Ok(r) => r,
        Err(e) => return m.fail(OutcomeKind::ConnectError, e.to_string()),
    };
    let resp = match s.client.request(req).await {
        Ok(r) => r,
        Err(e) => {
            let what = if e.is_connect() {
                s.targets
                    .refused(target, ns_since(s.origin, Instant::now()));
                "cannot connect"
            } else {
                "no response"
            };
            return m.fail(
                OutcomeKind::ConnectError,
                format!("{what}: {}", root_cause(&e)),
            );
        }
    };
    let stamp = resp.extensions().get::<ReadStamp>().cloned();
    // The headers came in a read after the request went out.
    let first_byte_ns = s.read_at_ns(stamp.as_ref()).max(m.rec.sent_ns);
    m.rec.first_byte_ns = Some(first_byte_ns);
    m.live.first_byte(first_byte_ns);
    let status = resp.status();
    m.rec.status_code = Some(status.as_u16());
    let body = resp.into_body();
    if !status.is_success() {
        let text = read_error_body(body).await;
        let msg = if text.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            text
        };
        return m.fail(OutcomeKind::HttpError, msg);
    }
    read_stream(s, m, body, stamp.as_ref()).await;
}

async fn read_error_body(body: Incoming) -> String {
    match http_body_util::Limited::new(body, MAX_SMALL_BODY)
        .collect()
        .await
    {
        Ok(b) => {
            let text = backend::error_text(&b.to_bytes());
            text.chars().take(500).collect()
        }
        Err(e) => format!("(error body unreadable: {e})"),
    }
}

async fn read_stream(s: &Shared, m: &mut Measure<'_>, body: Incoming, stamp: Option<&ReadStamp>) {
    let backend = backend::backend(s.plan.api);
    let stops_at_done = backend.stops_at_done();
    let mut parser = backend.parser(s.plan.api);
    if m.keep_answer {
        parser.keep_answer();
    }
    read_frames(s, m, body, stamp, parser.as_mut(), stops_at_done).await;
    if m.keep_answer {
        m.answer = parser.take_answer();
    }
}

/// Reads the stream's frames into `m` through `parser` until it ends, fails or is done.
async fn read_frames(
    s: &Shared,
    m: &mut Measure<'_>,
    mut body: Incoming,
    stamp: Option<&ReadStamp>,
    parser: &mut dyn backend::StreamParser,
    stops_at_done: bool,
) {
    // The units of one read; reused, so a request allocates it once.
    let mut chunks: Vec<Chunk> = Vec::new();
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                return m.fail(
                    OutcomeKind::Truncated,
                    format!("stream broken: {}", root_cause(&e)),
                );
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        // Stamped when its bytes were read off the socket (the stamp only grows).
        let at = s.read_at_ns(stamp);
        chunks.clear();
        let fed = parser.feed(&data, &mut chunks);
        // The units before a malformed one count first, as they came first.
        for c in chunks.drain(..) {
            if let Some(failure) = on_chunk(s, m, at, c, stops_at_done) {
                return m.fail(failure.0, failure.1);
            }
        }
        if let Err(e) = fed {
            return m.fail(OutcomeKind::Malformed, e);
        }
        // After [DONE] an SSE stream has nothing more to say; a server holding the body open
        // must not stretch the request to its timeout.
        if m.done && stops_at_done {
            return;
        }
    }
    if parser.leftover() > 0 {
        m.fail(
            OutcomeKind::Truncated,
            format!(
                "the stream ended inside a line or event ({} bytes unfinished)",
                parser.leftover()
            ),
        );
    }
}

/// Takes in what one unit of the stream said, read at `at`; Some when it ends the request as
/// failed.
fn on_chunk(
    s: &Shared,
    m: &mut Measure<'_>,
    at: u64,
    c: Chunk,
    stops_at_done: bool,
) -> Option<(OutcomeKind, String)> {
    if m.done {
        return None; // nothing after done counts
    }
    if let Some(e) = c.error {
        return Some((OutcomeKind::ServerError, e));
    }
    if c.multibyte_bytes > 1 && c.answer_tokens + c.reasoning_tokens > 0 {
        m.held_room
            .push((m.rec.timeline.len(), c.multibyte_bytes - 1));
    }
    on_tokens(
        s,
        &mut m.rec,
        &m.live,
        at,
        c.answer_tokens,
        c.reasoning_tokens,
    );
    if let Some(f) = c.fin {
        if let Some(n) = f.output_tokens {
            m.rec.output_tokens = n;
            m.rec.token_source = TokenSource::Server;
        }
        if f.prompt_tokens.is_some() {
            m.rec.prompt_tokens = f.prompt_tokens;
        }
        if !f.done_reason.is_empty() {
            m.rec.done_reason = f.done_reason;
        }
        // llama.cpp may spread its account over the finish event and the usage event.
        m.rec.server.fill_from(&f.timings);
    }
    if c.done && stops_at_done && m.rec.counted_tokens_so_far() == 0 && m.rec.done_reason.is_empty()
    {
        // [DONE] after nothing at all: an error the server did not spell out.
        return Some((
            OutcomeKind::ServerError,
            "the stream ended ([DONE]) without a token or a finish reason".into(),
        ));
    }
    m.done |= c.done;
    None
}

fn on_tokens(
    s: &Shared,
    r: &mut RequestRecord,
    live: &LiveSlot,
    at_ns: u64,
    answer: u32,
    reasoning: u32,
) {
    let tokens = answer + reasoning;
    if tokens == 0 {
        return;
    }
    live.tokens(at_ns, tokens, r.first_token_ns.is_none());
    r.first_token_ns.get_or_insert(at_ns);
    if answer > 0 {
        r.first_answer_ns.get_or_insert(at_ns);
    }
    r.reasoning_tokens += u64::from(reasoning);
    r.last_token_ns = Some(at_ns);
    r.timeline.push(TokenChunk {
        offset_ns: at_ns,
        tokens,
    });
    s.counters
        .tokens
        .fetch_add(u64::from(tokens), Ordering::Relaxed);
}
