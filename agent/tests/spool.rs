//! The spool and the drain with a real `tokengun-agent serve` process loading the simulator: a
//! SIGKILL mid-cycle and a restart on the same spool lose nothing, and SIGTERM lets in-flight
//! requests finish before the agent exits 0.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokengun_common::{
    Api, Arrival, CyclePlan, LoadShape, OutcomeKind, PromptSpec, RecordBody, RequestOptions,
};
use tokengun_proto::agent_client::AgentClient;
use tokengun_proto::{self as pb};
use tokengun_simulator::{SimConfig, SimHandle};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_tokengun-agent");

/// Starts `tokengun-agent serve` on a free loopback port with `spool`; returns it and its address.
fn spawn_agent(spool: &Path, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--spool-dir"])
        .arg(spool)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("TOKENGUN_AGENT_TOKEN")
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.contains("listening on"),
        "agent did not start: {line:?}"
    );
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    (child, addr)
}

async fn connect(addr: &str) -> AgentClient<Channel> {
    AgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(tokengun_common::transport::MAX_MESSAGE_BYTES)
}

async fn agent_id(c: &mut AgentClient<Channel>) -> String {
    c.hello(pb::HelloRequest {
        protocol_version: tokengun_proto::PROTOCOL_VERSION,
        controller_version: "test".into(),
    })
    .await
    .unwrap()
    .into_inner()
    .agent_id
}

/// A closed loop of `concurrency` long streaming requests for `duration`.
fn plan(url: &str, concurrency: u32, duration: Duration) -> CyclePlan {
    CyclePlan {
        target_urls: Vec::new(),
        target_policy: Default::default(),
        pinned_target: None,
        target_offset: 0,
        cycle_id: 1,
        shape: LoadShape::Closed,
        concurrency,
        rate_per_s: 0.0,
        arrival: Arrival::Poisson,
        duration,
        seed: 1,
        target_url: url.into(),
        api: Api::OllamaGenerate,
        model: "deepseek-r1:7b".into(),
        prompts: vec![PromptSpec::plain("Why is the sky blue?")],
        request_timeout: Duration::from_secs(60),
        options: RequestOptions::default(),
        extra_body_json: String::new(),
        workload: Default::default(),
    }
}

async fn start(c: &mut AgentClient<Channel>, plan: &CyclePlan) {
    c.prepare(pb::PrepareRequest {
        plan: Some(plan.into()),
    })
    .await
    .unwrap();
    c.start(pb::StartRequest {
        cycle_id: plan.cycle_id,
        start_at_mono_ns: 0,
    })
    .await
    .unwrap();
}

/// Reads the results stream from `after` until `until` says stop, the stream ends or `limit`
/// passes.
async fn read(
    c: &mut AgentClient<Channel>,
    after: u64,
    limit: Duration,
    mut until: impl FnMut(&[tokengun_common::Record]) -> bool,
) -> Vec<tokengun_common::Record> {
    let mut stream = c
        .results(pb::ResultsRequest { after_seq: after })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !until(&got) {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(batch))) => got.extend(
                batch
                    .records
                    .into_iter()
                    .map(|r| tokengun_common::Record::try_from(r).unwrap()),
            ),
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
        }
    }
    got
}

fn requests(recs: &[tokengun_common::Record]) -> usize {
    recs.iter()
        .filter(|r| matches!(r.body, RecordBody::Request(_)))
        .count()
}

