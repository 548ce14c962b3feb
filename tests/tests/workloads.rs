#![allow(clippy::unwrap_used)]
//! Workloads from files in the repository (tests/fixtures/workloads, made by
//! scripts/make-workload-fixtures.py) run end to end on the simulator: a ShareGPT sample and a
//! chat JSONL file.

use std::path::PathBuf;
use tokengun::plan::PlanFile;
use tokengun::plan::synth::WorkloadPlan;
use tokengun::plan::workload;
use tokengun_common::Api;
use tokengun_common::run_dir::WorkloadInfo;
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

fn tiny_tokenizer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizers/tiny-bpe/tokenizer.json")
}

/// The prompts and workload description a `[workload]` table compiles to.
fn compiled(w: WorkloadPlan, api: Api) -> (Vec<tokengun_common::PromptSpec>, WorkloadInfo) {
    let cfg = PlanFile {
        workload: Some(w),
        api: Some(api.as_str().into()),
        ..PlanFile::default()
    }
    .compile(None)
    .unwrap();
    (cfg.prompts, cfg.workload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_input_lengths_and_forced_outputs_reach_the_server() {
    let (prompts, info) = compiled(
        WorkloadPlan {
            tokenizer: Some(tiny_tokenizer()),
            input_tokens: Some("uniform:40-80".into()),
            output_tokens: Some("12".into()),
            count: Some(8),
            ..Default::default()
        },
        Api::OpenaiCompletions,
    );
    assert_eq!(info.input_lengths, "exact");
    // The simulator would stop after 5 tokens; ignore_eos makes it run to the 12 asked for.
    let ran = Scenario::fixed("m:1b", 5, 1, 5, 16)
        .levels(&[8])
        .config(move |c| {
            c.api = Some(Api::OpenaiCompletions);
            c.prompts = prompts;
            c.workload = info;
        })
        .run()
        .await;
    let rows = ran.requests(8);
    for r in &rows {
        assert_eq!(r["TokenCount"], "12", "{r:?}");
        let meant = f(r, "IntendedPromptTokens");
        assert!((40.0..=80.0).contains(&meant), "{r:?}");
        // The simulator counts 4 characters a token, not by the tokenizer: a real difference
        // the report states, but of the same prompt (a few characters a token either way).
        let counted = f(r, "PromptTokens");
        assert!(
            counted >= meant * 0.5 && counted <= meant * 4.0,
            "the server counted {counted} tokens of a {meant}-token prompt: {r:?}"
        );
    }
    let m = ran.run_json();
    assert_eq!(m["workload"]["input_lengths"], "exact");
    assert_eq!(m["workload"]["prompts"], 8);
    let w = tokengun::report::load::load_run(ran.run_dir()).unwrap();
    let doc = tokengun::report::run_report(&w, &Default::default()).unwrap();
    let text: Vec<String> = doc
        .blocks
        .iter()
        .filter_map(|b| match b {
            tokengun::report::doc::Block::Para(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert!(
        text.iter()
            .any(|p| p.contains("exact by") && p.contains("ignore_eos")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|p| p.starts_with("Prompt lengths over 8 requests")),
        "{text:?}"
    );
    ran.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_send_their_history_and_later_turns_hit_the_prefix_cache() {
    let (prompts, info) = compiled(
        WorkloadPlan {
            input_tokens: Some("400".into()),
            count: Some(4),
            turns: Some(3),
            think_time: Some("20ms".into()),
            ..Default::default()
        },
        Api::OpenaiChat,
    );
    assert_eq!(
        info.conversation.as_deref(),
        Some("3 turns, think time 20ms fixed")
    );
    let cycle = tokengun::plan::synth::cycle_workload(Some(&WorkloadPlan {
        turns: Some(3),
        think_time: Some("20ms".into()),
        ..Default::default()
    }))
    .unwrap();
    // 1 ms of prefill a token: 400 uncached tokens cost 0.4 s before the first token.
    let ran = Scenario::fixed("m:1b", 5, 1, 8, 16)
        .sim(|s| {
            s.engine.prefill_per_token = std::time::Duration::from_millis(1);
            s.flavor = tokengun_simulator::config::Flavor::LlamaCpp;
        })
        .levels(&[3])
        .config(move |c| {
            c.api = Some(Api::OpenaiChat);
            c.prompts = prompts;
            c.workload = info;
            c.cycle_workload = cycle;
        })
        .run()
        .await;
    let rows = ran.requests(3);
    assert_eq!(rows.len(), 9, "3 conversations of 3 turns");
    let c = &ran.cycles()[0];
    assert_eq!(c["requests"], "9");
    let mut by_turn = std::collections::BTreeMap::<u32, Vec<f64>>::new();
    for r in &rows {
        assert_eq!(r["Status"], "Completed", "{r:?}");
        let turn = f(r, "Turn") as u32;
        assert!((1..=3).contains(&(f(r, "Conversation") as u32)), "{r:?}");
        by_turn.entry(turn).or_default().push(f(r, "TTFT"));
        if turn > 1 {
            // The history (turn 1 and the answer) came back from the cache.
            assert!(f(r, "ServerCachedTokens") >= 384.0, "{r:?}");
            assert!(r["IntendedPromptTokens"].is_empty(), "{r:?}");
            // The turn waited for the previous answer and the think time.
        } else {
            assert_eq!(r["IntendedPromptTokens"], "400");
        }
    }
    // An uncached first turn prefills its 400 tokens (0.4 s); later turns reuse the history
    // (two conversations may draw the same prompt: the second's first turn is cached too).
    let worst_later = by_turn[&2]
        .iter()
        .chain(&by_turn[&3])
        .copied()
        .fold(0.0, f64::max);
    let worst_first = by_turn[&1].iter().copied().fold(0.0, f64::max);
    assert!(
        worst_first > 0.35 && worst_later < 0.2,
        "cached later turns start sooner: {by_turn:?}"
    );
    let data = tokengun::report::load::load_run(ran.run_dir()).unwrap();
    let doc = tokengun::report::run_report(&data, &Default::default()).unwrap();
    let turn_table = doc.blocks.iter().any(|b| match b {
        tokengun::report::doc::Block::Table(t) => t.headers.iter().any(|h| h.starts_with("Turn 3")),
        _ => false,
    });
    assert!(turn_table, "the report shows TTFT by turn");
    ran.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_system_prompt_is_served_from_the_prefix_cache() {
    let (prompts, info) = compiled(
        WorkloadPlan {
            tokenizer: Some(tiny_tokenizer()),
            input_tokens: Some("20".into()),
            count: Some(8),
            shared_prefix_tokens: Some(300),
            ..Default::default()
        },
        Api::OpenaiChat,
    );
    assert_eq!(
        info.shared_prefix.as_deref(),
        Some("300 tokens, 1 prefix, all prompts")
    );
    let ran = Scenario::fixed("m:1b", 5, 1, 4, 1)
        .sim(|s| s.flavor = tokengun_simulator::config::Flavor::LlamaCpp)
        .levels(&[8])
        .config(move |c| {
            c.api = Some(Api::OpenaiChat);
            c.prompts = prompts;
            c.workload = info;
        })
        .run()
        .await;
    let rows = ran.requests(8);
    // One slot: requests run one after another, and every one after the first finds the
    // system prompt cached.
    let hits = rows
        .iter()
        .filter(|r| f(r, "ServerCachedTokens") >= 256.0)
        .count();
    assert!(hits >= 7, "{rows:?}");
    ran.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mooncake_trace_replays_at_its_own_instants() {
    let cfg = PlanFile {
        api: Some("openai-chat".into()),
        workload: Some(WorkloadPlan {
            trace: Some(fixture("mooncake-trace.jsonl")),
            time_scale: Some(0.5),
            ..Default::default()
        }),
        ..PlanFile::default()
    }
    .compile(None)
    .unwrap();
    let at = cfg.cycle_workload.trace_at_ms.clone();
    assert_eq!(at.len(), 40);
    let prompts = cfg.prompts.clone();
    let label = cfg.levels[0].label();
    let ran = Scenario::fixed("m:1b", 5, 1, 4, 64)
        .sim(|s| s.flavor = tokengun_simulator::config::Flavor::LlamaCpp)
        .config(move |c| {
            c.api = cfg.api;
            c.shape = cfg.shape;
            c.levels = cfg.levels;
            c.duration = cfg.duration;
            c.prompts = cfg.prompts;
            c.workload = cfg.workload;
            c.cycle_workload = cfg.cycle_workload;
        })
        .run()
        .await;
    let rows = ran.requests(&label);
    assert_eq!(rows.len(), 40);
    for r in &rows {
        let i = f(r, "PromptIndex") as usize;
        // Request i of the trace starts at its (scaled) timestamp, asks for its output length.
        assert!(
            (f(r, "IntendedStart") * 1e3 - at[i] as f64).abs() < 0.01,
            "{r:?}"
        );
        assert_eq!(
            f(r, "TokenCount") as u32,
            prompts[i].max_tokens.unwrap(),
            "{r:?}"
        );
        assert_eq!(
            f(r, "IntendedPromptTokens") as u32,
            prompts[i].input_tokens.unwrap()
        );
    }
    // Requests naming hash block 0 share its 512 tokens: some found them cached.
    assert!(rows.iter().any(|r| f(r, "ServerCachedTokens") >= 256.0));
    let c = &ran.cycles()[0];
    assert_eq!(c["schedule_valid"], "true", "{c:?}");
    let m = ran.run_json();
    assert!(
        m["workload"]["trace"]
            .as_str()
            .unwrap()
            .starts_with("40 requests")
    );
    ran.stop().await;
}
