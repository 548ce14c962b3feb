//! What a user sees through the `tokengun` binary, end to end against the built-in simulator:
//! short answers keep their rates and goodput, `export` gives every field of records.pb, shell
//! completions and the man page come from the CLI's own definitions.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tokengun_common::record::{RecordBody, RequestRecord};
use tokengun_common::run_dir::read_cycles;

const BIN: &str = env!("CARGO_BIN_EXE_tokengun");

fn tokengun(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// `tokengun run --sim` with `args` into a fresh folder; the run folder it made (and the folder
/// holding it, kept while the TempDir lives).
fn run_sim(args: &[&str]) -> (PathBuf, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let mut all = vec!["run", "--sim", "-q", "--out", out.path().to_str().unwrap()];
    all.extend_from_slice(args);
    let done = tokengun(&all);
    assert!(
        done.status.success(),
        "tokengun {all:?}: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let runs: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    (runs[0].clone(), out)
}

fn report_md(run: &Path) -> String {
    std::fs::read_to_string(run.join("report.md")).unwrap()
}

#[test]
fn short_answers_keep_their_rate_and_goodput() {
    // max_tokens = 8 at 4 ms a token: 28 ms from first to last token, under the 50 ms a long
    // stream's rate needs; every request meets a 10 tok/s and 2 s TTFT objective.
    let (run, _keep) = run_sim(&[
        "--levels",
        "1,4",
        "--max-tokens",
        "8",
        "--sim-ttft",
        "50ms",
        "--sim-token-delay",
        "4ms",
        "--slo-ttft",
        "2s",
    ]);
    let cycles = read_cycles(&run).unwrap();
    assert_eq!(cycles.len(), 2);
    for c in &cycles {
        assert_eq!(c.completed, c.requests, "{}", c.level);
        let rate = c.mean_request_tokens_per_s.unwrap_or_else(|| {
            panic!("level {}: no per-request rate for 8-token answers", c.level)
        });
        // 250 tok/s by the simulator's clock; a loaded 2-core machine reads gaps a little long.
        assert!((100.0..=400.0).contains(&rate), "level {}: {rate}", c.level);
        assert_eq!(c.unrated_requests, 0, "{}", c.level);
        assert_eq!(c.goodput_requests, c.requests, "level {}", c.level);
    }
    assert!(!report_md(&run).contains("no measurable decode rate"));
}

#[test]
fn one_token_answers_are_not_failed_for_a_rate_nobody_could_measure() {
    let (run, _keep) = run_sim(&["--levels", "2", "--max-tokens", "1", "--sim-ttft", "20ms"]);
    let cycles = read_cycles(&run).unwrap();
    let c = &cycles[0];
    assert_eq!((c.requests, c.completed), (2, 2));
    assert_eq!(c.mean_request_tokens_per_s, None);
    assert_eq!(c.unrated_requests, 2);
    // The rate limit (10 tok/s by default) could not be judged: no request fails it.
    assert_eq!(c.goodput_requests, 2);
    let md = report_md(&run);
    assert!(
        md.contains("2 of 2 completed requests had no measurable decode rate"),
        "{md}"
    );
}

/// The request records of records.pb, decoded directly: (agent, record), in file order.
fn stored_requests(run: &Path) -> Vec<(String, RequestRecord)> {
    tokengun_proto::stored::read_all(&run.join("records.pb"))
        .unwrap()
        .into_iter()
        .filter_map(|(agent, r)| match r.body {
            RecordBody::Request(r) => Some((agent, *r)),
            _ => None,
        })
        .collect()
}

fn export(run: &Path, args: &[&str]) -> String {
    let mut all = vec!["export", run.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = tokengun(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn export_round_trips_every_field_of_records_pb() {
    let (run, _keep) = run_sim(&[
        "--levels",
        "1,3",
        "--max-tokens",
        "6",
        "--sim-ttft",
        "20ms",
        "--sim-token-delay",
        "2ms",
        "--warmup",
        "50ms",
    ]);
    let stored = stored_requests(&run);
    assert!(stored.len() >= 4, "{}", stored.len());
    let jsonl = export(&run, &["--format", "jsonl", "--tokens"]);
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), stored.len());
    let levels: Vec<String> = read_cycles(&run)
        .unwrap()
        .into_iter()
        .map(|c| c.level)
        .collect();
    for (line, (agent, rec)) in lines.iter().zip(&stored) {
        // Every field of the record, timeline included, reads back into the same record.
        let back: RequestRecord = serde_json::from_value(line.clone()).unwrap();
        assert_eq!(&back, rec);
        assert_eq!(line["agent"], agent.as_str());
        let level = line["level"].as_str().unwrap();
        assert!(
            level == "warmup" || levels.iter().any(|l| l == level),
            "{level} not in {levels:?}"
        );
        assert!(line["cycle_started_unix_ns"].as_i64().unwrap() > 0);
        // Derived figures (floats: equal to the last digit JSON keeps).
        match (line["tokens_per_s"].as_f64(), rec.tokens_per_s()) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-9 * b, "{a} {b}"),
            (a, b) => assert_eq!(a, b),
        }
    }
    assert!(lines.iter().any(|l| l["level"] == "warmup"));
    // Without --tokens, everything but the timeline.
    let short: serde_json::Value =
        serde_json::from_str(export(&run, &[]).lines().next().unwrap()).unwrap();
    assert!(short.get("timeline").is_none() && short.get("end_ns").is_some());

    // CSV: one row per request, every JSON field a column with the same value.
    let csv_text = export(&run, &["--format", "csv", "--tokens"]);
    let mut r = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), stored.len());
    for (row, (line, (_, rec))) in rows.iter().zip(lines.iter().zip(&stored)) {
        let cell = |name: &str| {
            row.get(header.iter().position(|h| h == name).unwrap())
                .unwrap()
        };
        for (k, v) in line.as_object().unwrap() {
            match v {
                serde_json::Value::Object(inner) => {
                    for (ik, iv) in inner {
                        assert_eq!(cell(&format!("{k}_{ik}")), text(iv), "{k}_{ik}");
                    }
                }
                serde_json::Value::Array(_) => {}
                _ => assert_eq!(cell(k), text(v), "{k}"),
            }
        }
        let offsets: Vec<u64> = cell("timeline_offset_ns")
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let tokens: Vec<u32> = cell("timeline_tokens")
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let want: Vec<(u64, u32)> = rec
            .timeline
            .iter()
            .map(|c| (c.offset_ns, c.tokens))
            .collect();
        assert_eq!(offsets.into_iter().zip(tokens).collect::<Vec<_>>(), want);
    }
}

/// A JSON scalar as a CSV cell holds it.
fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn export_of_a_folder_without_records_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokengun(&["export", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("records.pb") && err.contains("run folder"),
        "{err}"
    );
}
