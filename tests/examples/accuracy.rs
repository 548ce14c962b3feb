//! Measurement: how late tokengun stamps the tokens a server sends, and how its TTFT splits into
//! client queueing, connect and the server's own time.
//!
//! `cargo run --release -p tokengun-tests --example accuracy [STREAMS=1000] [TOKENS=100]`
//!
//! An in-process agent, driven over real gRPC by the controller's own client (`AgentLink`), fires
//! one burst of STREAMS concurrent requests (real HTTP) at an in-process simulator with ground
//! truth on (`record_truth`): every request gets its own slot, 200 ms to the first token, then a
//! token every 10 ms. Simulator and agent share this process, so both sides read the same
//! monotonic clock and absolute instants can be compared: an agent record's instant is the agent
//! clock's epoch + the cycle origin (`CycleStarted.origin_mono_ns`) + its offset; the truth's is
//! the simulator's epoch + its offset. Each record is matched to its truth by its
//! `x-tokengun-request` header. Printed (p50 / p99 / max, ms):
//! - stamping lag: agent stamp - the instant the simulator handed the token to HTTP, for first
//!   tokens and for every token (a chunk holding several tokens is stamped once, when it is read:
//!   each of its tokens counts with its own lag);
//! - inter-token gap error: |measured gap - true gap| over consecutive tokens;
//! - TTFT as tokengun defines it (first token - dispatched) beside the server's view (first token -
//!   request arrived at its handler), with the part before the server (dispatched -> arrived:
//!   client queue, TCP connect, request write, accept) shown on its own.
//!
//! The controller's record writing is not in this process (the records are only collected), so
//! this isolates the agent; the simulator's own scheduling delays still count against it.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokengun::link::AgentLink;
use tokengun_common::{
    Api, Arrival, CycleDone, CyclePlan, LoadShape, PromptSpec, RecordBody, RequestOptions,
    RequestRecord,
};
use tokengun_tests::{SimConfig, SimHandle};

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Prints p50 / p99 / max (and min) of `v`, in seconds, as ms.
fn line(name: &str, v: &mut [f64]) {
    let n = v.len();
    let min = percentile(v, 0.0);
    let p50 = percentile(v, 50.0);
    let p99 = percentile(v, 99.0);
    let max = percentile(v, 100.0);
    println!(
        "  {name:<34} n = {n:>7}  p50 = {:>9.3}  p99 = {:>9.3}  max = {:>9.3}  (min {:.3}) ms",
        p50 * 1e3,
        p99 * 1e3,
        max * 1e3,
        min * 1e3
    );
}

