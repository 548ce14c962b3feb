//! The agent's progress reports carry live rows of its in-flight requests over real gRPC: waiting
//! and streaming requests as they are, the oldest first, capped with a count of the rest.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use tokengun::link::AgentLink;
use tokengun_common::{
    Api, Arrival, CyclePlan, LIVE_REQUESTS_MAX, LivePhase, LoadShape, Progress, PromptSpec,
    RecordBody, RequestOptions,
};
use tokengun_tests::{SimConfig, SimHandle};

const REQUESTS: u32 = 300;
const SLOTS: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_lists_in_flight_requests_capped_with_a_count_of_the_rest() {
    // 300 requests over 10 slots, each about 140 ms: the queue drains over about 4 s, so every
    // progress report in between sees requests waiting and requests streaming.
    let sim = SimHandle::start(
        "127.0.0.1:0",
        SimConfig::fixed(
            Duration::from_millis(100),
            Duration::from_millis(20),
            3,
            SLOTS,
        ),
    )
    .await
    .unwrap();
    let agent = tokengun_agent::LocalAgent::start(tokengun_agent::AgentConfig::default())
        .await
        .unwrap();
    let link = AgentLink::connect(&agent.addr().to_string(), Duration::from_secs(5))
        .await
        .unwrap();
    link.hello(false).await.unwrap();
    let plan = CyclePlan {
        target_urls: Vec::new(),
        target_policy: Default::default(),
        pinned_target: None,
        target_offset: 0,
        cycle_id: 1,
        shape: LoadShape::Burst,
        concurrency: REQUESTS,
        rate_per_s: 0.0,
        arrival: Arrival::Poisson,
        duration: Duration::ZERO,
        seed: 0,
        target_url: sim.url(),
        api: Api::OllamaGenerate,
        model: "deepseek-r1:7b".into(),
        prompts: vec![PromptSpec::plain("hi")],
        request_timeout: Duration::from_secs(60),
        options: RequestOptions::default(),
        extra_body_json: String::new(),
        workload: Default::default(),
    };
    let mut results = link.results(0).await.unwrap();
    link.prepare(&plan).await.unwrap();
    link.start(1, 0).await.unwrap();

    let mut progress: Vec<Progress> = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let rec = results.recv().await.unwrap().unwrap();
            match rec.body {
                RecordBody::Progress(p) => progress.push(p),
                RecordBody::CycleDone(d) => break d,
                _ => {}
            }
        }
    })
    .await
    .expect("the cycle ends");
    assert_eq!(done.completed, REQUESTS);
    assert!(progress.len() >= 4, "{} progress reports", progress.len());

    // While the queue is long, the snapshot is capped and the rest counted.
    let capped = progress
        .iter()
        .find(|p| p.live_omitted > 0)
        .expect("a snapshot while more than 256 requests were in flight");
    assert_eq!(capped.live.len(), LIVE_REQUESTS_MAX);
    for p in &progress {
        assert!(p.live.len() <= LIVE_REQUESTS_MAX);
        let ids: Vec<u32> = p.live.iter().map(|r| r.request_id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
        assert!(p.live.len() + p.live_omitted as usize <= REQUESTS as usize);
    }

    // Streaming requests carry their tokens and moments; waiting ones have none yet.
    let rows: Vec<_> = progress.iter().flat_map(|p| p.live.iter()).collect();
    let streaming = rows
        .iter()
        .find(|r| r.phase == LivePhase::InProgress && r.tokens > 0)
        .expect("a streaming request in some snapshot");
    let first_token = streaming.first_token_ns.unwrap();
    assert!(streaming.sent_ns.unwrap() <= streaming.first_byte_ns.unwrap());
    assert!(streaming.first_byte_ns.unwrap() <= first_token);
    assert!(streaming.dispatched_ns <= streaming.sent_ns.unwrap());
    let waiting = rows
        .iter()
        .find(|r| r.phase == LivePhase::Waiting)
        .expect("a queued request in some snapshot");
    assert_eq!(waiting.tokens, 0);
    assert_eq!(waiting.first_token_ns, None);
    assert!(
        rows.iter()
            .filter(|r| r.phase == LivePhase::Waiting)
            .count()
            > SLOTS as usize,
        "most of the burst waits for a slot"
    );

    // The last report, after every request ended, lists none.
    let last = progress.last().unwrap();
    assert!(last.live.is_empty());
    assert_eq!(last.live_omitted, 0);
    assert_eq!(last.completed, REQUESTS);

    agent.stop(Duration::from_secs(1)).await;
    sim.stop(Duration::from_secs(1)).await;
}
