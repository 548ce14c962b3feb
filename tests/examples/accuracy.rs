//! Measurement: how late tokengun stamps the tokens a server sends, and how its TTFT splits into
//! client queueing, connect and the server's own time.
//!
//! `cargo run --release -p tokengun-tests --example accuracy [STREAMS=1000] [TOKENS=100]
//! [burst|open] [ITL_MS=10] [inproc|external]`
//!
//! An in-process agent, driven over real gRPC by the controller's own client (`AgentLink`), sends
//! real HTTP requests to a simulator with ground truth on (`record_truth`): every request gets
//! its own slot, 200 ms to the first token, then a token every ITL_MS ms. Two loads:
//! - `burst` (the default): one burst of STREAMS requests fired together, so every stream ticks
//!   on the same grid: STREAMS chunks leave the server at once, every ITL_MS (the worst case for a
//!   client: it must read them one after another);
//! - `open`: Poisson arrivals at STREAMS / (request length) per second for three request lengths,
//!   so about STREAMS streams are in flight in the steady state, each on its own phase (how load
//!   from many independent users arrives).
//!
//! Two placements of the simulator: `inproc` (the default: in this process, on its runtime), or
//! `external`: `tokengun sim --record-truth` as a child process, as a real server is, pinned with
//! `taskset -c $ACCURACY_SIM_CPUS` when that is set (pin this process with `taskset` too); its
//! truth is fetched from `GET /tokengun/truth` after the cycle.
//!
//! Instants are compared on the machine's monotonic clock (`CLOCK_MONOTONIC`, shared by all
//! processes): an agent record's instant is the agent clock's epoch + the cycle origin
//! (`CycleStarted.origin_mono_ns`) + its offset; the truth's is the simulator's epoch + its
//! offset, both epochs mapped onto that clock by `tokengun_simulator::monotonic_ns`. Each record
//! is matched to its truth by its `x-tokengun-request` header. Printed (p50 / p99 / max, ms):
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
use tokengun_simulator::{Truth, TruthExport, monotonic_ns};
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

/// `a - b` in seconds, signed (both ns on one clock).
fn diff_s(a: i128, b: i128) -> f64 {
    (a - b) as f64 / 1e9
}

/// The simulator: in this process, or a `tokengun sim --record-truth` child.
enum Sim {
    InProcess(SimHandle),
    External(ExternalSim),
}

impl Sim {
    fn url(&self) -> String {
        match self {
            Sim::InProcess(h) => h.url(),
            Sim::External(e) => format!("http://{}", e.addr),
        }
    }

    async fn truth(&self) -> TruthExport {
        match self {
            Sim::InProcess(h) => TruthExport {
                epoch_monotonic_ns: monotonic_ns(h.epoch().into_std()),
                requests: h.truth(),
            },
            Sim::External(e) => e.truth().await,
        }
    }

    async fn stop(self) {
        match self {
            Sim::InProcess(h) => h.stop(Duration::from_secs(1)).await,
            Sim::External(mut e) => {
                let _ = e.child.kill();
                let _ = e.child.wait();
            }
        }
    }
}

/// `tokengun sim` in its own process (own runtime and threads, as a real server is), optionally
/// pinned with `taskset -c $ACCURACY_SIM_CPUS`.
struct ExternalSim {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl ExternalSim {
    async fn spawn(itl_ms: u64, tokens: u32, slots: u32) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let bin = tokengun_tests::workspace_bin("tokengun");
        let args: Vec<String> = [
            "sim",
            "--record-truth",
            "--profile",
            "fast",
            "--model",
            "acc:1b",
            "--ttft",
            "200ms",
            "--token-delay",
            &format!("{itl_ms}ms"),
            "--step-per-seq",
            "0ms",
            "--prefill-per-token",
            "0ms",
            "--prefill-stalls",
            "false",
            "--load-time",
            "0s",
            "--jitter",
            "0",
            "--tokens",
            &tokens.to_string(),
            "--slots",
            &slots.to_string(),
            "--listen",
            &addr.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut cmd = match std::env::var("ACCURACY_SIM_CPUS") {
            Ok(cpus) => {
                let mut c = std::process::Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&bin);
                c
            }
            Err(_) => std::process::Command::new(&bin),
        };
        let child = cmd
            .args(&args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "tokengun sim did not listen on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, addr }
    }

