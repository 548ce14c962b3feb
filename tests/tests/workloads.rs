#![allow(clippy::unwrap_used)]
//! Workloads from files in the repository (tests/fixtures/workloads, made by
//! scripts/make-workload-fixtures.py) run end to end on the simulator: a ShareGPT sample and a
//! chat JSONL file.

use std::path::PathBuf;
use tokengun::plan::workload;
use tokengun_common::Api;
use tokengun_tests::{Scenario, f};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/workloads")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharegpt_sample_sends_its_first_turns_with_the_replies_lengths() {
    let path = fixture("sharegpt-sample.json");
    let prompts = workload::load(path.to_str().unwrap(), 0).unwrap();
    assert_eq!(prompts.len(), 12);
    let want = prompts.clone();
    let ran = Scenario::fixed("m:1b", 5, 1, 1000, 16)
        .levels(&[12])
        .config(move |c| {
            c.api = Some(Api::OpenaiChat);
            c.prompts = want;
            c.seed = 3;
        })
        .run()
        .await;
    let rows = ran.requests(12);
    assert_eq!(rows.len(), 12);
    let mut seen = std::collections::HashSet::new();
    for r in &rows {
        assert_eq!(r["Status"], "Completed", "{r:?}");
        let i = f(r, "PromptIndex") as usize;
        seen.insert(i);
        let p = &prompts[i];
        // The reply's length in the file became the request's output length.
        assert_eq!(f(r, "TokenCount") as u32, p.max_tokens.unwrap(), "{r:?}");
        // The server saw the prompt's messages (system turn included): its count is the
        // simulator's estimate of their contents.
        let m: serde_json::Value = serde_json::from_str(&p.messages_json).unwrap();
        let text: Vec<&str> = m
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["content"].as_str().unwrap())
            .collect();
        let est = tokengun_simulator::engine::estimate_tokens(&text.join("\n"));
        assert_eq!(f(r, "PromptTokens") as u64, est, "{r:?}");
    }
    assert!(
        seen.len() > 3,
        "seeded choice spreads over the prompts: {seen:?}"
    );
    ran.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_jsonl_file_runs_on_the_completions_api_flattened() {
    let path = fixture("chat.jsonl");
    let prompts = workload::load(path.to_str().unwrap(), 0).unwrap();
    assert!(prompts.iter().all(|p| p.max_tokens.is_some()));
    let want = prompts.clone();
    let ran = Scenario::fixed("m:1b", 5, 1, 1000, 16)
        .levels(&[6])
        .config(move |c| {
            c.api = Some(Api::OpenaiCompletions);
            c.prompts = want;
        })
        .run()
        .await;
    for r in ran.requests(6) {
        let p = &prompts[f(&r, "PromptIndex") as usize];
        assert_eq!(f(&r, "TokenCount") as u32, p.max_tokens.unwrap(), "{r:?}");
        let est = tokengun_simulator::engine::estimate_tokens(&p.text);
        assert_eq!(f(&r, "PromptTokens") as u64, est, "{r:?}");
    }
    ran.stop().await;
}
