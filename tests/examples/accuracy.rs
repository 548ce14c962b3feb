//! Measurement: how far tokengun's timestamps are from the instants the server really sent.
//!
//! `cargo run --release -p tokengun-tests --example accuracy [STREAMS=1000] [TOKENS=100]`
//!
//! Runs a real burst sweep (controller, in-process agent over gRPC, real HTTP) of STREAMS
//! concurrent requests against the simulator with ground truth on (`record_truth`): every request
//! gets its own slot, 200 ms to the first token, then a token every 10 ms. Each measured record
//! (the run's `request_summary.csv` and `request_<id>_throughput.csv` files, microsecond
//! resolution) is matched to the simulator's truth by its `x-tokengun-request` header, and
//! compared on intervals (the two sides count from different clock origins):
//! - TTFT error: |(FirstToken - Sent) - (first token handed to HTTP - request arrived)|;
//! - inter-token error: |measured gap - true gap| for each pair of consecutive tokens.
//!
//! Prints p50 / p99 / max of each. The simulator shares this process and the machine's cores
//! with the agent and controller, so its own scheduling delays count against tokengun here.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;
use tokengun_tests::{SimConfig, SimHandle, f, level_dir, read_csv, run, run_config};

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

fn line(name: &str, v: &mut [f64]) {
    let n = v.len();
    let p50 = percentile(v, 50.0);
    let p99 = percentile(v, 99.0);
    let max = percentile(v, 100.0);
    println!(
        "{name}: n = {n}, p50 = {:.3} ms, p99 = {:.3} ms, max = {:.3} ms",
        p50 * 1e3,
        p99 * 1e3,
        max * 1e3
    );
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
    let out = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&sim.url(), "acc:1b", &[streams], out.path());
    cfg.request_timeout = Duration::from_secs(120);
    let report = run(cfg).await.unwrap();
    let dir = level_dir(&report.run_dir, "acc-1b", streams);
    let rows = read_csv(&dir.join("request_summary.csv"));

    // Truth by request id (the header is "<cycle>-<request>"; one cycle here).
    let truth: HashMap<String, _> = sim
        .truth()
        .into_iter()
        .filter_map(|t| {
            let id = t.client_id.clone()?;
            Some((id.rsplit('-').next()?.to_string(), t))
        })
        .collect();

    let (mut ttft_err, mut itl_err) = (Vec::new(), Vec::new());
    let mut unmatched = 0;
    for r in &rows {
        if r["Status"] != "Completed" {
            unmatched += 1;
            continue;
        }
        let Some(t) = truth.get(&r["RequestID"]) else {
            unmatched += 1;
            continue;
        };
        let measured_ttft_s = f(r, "FirstToken") - f(r, "Sent");
        let true_ttft_s = (t.token_ns[0] - t.arrived_ns) as f64 / 1e9;
        ttft_err.push((measured_ttft_s - true_ttft_s).abs());
        let tl = read_csv(&dir.join(format!("request_{}_throughput.csv", r["RequestID"])));
        // One chunk per token at 10 ms apart; a chunk holding several tokens has no gap to compare.
        if tl.len() != t.token_ns.len() || tl.iter().any(|c| f(c, "ChunkTokens") != 1.0) {
            unmatched += 1;
            continue;
        }
        for i in 1..tl.len() {
            let measured = f(&tl[i], "Elapsed") - f(&tl[i - 1], "Elapsed");
            let true_gap = (t.token_ns[i] - t.token_ns[i - 1]) as f64 / 1e9;
            itl_err.push((measured - true_gap).abs());
        }
    }
    println!(
        "{streams} concurrent streams x {tokens} tokens: {} records, {} compared, {unmatched} not comparable",
        rows.len(),
        ttft_err.len()
    );
    line("TTFT error        ", &mut ttft_err);
    line("inter-token error ", &mut itl_err);
}
