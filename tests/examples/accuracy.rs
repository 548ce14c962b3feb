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

/// The command line: `[STREAMS=1000] [TOKENS=100] [burst|open] [ITL_MS=10] [inproc|external]`.
struct Args {
    streams: u32,
    tokens: u32,
    open: bool,
    itl_ms: u64,
    external: bool,
}

impl Args {
    fn parse() -> Self {
        let mut args = std::env::args().skip(1);
        let streams: u32 = args.next().map_or(1000, |s| s.parse().unwrap());
        let tokens: u32 = args.next().map_or(100, |s| s.parse().unwrap());
        let open = match args.next().as_deref() {
            None | Some("burst") => false,
            Some("open") => true,
            Some(other) => panic!("unknown load {other:?}: use burst or open"),
        };
        let itl_ms: u64 = args.next().map_or(10, |s| s.parse().unwrap());
        let external = match args.next().as_deref() {
            None | Some("inproc") => false,
            Some("external") => true,
            Some(other) => panic!("unknown simulator placement {other:?}: use inproc or external"),
        };
        Self {
            streams,
            tokens,
            open,
            itl_ms,
            external,
        }
    }
}

/// The cycle the arguments ask for, and the simulator slots it needs.
struct Load {
    shape: LoadShape,
    rate_per_s: f64,
    duration: Duration,
    slots: u32,
}

impl Load {
    fn of(a: &Args) -> Self {
        // One request lasts 200 ms + ITL a token; open arrivals keep STREAMS of them in flight.
        let request_s = 0.2 + a.itl_ms as f64 / 1e3 * f64::from(a.tokens);
        if a.open {
            // Poisson arrivals overshoot the mean now and then: slots to spare, so none queues.
            Self {
                shape: LoadShape::Open,
                rate_per_s: f64::from(a.streams) / request_s,
                duration: Duration::from_secs_f64(3.0 * request_s),
                slots: a.streams * 2,
            }
        } else {
            Self {
                shape: LoadShape::Burst,
                rate_per_s: 0.0,
                duration: Duration::ZERO,
                slots: a.streams,
            }
        }
    }
}

async fn start_sim(a: &Args, slots: u32) -> Sim {
    if a.external {
        return Sim::External(ExternalSim::spawn(a.itl_ms, a.tokens, slots).await);
    }
    Sim::InProcess(
        SimHandle::start(
            "127.0.0.1:0",
            SimConfig {
                models: vec!["acc:1b".into()],
                record_truth: true,
                ..SimConfig::fixed(
                    Duration::from_millis(200),
                    Duration::from_millis(a.itl_ms),
                    a.tokens,
                    slots,
                )
            },
        )
        .await
        .unwrap(),
    )
}

/// What the agent sent back over the cycle.
struct Collected {
    origin_mono_ns: Option<u64>,
    records: Vec<RequestRecord>,
    done: CycleDone,
}

/// Runs one cycle of `plan` on a fresh link to `agent`, collecting its records.
async fn run_cycle(agent: &tokengun_agent::LocalAgent, plan: &CyclePlan) -> Collected {
    let link = AgentLink::connect(&agent.addr().to_string(), Duration::from_secs(5))
        .await
        .unwrap();
    link.hello(true).await.unwrap();
    let mut results = link.results(0).await.unwrap();
    link.prepare(plan).await.unwrap();
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
    Collected {
        origin_mono_ns,
        records,
        done,
    }
}

/// Both sides' instants on the machine's monotonic clock, in ns.
struct Clocks {
    /// The cycle origin of the agent's records.
    origin_ns: i128,
    /// The simulator's epoch.
    sim_epoch_ns: i128,
}

impl Clocks {
    /// An agent record's instant.
    fn at(&self, ns: u64) -> i128 {
        self.origin_ns + i128::from(ns)
    }

    /// A truth instant.
    fn sim_at(&self, ns: u64) -> i128 {
        self.sim_epoch_ns + i128::from(ns)
    }
}

/// Every figure compared, seconds, and what could not be.
#[derive(Default)]
struct Measures {
    first_lag: Vec<f64>,
    token_lag: Vec<f64>,
    gap_err: Vec<f64>,
    ttft: Vec<f64>,
    server_ttft: Vec<f64>,
    before_server: Vec<f64>,
    queue: Vec<f64>,
    connect: Vec<f64>,
    unmatched: usize,
    multi_token_chunks: u64,
    chunks: u64,
}

impl Measures {
    /// Compares each record with its truth.
    fn of(records: &[RequestRecord], truth: &HashMap<String, Truth>, c: &Clocks) -> Self {
        let mut m = Self::default();
        for r in records {
            let Some(t) = truth.get(&format!("1-{}", r.request_id)) else {
                m.unmatched += 1;
                continue;
            };
            if !m.compare(r, t, c) {
                m.unmatched += 1;
            }
        }
        m
    }