/// `a - b` in seconds, signed.
fn diff_s(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(d) => d.as_secs_f64(),
        None => -(b - a).as_secs_f64(),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let streams: u32 = args.next().map_or(1000, |s| s.parse().unwrap());
    let tokens: u32 = args.next().map_or(100, |s| s.parse().unwrap());
    let sim = SimHandle::start(
        "127.0.0.1:0",
        SimConfig {
            models: vec!["acc:1b".into()],
            record_truth: true,
            ..SimConfig::fixed(
                Duration::from_millis(200),
                Duration::from_millis(10),
                tokens,
                streams,
            )
        },
    )
    .await
    .unwrap();
    let agent = tokengun_agent::LocalAgent::start(tokengun_agent::AgentConfig::default())
        .await
        .unwrap();
    let link = AgentLink::connect(&agent.addr().to_string(), Duration::from_secs(5))
        .await
        .unwrap();
    link.hello(true).await.unwrap();
    let plan = CyclePlan {
        cycle_id: 1,
        shape: LoadShape::Burst,
        concurrency: streams,
        rate_per_s: 0.0,
        arrival: Arrival::Poisson,
        duration: Duration::ZERO,
        seed: 0,
        target_url: sim.url(),
        api: Api::OllamaGenerate,
        model: "acc:1b".into(),
        prompts: vec![PromptSpec::plain("Why is the sky blue?")],
        request_timeout: Duration::from_secs(120),
        options: RequestOptions::default(),
        extra_body_json: String::new(),
    };
    let mut results = link.results(0).await.unwrap();
    link.prepare(&plan).await.unwrap();
    link.start(1, 0).await.unwrap();
    let mut origin_mono_ns = None;
    let mut records: Vec<RequestRecord> = Vec::new();
    let done: CycleDone = loop {
        let rec = results.recv().await.unwrap().unwrap();
        match rec.body {
            RecordBody::CycleStarted {
                origin_mono_ns: o, ..
            } => origin_mono_ns = Some(o),
            RecordBody::Request(r) => records.push(*r),
            RecordBody::CycleDone(d) => break d,
            _ => {}
        }
    };
    let origin = tokengun_agent::clock::epoch() + Duration::from_nanos(origin_mono_ns.unwrap());
    let at = |ns: u64| origin + Duration::from_nanos(ns);
    let sim_epoch = sim.epoch().into_std();
    let sim_at = |ns: u64| sim_epoch + Duration::from_nanos(ns);

    let truth: HashMap<String, _> = sim
        .truth()
        .into_iter()
        .filter_map(|t| Some((t.client_id.clone()?, t)))
        .collect();

    let (mut first_lag, mut token_lag, mut gap_err) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ttft, mut server_ttft, mut before_server, mut queue, mut connect) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut unmatched, mut multi_token_chunks, mut chunks) = (0, 0u64, 0u64);
    for r in &records {
        let Some(t) = truth.get(&format!("1-{}", r.request_id)) else {
            unmatched += 1;
            continue;
        };
        let (Some(first_ns), false) = (r.first_token_ns, r.outcome.is_failure()) else {
            unmatched += 1;
            continue;
        };
        let counted: u64 = r.timeline.iter().map(|c| u64::from(c.tokens)).sum();
        if counted != t.token_ns.len() as u64 {
            unmatched += 1;
            continue;
        }
        first_lag.push(diff_s(at(first_ns), sim_at(t.token_ns[0])));
        // Each token's stamp is its chunk's.
        let mut stamps = Vec::with_capacity(t.token_ns.len());
        for c in &r.timeline {
            chunks += 1;
            if c.tokens > 1 {
                multi_token_chunks += 1;
            }
            for _ in 0..c.tokens {
                stamps.push(at(c.offset_ns));
            }
        }
        for (i, (&s, &tn)) in stamps.iter().zip(&t.token_ns).enumerate() {
            token_lag.push(diff_s(s, sim_at(tn)));
            if i > 0 {
                let measured = diff_s(s, stamps[i - 1]);
                let true_gap = (tn - t.token_ns[i - 1]) as f64 / 1e9;
                gap_err.push((measured - true_gap).abs());
            }
        }
        ttft.push((first_ns - r.dispatched_ns) as f64 / 1e9);
        server_ttft.push((t.token_ns[0] - t.arrived_ns) as f64 / 1e9);
        before_server.push(diff_s(sim_at(t.arrived_ns), at(r.dispatched_ns)));
        queue.push((r.sent_ns - r.dispatched_ns) as f64 / 1e9);
        connect.push(diff_s(sim_at(t.arrived_ns), at(r.sent_ns)));
    }
    println!(
        "{streams} concurrent streams x {tokens} tokens: {} records ({} completed, {} failed), {} compared, {unmatched} not comparable; {chunks} chunks, {multi_token_chunks} with several tokens",
        records.len(),
        done.completed,
        done.failed,
        first_lag.len()
    );
    println!("timestamping (agent stamp - server's send instant, same clock):");
    line("first-token stamping lag", &mut first_lag);
    line("every-token stamping lag", &mut token_lag);
    line("inter-token gap error |meas - true|", &mut gap_err);
    println!("TTFT and its parts:");
    line("TTFT (first token - dispatched)", &mut ttft);
    line("server's TTFT (first token - arrived)", &mut server_ttft);
    line(
        "before the server (arrived - dispatched)",
        &mut before_server,
    );
    line("  of which client queue (sent - disp.)", &mut queue);
    line("  of which connect + write (arrived - sent)", &mut connect);
    if let Some(c) = done.self_check {
        println!(
            "agent self-check: {:.2} CPU s over {:.2} s on {} core(s), event-loop delay p99 {:.2} ms, max {:.2} ms",
            c.cpu_s,
            c.wall_s,
            c.cores,
            c.loop_delay_p99_ms.unwrap_or(f64::NAN),
            c.loop_delay_max_ms.unwrap_or(f64::NAN)
        );
    }
    agent.stop(Duration::from_secs(1)).await;
    sim.stop(Duration::from_secs(1)).await;
}
