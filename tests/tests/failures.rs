//! Requests that fail are data: counted, classified, written, and the sweep goes on.

use std::collections::BTreeMap;
use std::time::Duration;
use tokengun_tests::{Faults, Scenario, f};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_cut_and_malformed_requests_are_counted_and_the_sweep_completes() {
    // By arrival index over the whole run (15 requests): 500 for 3,6,9,12,15; cut after 5 tokens
    // for 4,8 (12 already failed); a non-JSON line for 5,10 (15 already failed).
    let faults = Faults {
        fail_every: 3,
        cut_every: 4,
        cut_after_tokens: 5,
        malformed_every: 5,
        ..Faults::default()
    };
    // The levels run one after another, so arrival indices are 1 | 2-3 | 4-7 | 8-15. Failures
    // inside cycles never stop the sweep (`run` fails the test if they did).
    let ran = Scenario::fixed("tiny:1b", 20, 2, 30, 8)
        .sim(|s| s.faults = faults)
        .levels(&[1, 2, 4, 8])
        .run()
        .await;

    let cycles = ran.cycles();
    assert_eq!(cycles.len(), 4);
    let failed: f64 = cycles.iter().map(|c| f(c, "failed")).sum();
    let completed: f64 = cycles.iter().map(|c| f(c, "completed")).sum();
    assert_eq!((completed, failed), (6.0, 9.0));
    assert_eq!(cycles[0]["errors_by_kind"], "");
    assert_eq!(cycles[1]["errors_by_kind"], "http_error=1");
    assert_eq!(f(&cycles[1], "error_rate"), 0.5);
    assert_eq!(
        cycles[2]["errors_by_kind"],
        "http_error=1;malformed=1;truncated=1"
    );
    assert_eq!(
        cycles[3]["errors_by_kind"],
        "http_error=3;malformed=1;truncated=1"
    );

    let mut kinds: BTreeMap<String, u32> = BTreeMap::new();
    for level in [1u32, 2, 4, 8] {
        let rows = ran.requests(level);
        assert_eq!(
            rows.len(),
            level as usize,
            "every request has a row, failed or not"
        );
        for r in rows {
            *kinds.entry(r["ErrorKind"].clone()).or_default() += 1;
            match r["ErrorKind"].as_str() {
                "" => {
                    assert_eq!(r["Status"], "Completed");
                    assert_eq!(r["TokenCount"], "30");
                }
                "http_error" => {
                    assert_eq!(r["StatusCode"], "500");
                    assert_eq!(r["Status"], "Failed: http_error");
                    assert!(
                        r["Error"].contains("llama runner process has terminated"),
                        "{r:?}"
                    );
                    assert_eq!(r["TokenCount"], "0");
                }
                "truncated" => {
                    assert_eq!(r["StatusCode"], "200");
                    assert_eq!(r["TokenCount"], "5", "tokens before the cut are kept");
                    assert_eq!(r["TokenSource"], "counted");
                    assert!(r["Error"].contains("stream"), "{r:?}");
                }
                "malformed" => {
                    assert_eq!(r["TokenCount"], "1");
                    assert!(r["Error"].contains("malformed stream line"), "{r:?}");
                }
                other => panic!("unexpected error kind {other}"),
            }
        }
    }
    let expect: BTreeMap<String, u32> = [
        ("".to_string(), 6),
        ("http_error".to_string(), 5),
        ("truncated".to_string(), 2),
        ("malformed".to_string(), 2),
    ]
    .into_iter()
    .collect();
    assert_eq!(kinds, expect);
    let manifest: serde_json::Value = ran.run_json();
    assert_eq!(manifest["status"], "complete");
    ran.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_and_keep_what_they_received() {
    let ran = Scenario::fixed("slow:1b", 10, 100, 100, 1)
        .levels(&[2])
        .config(|c| c.request_timeout = Duration::from_millis(450))
        .run()
        .await;
    let rows = ran.requests(2);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r["ErrorKind"], "timeout");
        assert!(
            f(r, "TotalDuration") >= 0.45 && f(r, "TotalDuration") < 1.0,
            "{r:?}"
        );
    }
    // The request holding the slot streamed some tokens before the timeout; the queued one none.
    let mut tokens: Vec<u32> = rows
        .iter()
        .map(|r| r["TokenCount"].parse().unwrap())
        .collect();
    tokens.sort_unstable();
    assert_eq!(tokens[0], 0);
    assert!((3..=6).contains(&tokens[1]), "{tokens:?}");
    ran.stop().await;
}
