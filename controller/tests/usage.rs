//! What a user sees through the `tokengun` binary, end to end against the built-in simulator:
//! short answers keep their rates and goodput, `export` gives every field of records.pb, shell
//! completions and the man page come from the CLI's own definitions.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
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