    /// `GET /tokengun/truth` over a plain HTTP/1.0 connection.
    async fn truth(&self) -> TruthExport {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        s.write_all(b"GET /tokengun/truth HTTP/1.0\r\nHost: sim\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let body_at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        serde_json::from_slice(&raw[body_at..]).unwrap()
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let streams: u32 = args.next().map_or(1000, |s| s.parse().unwrap());
    let tokens: u32 = args.next().map_or(100, |s| s.parse().unwrap());
    let open = match args.next().as_deref() {
        None | Some("burst") => false,
        Some("open") => true,
        Some(other) => panic!("unknown load {other:?}: use burst or open"),
    };
    let itl_ms: u64 = args.next().map_or(10, |s| s.parse().unwrap());
    // One request lasts 200 ms + ITL a token; open arrivals keep STREAMS of them in flight.
    let request_s = 0.2 + itl_ms as f64 / 1e3 * f64::from(tokens);
    let (shape, rate_per_s, duration, slots) = if open {
        let rate = f64::from(streams) / request_s;
        // Poisson arrivals overshoot the mean now and then: slots to spare, so none queues.
        (
            LoadShape::Open,
            rate,
            Duration::from_secs_f64(3.0 * request_s),
            streams * 2,
        )
    } else {
        (LoadShape::Burst, 0.0, Duration::ZERO, streams)
    };
    let external = match args.next().as_deref() {
        None | Some("inproc") => false,
        Some("external") => true,
        Some(other) => panic!("unknown simulator placement {other:?}: use inproc or external"),
    };
    let sim = if external {
        Sim::External(ExternalSim::spawn(itl_ms, tokens, slots).await)
    } else {
        Sim::InProcess(
            SimHandle::start(
                "127.0.0.1:0",
                SimConfig {
                    models: vec!["acc:1b".into()],
                    record_truth: true,
                    ..SimConfig::fixed(
                        Duration::from_millis(200),
                        Duration::from_millis(itl_ms),
                        tokens,
                        slots,
                    )
                },
            )
            .await
            .unwrap(),
        )
    };
    let agent = tokengun_agent::LocalAgent::start(tokengun_agent::AgentConfig::default())
        .await
        .unwrap();
    let link = AgentLink::connect(&agent.addr().to_string(), Duration::from_secs(5))
        .await
        .unwrap();
    link.hello(true).await.unwrap();
    let plan = CyclePlan {
        cycle_id: 1,
        shape,
        concurrency: if open { 0 } else { streams },
        rate_per_s,
        arrival: Arrival::Poisson,
        duration,
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
    // Both sides' instants on the machine's monotonic clock, in ns.
    let origin_ns = i128::from(monotonic_ns(tokengun_agent::clock::epoch()))
        + i128::from(origin_mono_ns.unwrap());
    let at = |ns: u64| origin_ns + i128::from(ns);
    let export = sim.truth().await;
    let sim_epoch_ns = i128::from(export.epoch_monotonic_ns);
    let sim_at = |ns: u64| sim_epoch_ns + i128::from(ns);

    let truth: HashMap<String, Truth> = export
        .requests
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
    // Streams in flight at the server (arrived -> last token), over the cycle.
    let mut edges: Vec<(u64, i64)> = truth
        .values()
        .filter_map(|t| Some([(t.arrived_ns, 1), (*t.token_ns.last()?, -1)]))
        .flatten()
        .collect();
    edges.sort_unstable();
    let (mut now_in, mut peak_in, mut area, mut prev_ns) = (0i64, 0i64, 0f64, None::<u64>);
    for &(ns, d) in &edges {
        if let Some(p) = prev_ns {
            area += now_in as f64 * (ns - p) as f64;
        }
        prev_ns = Some(ns);
        now_in += d;
        peak_in = peak_in.max(now_in);
    }
    let span_ns = edges.last().map_or(0, |e| e.0) - edges.first().map_or(0, |e| e.0);
    if open {
        println!(
            "open load: Poisson arrivals at {rate_per_s:.0}/s for {:.1} s; streams in flight at the server: mean {:.0}, peak {peak_in}",
            duration.as_secs_f64(),
            area / span_ns.max(1) as f64
        );
    } else {
        println!("burst load: {streams} requests fired together; peak in flight {peak_in}");
    }
    println!(
        "{streams} concurrent streams x {tokens} tokens, a token every {itl_ms} ms ({:.0} chunks/s at full load): {} records ({} completed, {} failed), {} compared, {unmatched} not comparable; {chunks} chunks, {multi_token_chunks} with several tokens",
        f64::from(streams) * 1e3 / itl_ms as f64,
        records.len(),
        done.completed,
        done.failed,
        first_lag.len()
    );
    println!("timestamping (agent stamp - server's send instant, same clock):");
    line("first-token lag (= TTFT error)", &mut first_lag);
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
    // One line for scripts/bench-accuracy.sh to tabulate.
    let cpu_pct = done.self_check.as_ref().map_or(f64::NAN, |c| {
        100.0 * c.cpu_s / (c.wall_s * f64::from(c.cores.max(1)))
    });
    let loop_p99 = done
        .self_check
        .as_ref()
        .and_then(|c| c.loop_delay_p99_ms)
        .unwrap_or(f64::NAN);
    println!(
        "summary: load={} itl_ms={itl_ms} sim={} streams={streams} chunks_per_s={:.0} compared={} ttft_err_p99_ms={:.3} token_lag_p50_ms={:.3} token_lag_p99_ms={:.3} token_lag_max_ms={:.3} gap_err_p99_ms={:.3} process_cpu_pct={cpu_pct:.0} loop_delay_p99_ms={loop_p99:.2}",
        if open { "open" } else { "burst" },
        if external { "external" } else { "inproc" },
        f64::from(streams) * 1e3 / itl_ms as f64,
        first_lag.len(),
        percentile(&mut first_lag, 99.0) * 1e3,
        percentile(&mut token_lag, 50.0) * 1e3,
        percentile(&mut token_lag, 99.0) * 1e3,
        percentile(&mut token_lag, 100.0) * 1e3,
        percentile(&mut gap_err, 99.0) * 1e3,
    );
    agent.stop(Duration::from_secs(1)).await;
    sim.stop().await;
}