fn sim_config(tokens: u32) -> SimConfig {
    // Long streams: a token every 10 ms, requests do not slow each other.
    SimConfig::fixed(
        Duration::from_millis(20),
        Duration::from_millis(10),
        tokens,
        64,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_restarted_on_its_spool_loses_nothing_and_closes_the_cycle() {
    let sim = SimHandle::start("127.0.0.1:0", sim_config(30))
        .await
        .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_agent(spool.path(), &[]);
    let mut c = connect(&addr).await;
    let id = agent_id(&mut c).await;
    start(&mut c, &plan(&sim.url(), 4, Duration::from_secs(60))).await;
    // Some requests are recorded (and seen by a controller), others are in flight at the kill.
    let before = read(&mut c, 0, Duration::from_secs(30), |r| requests(r) >= 8).await;
    assert!(requests(&before) >= 8, "{before:?}");
    child.kill().unwrap(); // SIGKILL: no drain, no flush.
    child.wait().unwrap();
    drop(c);

    let (mut child, addr) = spawn_agent(spool.path(), &[]);
    let mut c = connect(&addr).await;
    assert_eq!(agent_id(&mut c).await, id, "a restarted agent keeps its id");
    let done = |r: &[tokengun_common::Record]| {
        r.iter()
            .any(|r| matches!(&r.body, RecordBody::CycleDone(d) if d.recovered))
    };
    let all = read(&mut c, 0, Duration::from_secs(10), done).await;
    // Every seq from 1, no gap, no duplicate; what was seen before the kill is there unchanged.
    let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
    assert_eq!(&all[..before.len()], &before[..]);
    let Some(tokengun_common::Record {
        body: RecordBody::CycleDone(d),
        ..
    }) = all.last()
    else {
        panic!("the replay does not end with the recovered CycleDone: {all:?}")
    };
    assert!(d.aborted && d.recovered, "{d:?}");
    assert_eq!(d.cycle_id, 1);
    assert_eq!(d.requests as usize, requests(&all));
    assert_eq!(d.completed + d.failed, d.requests);
    // Replay after any seq continues from there.
    let mid = all.len() as u64 / 2;
    let tail = read(&mut c, mid, Duration::from_secs(10), |r| {
        r.last().is_some_and(|l| l.seq == all.len() as u64)
    })
    .await;
    assert_eq!(&tail[..], &all[mid as usize..]);
    // The restarted agent is idle and numbers on: its next cycle follows the recovered record.
    let status = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (status.state.as_str(), status.last_seq),
        ("idle", all.len() as u64)
    );
    child.kill().unwrap();
    child.wait().unwrap();
    sim.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    // Each request streams 150 tokens, ~1.5 s: all are in flight when SIGTERM comes.
    let sim = SimHandle::start("127.0.0.1:0", sim_config(150))
        .await
        .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_agent(spool.path(), &["--drain-timeout", "20s"]);
    let mut c = connect(&addr).await;
    start(&mut c, &plan(&sim.url(), 3, Duration::from_secs(60))).await;
    let started = read(&mut c, 0, Duration::from_secs(10), |r| {
        r.iter()
            .any(|r| matches!(r.body, RecordBody::CycleStarted { .. }))
    })
    .await;
    assert!(!started.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let term = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The stream runs on until the agent has drained, then ends.
    let rest = read(&mut c, 0, Duration::from_secs(30), |_| false).await;
    let status = child.wait().unwrap();
    let took = term.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(took < Duration::from_secs(20), "the drain took {took:?}");
    let reqs: Vec<_> = rest
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Request(q) => Some(q),
            _ => None,
        })
        .collect();
    // The three in flight finished (completed, not aborted), and none started after SIGTERM.
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(
        reqs.iter()
            .all(|q| q.outcome == OutcomeKind::Completed && q.output_tokens == 150),
        "{reqs:?}"
    );
    let Some(RecordBody::CycleDone(d)) = rest.last().map(|r| &r.body) else {
        panic!("no CycleDone at the end: {rest:?}")
    };
    // Cut short by the drain: the plan had 60 s to go.
    assert!(d.aborted && !d.recovered, "{d:?}");
    assert_eq!((d.requests, d.completed, d.failed), (3, 3, 0));

    // What was drained is in the spool: a restart replays it all, with no cycle to recover.
    let (mut child, addr) = spawn_agent(spool.path(), &[]);
    let mut c = connect(&addr).await;
    let again = read(&mut c, 0, Duration::from_secs(10), |r| {
        r.len() >= rest.len()
    })
    .await;
    assert_eq!(again, rest);
    child.kill().unwrap();
    child.wait().unwrap();
    sim.stop(Duration::from_secs(1)).await;
}
