//! Load shapes against a server that stalls for a second: the open loop shows the stall in its
//! latencies (coordinated omission avoided), the closed loop shows it as lost throughput.

use std::time::Duration;
use tokengun_common::schedule::Arrivals;
use tokengun_tests::{Faults, Ran, Scenario, f};

const RUN: Duration = Duration::from_secs(3);

/// A 256-slot server of `m:1b` that stalls for a second, one second in, when `stall`.
fn sim(stall: bool) -> Scenario {
    Scenario::fixed("m:1b", 20, 5, 10, 256).sim(|s| {
        s.faults = Faults {
            stall_at: stall.then_some(Duration::from_secs(1)),
            stall_for: Duration::from_secs(1),
            ..Faults::default()
        }
    })
}

fn ttfts(ran: &Ran, level: &str) -> Vec<f64> {
    ran.requests(level).iter().map(|r| f(r, "TTFT")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_shows_a_stall_in_its_latencies() {
    let ran = sim(true)
        .open(&[20.0], RUN)
        .config(|c| c.seed = 5)
        .run()
        .await;
    let c = &ran.cycles()[0];
    // The seeded schedule is exact: every arrival was sent, none was skipped during the stall.
    let expected = Arrivals::new(tokengun_common::Arrival::Poisson, 20.0, RUN, 5).count();
    assert_eq!(c["requests"], expected.to_string());
    assert_eq!(c["failed"], "0");
    assert_eq!(c["shape"], "open");
    assert_eq!(c["level"], "20rps");
    // The arrival rate achieved over the window is the schedule's (within one late dispatch).
    let achieved = f(c, "achieved_rate_per_s") * RUN.as_secs_f64();
    assert!(
        (achieved - expected as f64).abs() <= 1.0,
        "achieved {achieved} of {expected} arrivals"
    );
    let t = ttfts(&ran, "20rps");
    // About 20 requests arrive during the 1 s stall; those in its first half wait over 0.5 s.
    let slow = t.iter().filter(|&&x| x > 0.5).count();
    assert!(
        slow >= 5,
        "open loop: {slow} requests over 0.5 s TTFT: {t:?}"
    );
    assert!(f(c, "ttft_max_s") > 0.85, "{c:?}");
    assert!(
        f(c, "ttft_p90_s") > 0.2,
        "the stall is in the tail, not hidden: {c:?}"
    );
    let m = ran.run_json();
    assert_eq!(m["shape"], "open");
    assert_eq!(
        m["cycles"][0]["ttft"]["max_s"].as_f64().unwrap(),
        f(c, "ttft_max_s")
    );
    ran.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_shows_a_stall_as_lost_throughput() {
    let mut completed = Vec::new();
    for stall in [false, true] {
        let ran = sim(stall).levels(&[2]).closed(RUN).run().await;
        let c = &ran.cycles()[0];
        assert_eq!(c["shape"], "closed");
        assert_eq!(c["failed"], "0");
        assert!(
            f(c, "peak_concurrency") <= 2.0,
            "closed loop keeps 2 in flight: {c:?}"
        );
        let t = ttfts(&ran, "2");
        let slow = t.iter().filter(|&&x| x > 0.5).count();
        // Only the requests in flight when the stall hit can see it.
        assert!(slow <= 2, "closed loop: {slow} slow requests");
        completed.push(f(c, "completed"));
        ran.stop().await;
    }
    // A 1 s stall in a 3 s run costs about a third of the requests.
    assert!(
        completed[1] < completed[0] * 0.8,
        "with stall {} vs without {} completed",
        completed[1],
        completed[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_cap_is_honoured_and_its_wait_counted() {
    // 2 at a time, each 200 ms, arriving at 20/s for 1 s: the queue behind the cap grows.
    let ran = Scenario::fixed("m:1b", 10, 10, 20, 64)
        .open(&[20.0], Duration::from_secs(1))
        .config(|c| {
            c.arrival = tokengun_common::Arrival::Constant;
            c.levels[0].concurrency = 2;
            c.request_timeout = Duration::from_secs(3);
        })
        .run()
        .await;
    let c = &ran.cycles()[0];
    assert!(f(c, "peak_concurrency") <= 2.0, "{c:?}");
    let rows = ran.requests("20rps");
    // Later arrivals waited behind the cap, and that wait is in their latency.
    let max_queue = rows.iter().map(|r| f(r, "ClientQueue")).fold(0.0, f64::max);
    assert!(max_queue > 0.5, "client queue {max_queue}");
    let max_ttft = rows
        .iter()
        .filter(|r| !r["TTFT"].is_empty())
        .map(|r| f(r, "TTFT"))
        .fold(0.0, f64::max);
    assert!(
        max_ttft > max_queue,
        "TTFT counts from the arrival, queue included"
    );
    ran.stop().await;
}
