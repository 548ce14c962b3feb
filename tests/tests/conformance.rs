//! The official `ollama` and `openai` Python clients, from PyPI, against the simulator: every
//! endpoint, streaming and not, in both the Ollama and the llama.cpp flavour.
//!
//! `.ci/run` installs the clients into `.venv-conformance`; elsewhere this test says how and
//! skips, except under `CI=true`, where a missing environment is a failure.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tokengun_tests::{SimConfig, SimHandle};

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TOKENGUN_CONFORMANCE_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = root.join(".venv-conformance/bin/python");
    p.exists().then_some(p)
}

fn run_clients(url: &str, model: &str, only_openai: bool) {
    let Some(py) = python() else {
        let how =
            "python3 -m venv .venv-conformance && .venv-conformance/bin/pip install ollama openai";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but the conformance clients are missing: {how} (.ci/run does this)");
        }
        eprintln!(
            "SKIPPED: the official Python clients are not installed; to run this test: {how}"
        );
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/clients.py");
    let mut cmd = Command::new(py);
    cmd.arg(script).arg(url).arg(model);
    if only_openai {
        cmd.arg("openai");
    }
    let out = cmd.output().expect("run the conformance script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "official clients failed:\n{text}");
    println!("{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_clients_accept_the_ollama_flavour() {
    let mut cfg = SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(1), 20, 4);
    cfg.reasoning_tokens = 3;
    let sim = SimHandle::start("127.0.0.1:0", cfg).await.unwrap();
    let url = sim.url();
    tokio::task::spawn_blocking(move || run_clients(&url, "deepseek-r1:7b", false))
        .await
        .unwrap();
    sim.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_client_accepts_the_llama_server_flavour() {
    let mut cfg = SimConfig::profile("llama-server").unwrap();
    cfg.time_scale = 0.1;
    let sim = SimHandle::start("127.0.0.1:0", cfg).await.unwrap();
    let url = sim.url();
    tokio::task::spawn_blocking(move || run_clients(&url, "smollm2", true))
        .await
        .unwrap();
    sim.stop(Duration::from_secs(1)).await;
}
