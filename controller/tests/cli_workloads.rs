//! The `tokengun` binary with workload files: bad files fail before any load naming the file, the
//! line and the field; a tokenizer-exact synthetic workload and a trace run on the simulator.
#![allow(clippy::unwrap_used)]

mod common;
use common::{assert_one_line_error, tokengun};

use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn bad_workload_files_name_the_line_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    std::fs::write(
        &p,
        "{\"prompt\":\"a\"}\n{\"messages\":[{\"role\":\"user\"}]}\n",
    )
    .unwrap();
    let out = tokengun(&["run", "--sim", "--prompts", p.to_str().unwrap()]);
    assert_one_line_error(&out, 2, &["bad.jsonl:2:", "content"]);
    let t = dir.path().join("t.csv");
    std::fs::write(
        &t,
        "timestamp,input_tokens,output_tokens\n0,5,5\n9,five,5\n",
    )
    .unwrap();
    let out = tokengun(&["run", "--sim", "--trace", t.to_str().unwrap()]);
    assert_one_line_error(&out, 2, &["t.csv:3:", "input_tokens"]);
    let out = tokengun(&["run", "--sim", "--input-tokens", "uniform:9-3"]);
    assert_one_line_error(&out, 2, &["--input-tokens", "uniform:MIN-MAX"]);
    let out = tokengun(&[
        "run",
        "--sim",
        "--tokenizer",
        p.to_str().unwrap(),
        "--input-tokens",
        "8",
    ]);
    assert_one_line_error(&out, 2, &["tokenizer"]);
}

#[test]
fn exact_synthetic_prompts_and_a_trace_run_on_the_simulator() {
    let out_dir = tempfile::tempdir().unwrap();
    let tok = repo("tests/fixtures/tokenizers/tiny-bpe/tokenizer.json");
    let out = tokengun(&[
        "run",
        "--sim",
        "--sim-tokens",
        "4",
        "--sim-token-delay",
        "1ms",
        "--api",
        "openai-chat",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--input-tokens",
        "normal:64,8",
        "--output-tokens",
        "6",
        "--prompt-count",
        "8",
        "--levels",
        "2",
        "--no-report",
        "--quiet",
        "--run-id",
        "exact",
        "--out",
        out_dir.path().to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("exact/run.json")).unwrap())
            .unwrap();
    assert_eq!(m["workload"]["input_lengths"], "exact");
    assert_eq!(m["workload"]["output_tokens"], "6");
    let trace = repo("tests/fixtures/workloads/trace.csv");
    let out = tokengun(&[
        "run",
        "--sim",
        "--sim-tokens",
        "4",
        "--sim-token-delay",
        "1ms",
        "--api",
        "openai-chat",
        "--trace",
        trace.to_str().unwrap(),
        "--time-scale",
        "0.25",
        "--no-report",
        "--quiet",
        "--run-id",
        "trace",
        "--out",
        out_dir.path().to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("trace/run.json")).unwrap())
            .unwrap();
    assert_eq!(m["shape"], "open");
    assert_eq!(m["cycles"][0]["requests"], 40);
    assert!(
        m["workload"]["trace"]
            .as_str()
            .unwrap()
            .contains("time scale 0.25")
    );
}