    /// Adds one record's figures; false when it cannot be compared (failed, or its token count
    /// differs from the truth's).
    fn compare(&mut self, r: &RequestRecord, t: &Truth, c: &Clocks) -> bool {
        let (Some(first_ns), false) = (r.first_token_ns, r.outcome.is_failure()) else {
            return false;
        };
        let counted: u64 = r.timeline.iter().map(|c| u64::from(c.tokens)).sum();
        if counted != t.token_ns.len() as u64 {
            return false;
        }
        self.first_lag
            .push(diff_s(c.at(first_ns), c.sim_at(t.token_ns[0])));
        // Each token's stamp is its chunk's.
        let mut stamps = Vec::with_capacity(t.token_ns.len());
        for chunk in &r.timeline {
            self.chunks += 1;
            if chunk.tokens > 1 {
                self.multi_token_chunks += 1;
            }
            for _ in 0..chunk.tokens {
                stamps.push(c.at(chunk.offset_ns));
            }
        }
        for (i, (&s, &tn)) in stamps.iter().zip(&t.token_ns).enumerate() {
            self.token_lag.push(diff_s(s, c.sim_at(tn)));
            if i > 0 {
                let measured = diff_s(s, stamps[i - 1]);
                let true_gap = (tn - t.token_ns[i - 1]) as f64 / 1e9;
                self.gap_err.push((measured - true_gap).abs());
            }
        }
        self.ttft.push((first_ns - r.dispatched_ns) as f64 / 1e9);
        self.server_ttft
            .push((t.token_ns[0] - t.arrived_ns) as f64 / 1e9);
        self.before_server
            .push(diff_s(c.sim_at(t.arrived_ns), c.at(r.dispatched_ns)));
        self.queue.push((r.sent_ns - r.dispatched_ns) as f64 / 1e9);
        self.connect
            .push(diff_s(c.sim_at(t.arrived_ns), c.at(r.sent_ns)));
        true
    }
}

/// Streams in flight at the server (arrived -> last token) over the cycle: (peak, mean).
fn in_flight(truth: &HashMap<String, Truth>) -> (i64, f64) {
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
    (peak_in, area / span_ns.max(1) as f64)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let load = Load::of(&args);
    let sim = start_sim(&args, load.slots).await;
    let agent = tokengun_agent::LocalAgent::start(tokengun_agent::AgentConfig::default())
        .await
        .unwrap();
    let plan = CyclePlan {
        target_urls: Vec::new(),
        target_policy: Default::default(),
        pinned_target: None,
        target_offset: 0,
        cycle_id: 1,
        shape: load.shape,
        concurrency: if args.open { 0 } else { args.streams },
        rate_per_s: load.rate_per_s,
        arrival: Arrival::Poisson,
        duration: load.duration,
        seed: 0,
        target_url: sim.url(),
        api: Api::OllamaGenerate,
        model: "acc:1b".into(),
        prompts: vec![PromptSpec::plain("Why is the sky blue?")],
        request_timeout: Duration::from_secs(120),
        options: RequestOptions::default(),
        extra_body_json: String::new(),
        workload: Default::default(),
    };
    let collected = run_cycle(&agent, &plan).await;
    let export = sim.truth().await;
    let clocks = Clocks {
        origin_ns: i128::from(monotonic_ns(tokengun_agent::clock::epoch()))
            + i128::from(collected.origin_mono_ns.unwrap()),
        sim_epoch_ns: i128::from(export.epoch_monotonic_ns),
    };
    let truth: HashMap<String, Truth> = export
        .requests
        .into_iter()
        .filter_map(|t| Some((t.client_id.clone()?, t)))
        .collect();
    let mut m = Measures::of(&collected.records, &truth, &clocks);
    let (peak_in, mean_in) = in_flight(&truth);
    if args.open {
        println!(
            "open load: Poisson arrivals at {:.0}/s for {:.1} s; streams in flight at the server: mean {:.0}, peak {peak_in}",
            load.rate_per_s,
            load.duration.as_secs_f64(),
            mean_in
        );
    } else {
        println!(
            "burst load: {} requests fired together; peak in flight {peak_in}",
            args.streams
        );
    }
    print_report(&args, &collected, &mut m);
    agent.stop(Duration::from_secs(1)).await;
    sim.stop().await;
}

/// The figures, then the agent's self-check and one summary line for scripts/bench-accuracy.sh.
fn print_report(a: &Args, collected: &Collected, m: &mut Measures) {
    let (streams, tokens, itl_ms) = (a.streams, a.tokens, a.itl_ms);
    let done = &collected.done;
    println!(
        "{streams} concurrent streams x {tokens} tokens, a token every {itl_ms} ms ({:.0} chunks/s at full load): {} records ({} completed, {} failed), {} compared, {} not comparable; {} chunks, {} with several tokens",
        f64::from(streams) * 1e3 / itl_ms as f64,
        collected.records.len(),
        done.completed,
        done.failed,
        m.first_lag.len(),
        m.unmatched,
        m.chunks,
        m.multi_token_chunks
    );
    println!("timestamping (agent stamp - server's send instant, same clock):");
    line("first-token lag (= TTFT error)", &mut m.first_lag);
    line("every-token stamping lag", &mut m.token_lag);
    line("inter-token gap error |meas - true|", &mut m.gap_err);
    println!("TTFT and its parts:");
    line("TTFT (first token - dispatched)", &mut m.ttft);
    line("server's TTFT (first token - arrived)", &mut m.server_ttft);
    line(
        "before the server (arrived - dispatched)",
        &mut m.before_server,
    );
    line("  of which client queue (sent - disp.)", &mut m.queue);
    line(
        "  of which connect + write (arrived - sent)",
        &mut m.connect,
    );
    if let Some(c) = &done.self_check {
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
        if a.open { "open" } else { "burst" },
        if a.external { "external" } else { "inproc" },
        f64::from(streams) * 1e3 / itl_ms as f64,
        m.first_lag.len(),
        percentile(&mut m.first_lag, 99.0) * 1e3,
        percentile(&mut m.token_lag, 50.0) * 1e3,
        percentile(&mut m.token_lag, 99.0) * 1e3,
        percentile(&mut m.token_lag, 100.0) * 1e3,
        percentile(&mut m.gap_err, 99.0) * 1e3,
    );
}
