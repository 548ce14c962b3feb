//! A sweep against a simulator with known timing, through real agents over real gRPC: the files
//! hold the right rows, token counts are exact, latencies match the simulator's ground truth. The
//! same scenario runs with one agent and with three (each level split among them): the merged
//! figures and the per-agent files must tell the same story.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use tokengun_common::defaults;
use tokengun_tests::{Scenario, f, level_dir, read_csv};

const TTFT_MS: f64 = 100.0;
const TOKEN_MS: f64 = 10.0;
const TOKENS: u32 = 20;
const SLOTS: u32 = 2;
/// Scheduling slack allowed around the ground truth on a busy 2-core CI machine (debug build).
const SLACK_MS: f64 = 80.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_matches_the_simulators_ground_truth() {
    scenario(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_sweep_through_three_agents_matches_it_too() {
    scenario(3).await;
}

/// The request_summary rows of a level and the folder of each row's throughput file: the level's
/// folder with one agent, each agent's folder inside it with several.
fn level_rows(
    run_dir: &Path,
    level: u32,
    agents: usize,
) -> Vec<(HashMap<String, String>, std::path::PathBuf)> {
    let dir = level_dir(run_dir, "deepseek-r1-7b", level);
    let dirs: Vec<std::path::PathBuf> = if agents == 1 {
        vec![dir]
    } else {
        (1..=agents)
            .map(|k| dir.join(format!("agent{k}")))
            .filter(|d| d.exists())
            .collect()
    };
    dirs.iter()
        .flat_map(|d| {
            read_csv(&d.join("request_summary.csv"))
                .into_iter()
                .map(move |r| (r, d.clone()))
        })
        .collect()
}

async fn scenario(agents: usize) {
    // Agents in their own tasks, reached over real gRPC like remote ones.
    let ran = Scenario::fixed(
        defaults::MODEL,
        TTFT_MS as u64,
        TOKEN_MS as u64,
        TOKENS,
        SLOTS,
    )
    .agents(agents)
    .levels(&[1, 2, 4])
    .run()
    .await;
    let cycles = ran.cycles();
    assert_eq!(cycles.len(), 3);
    check_cycles(&cycles);
    for level in [1u32, 2, 4] {
        check_requests(ran.run_dir(), level, agents);
    }
    let manifest: serde_json::Value = ran.run_json();
    assert_eq!(manifest["status"], "complete");
    assert_eq!(manifest["levels"], serde_json::json!(["1", "2", "4"]));
    assert!(manifest["server_version"].as_str().unwrap().contains("sim"));
    assert_eq!(manifest["agents"][0]["in_process"], false);
    assert_eq!(manifest["agents"].as_array().unwrap().len(), agents);
    assert_eq!(manifest["cycles"].as_array().unwrap().len(), 3);
    ran.stop().await;
}

/// One request alone: TTFT, then 19 gaps of 10 ms.
fn one_request_s() -> f64 {
    (TTFT_MS + f64::from(TOKENS - 1) * TOKEN_MS) / 1000.0
}

/// The cycles' counts, aggregate and per-request rates, and the saturation past the slots.
fn check_cycles(cycles: &[HashMap<String, String>]) {
    for (row, level) in cycles.iter().zip([1u32, 2, 4]) {
        assert_eq!(row["level"], level.to_string());
        assert_eq!(row["requests"], level.to_string());
        assert_eq!(row["completed"], level.to_string());
        assert_eq!(row["failed"], "0");
        assert_eq!(row["partial"], "false");
        assert_eq!(f(row, "output_tokens"), f64::from(level * TOKENS));
        // Aggregate tokens/s follows from the slots: ceil(level / slots) waves of one request time.
        let waves = f64::from(level.div_ceil(SLOTS));
        let expected = f64::from(level * TOKENS) / (waves * one_request_s());
        let got = f(row, "aggregate_tokens_per_s");
        assert!(
            got <= expected * 1.01 && got >= expected * 0.70,
            "level {level}: aggregate {got:.1} tok/s, expected about {expected:.1}"
        );
        let rate = f(row, "mean_request_tokens_per_s");
        let truth = 1000.0 / TOKEN_MS;
        assert!(
            (rate - truth).abs() < truth * 0.25,
            "level {level}: {rate} tok/s per request"
        );
    }
    // Past the slots, aggregate throughput stops growing.
    let agg = |i: usize| f(&cycles[i], "aggregate_tokens_per_s");
    assert!(
        agg(1) > agg(0) * 1.6,
        "2 slots should nearly double throughput"
    );
    assert!(
        (agg(2) - agg(1)).abs() < agg(1) * 0.2,
        "level 4 saturates 2 slots"
    );
}

/// Every request of a level: exact tokens, its durations, its throughput file, and its TTFT
/// against the ground truth of the slots.
fn check_requests(run_dir: &Path, level: u32, agents: usize) {
    let rows = level_rows(run_dir, level, agents);
    assert_eq!(rows.len(), level as usize);
    let mut ttfts: Vec<f64> = Vec::new();
    for (r, dir) in &rows {
        assert_eq!(r["TokenCount"], TOKENS.to_string(), "exact token count");
        assert_eq!(r["CountedTokens"], TOKENS.to_string());
        assert_eq!(r["TokenSource"], "server");
        assert_eq!(r["StatusCode"], "200");
        assert_eq!(r["Status"], "Completed");
        ttfts.push(f(r, "TTFT") * 1000.0);
        // Active duration is first -> last token: 19 gaps, not the whole request.
        let active_ms = f(r, "ResponseDuration") * 1000.0;
        let truth_ms = f64::from(TOKENS - 1) * TOKEN_MS;
        // A late first read shortens the measured span, a late last read lengthens it.
        assert!(
            (active_ms - truth_ms).abs() <= SLACK_MS,
            "active {active_ms} ms vs {truth_ms}"
        );
        assert!(f(r, "TotalDuration") > f(r, "ResponseDuration"));
        assert!(f(r, "TTFB") <= f(r, "WaitingTime") + 1e-6);
        check_throughput_file(&dir.join(format!("request_{}_throughput.csv", r["RequestID"])));
    }
    // Ground truth: the first `SLOTS` requests get a slot at once; the rest wait one request time.
    ttfts.sort_by(f64::total_cmp);
    for (i, ttft) in ttfts.iter().enumerate() {
        let wave = (i as u32 / SLOTS) as f64;
        let truth = TTFT_MS + wave * one_request_s() * 1000.0;
        assert!(
            *ttft >= truth - 1.0 && *ttft <= truth + SLACK_MS,
            "level {level}: TTFT {ttft:.1} ms, ground truth {truth:.1} ms (all: {ttfts:?})"
        );
    }
}

/// A request's throughput file: a row a token, rates only once 50 ms have passed, none absurd.
fn check_throughput_file(path: &Path) {
    let tp = read_csv(path);
    assert_eq!(tp.len(), TOKENS as usize);
    assert_eq!(tp.last().unwrap()["TokenCount"], TOKENS.to_string());
    assert_eq!(tp[0]["Throughput"], "", "no rate from a single point");
    let rates: Vec<f64> = tp[1..]
        .iter()
        .filter(|s| !s["Throughput"].is_empty())
        .map(|s| f(s, "Throughput"))
        .collect();
    assert!(rates.len() >= 10, "rates once 50 ms have passed: {tp:?}");
    for v in rates {
        // Never the study's division by almost zero: at most the tokens over the 50 ms window.
        assert!(
            v.is_finite() && v > 0.0 && v <= f64::from(TOKENS) / 0.05,
            "throughput sample {v}"
        );
    }
}
