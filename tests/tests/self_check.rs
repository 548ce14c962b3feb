//! tokengun checks itself on every run: each cycle carries its own CPU, event-loop delay and a
//! verdict; and an agent refuses a level its open-file limit cannot hold, saying how to raise it.
#![allow(clippy::unwrap_used)]

use tokengun_tests::{AgentProc, Scenario};

/// An 8-slot server of `m:1b` answering 20 tokens, 5 ms apart.
fn sim() -> Scenario {
    Scenario::fixed("m:1b", 20, 5, 20, 8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_run_checks_itself_and_finds_tokengun_was_not_the_bottleneck() {
    let ran = sim().levels(&[1, 4]).run().await;
    let cycles = ran.cycles();
    assert_eq!(cycles.len(), 2);
    // The verdict is "ok" on a quiet machine; on a loaded one (a CI box running other tests) the
    // event-loop delay may honestly cross its 10 ms bar. The rule itself is unit-tested; here the
    // figures must be there and the verdict must be one the rule gives.
    let verdict_ok = |v: &str| v == "ok" || v.starts_with("event-loop delay p99");
    for row in &cycles {
        assert!(verdict_ok(&row["self_check"]), "{row:?}");
        let cpu_s: f64 = row["agent_cpu_s"].parse().unwrap();
        let cpu_pct: f64 = row["agent_cpu_pct"].parse().unwrap();
        let p99: f64 = row["loop_delay_p99_ms"].parse().unwrap();
        let max: f64 = row["loop_delay_max_ms"].parse().unwrap();
        assert!(cpu_s >= 0.0 && (0.0..90.0).contains(&cpu_pct), "{row:?}");
        assert!((0.0..=max).contains(&p99) && max < 1000.0, "{row:?}");
    }
    let doc = ran.run_json();
    for c in doc["cycles"].as_array().unwrap() {
        assert!(verdict_ok(c["self_check"].as_str().unwrap()), "{c}");
        assert!(c["agent_cpu_s"].as_f64().is_some(), "{c}");
        assert!(c["loop_delay_p99_ms"].as_f64().is_some(), "{c}");
    }
    ran.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refuses_a_level_its_open_file_limit_cannot_hold() {
    let agent = AgentProc::spawn_with_nofile(256);
    let addr = agent.addr.clone();
    let refused = sim()
        .levels(&[300])
        .config(move |c| c.agents = vec![addr])
        .run_err()
        .await;
    let err = &refused.error;
    assert!(
        err.contains("above this agent's limit of 256")
            && err.contains("at most 192")
            && err.contains("ulimit -n 364")
            && err.contains("LimitNOFILE=364"),
        "{err}"
    );
    refused.stop().await;
}
