//! Several models and several server instances in one plan, end to end on the simulator: the
//! groups run model-major, each model is loaded apart from its levels, every record carries its
//! instance, results are kept per model and per instance count, and a missing model or a dead
//! instance is said plainly without losing records.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use tokengun::plan::TargetPolicy;
use tokengun::report::{ReportOptions, report};
use tokengun_simulator::{SimConfig, SimHandle};
use tokengun_tests::{read_csv, read_run_json, run, run_config};

/// A simulator instance serving `a` (2 slots, a token every 2 ms) and `b` (its own engine, the
/// 1b profile), at 0.4x, with a model load so the load step has something to measure.
async fn instance() -> SimHandle {
    let mut c = SimConfig::fixed(Duration::from_millis(30), Duration::from_millis(5), 40, 2);
    c.models = vec!["a".into()];
    c.engine.load_time = Duration::from_millis(400);
    c.add_model_profile("b", "1b").unwrap();
    c.time_scale = 0.4;
    SimHandle::start("127.0.0.1:0", c).await.unwrap()
}

/// Each cycles.csv row says its cycle (load phases take ids between the levels'), and an export
/// names every request's level from it.
fn cycle_ids_name_each_levels_records(
    dir: &std::path::Path,
    cycles: &[std::collections::HashMap<String, String>],
) {
    let ids: Vec<u32> = cycles
        .iter()
        .map(|r| r["cycle_id"].parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(
        ids.windows(2).any(|w| w[1] > w[0] + 1),
        "loads sit between: {ids:?}"
    );
    let lines = tokengun::cmd::export::lines(dir, false).unwrap();
    let level4 = lines
        .iter()
        .filter(|l| l["cycle_id"] == serde_json::json!(ids[3]))
        .collect::<Vec<_>>();
    assert_eq!(level4.len(), 4);
    assert!(level4.iter().all(|l| l["level"] == "4"), "{level4:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_on_one_and_two_instances_each_get_their_own_results() {
    let (s1, s2) = (instance().await, instance().await);
    let out = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&s1.url(), "a", &[2, 4], out.path());
    cfg.options.max_tokens = Some(40);
    cfg.matrix.models = vec!["a".into(), "b".into()];
    cfg.matrix.targets = vec![s1.url(), s2.url()];
    cfg.matrix.instances = vec![1, 2];
    let ran = run(cfg).await.unwrap();
    let dir = &ran.run_dir;

    // Model-major: a on 1 then 2 instances, then b; each group has both levels.
    let cycles = read_csv(&dir.join("cycles.csv"));
    let seen: Vec<(String, String, String)> = cycles
        .iter()
        .map(|r| {
            (
                r["model"].clone(),
                r["instances"].clone(),
                r["level"].clone(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("a", "1", "2"),
        ("a", "1", "4"),
        ("a", "2", "2"),
        ("a", "2", "4"),
        ("b", "1", "2"),
        ("b", "1", "4"),
        ("b", "2", "2"),
        ("b", "2", "4"),
    ]
    .iter()
    .map(|(m, n, l)| (m.to_string(), n.to_string(), l.to_string()))
    .collect();
    assert_eq!(seen, want);
    assert!(cycles.iter().all(|r| r["failed"] == "0"), "{cycles:?}");
    assert_eq!(cycles[2]["group"], "2-instances");
    cycle_ids_name_each_levels_records(dir, &cycles);
    assert_eq!(cycles[2]["group_label"], "a · 2 instances");

    // Per model and instance count, the study's layout below.
    let two = dir.join("ollama/b/2-instances/test_results_4/request_summary.csv");
    let rows = read_csv(&two);
    assert_eq!(rows.len(), 4);
    let mut per_target = std::collections::BTreeMap::new();
    for r in &rows {
        *per_target.entry(r["Target"].clone()).or_insert(0) += 1;
    }
    let mut want_split = vec![(s1.url(), 2), (s2.url(), 2)];
    want_split.sort();
    assert_eq!(
        per_target.into_iter().collect::<Vec<_>>(),
        want_split,
        "round-robin: two requests each"
    );
    let one = read_csv(&dir.join("ollama/a/1-instance/test_results_2/request_summary.csv"));
    assert!(one.iter().all(|r| r["Target"] == s1.url()));

    // Each model was loaded before its first level, and the load kept out of every level.
    let run_json = read_run_json(dir);
    let groups = run_json["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 4);
    // Every group reached a (model, instance) pair for the first time, so each loaded first.
    for g in groups {
        let load = g["load_s"].as_f64().unwrap();
        assert!(load >= 0.15, "a 0.4 s load at 0.4x: {g}");
    }
    for r in &cycles {
        let ttft_max: f64 = r["ttft_max_s"].parse().unwrap();
        assert!(ttft_max < 0.15, "a model load leaked into a level: {r:?}");
    }
    // Several instances: their figures in run.json, the imbalance in cycles.csv.
    let level = &run_json["cycles"][2];
    assert_eq!(level["targets"].as_array().unwrap().len(), 2);
    let imbalance: f64 = cycles[2]["target_imbalance"].parse().unwrap();
    assert!((imbalance - 1.0).abs() < 1e-9, "{imbalance}");

    // The report compares the groups: who serves how many at the SLO, what a second instance
    // added, the curves overlaid, each group's instances.
    let written = report(dir, None, &ReportOptions::default()).unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    for needle in [
        "## Groups side by side",
        "a · 1 instance serves",
        "b · 2 instances serves",
        "concurrent users at the SLO",
        "a: 2 instances peaks at",
        "| level | instance | requests |",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    let charts: Vec<String> = written
        .charts
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // Two slots an instance: level 4 queues on one instance and not on two.
    assert!(
        md.contains("going to 2 instances adds throughput"),
        "a second instance doubles the slots:\n{md}"
    );
    assert!(
        charts.contains(&"groups_throughput.png".to_string()),
        "{charts:?}"
    );
    assert!(
        charts.contains(&"groups_ttft_p99.png".to_string()),
        "{charts:?}"
    );

    s1.stop(Duration::from_secs(1)).await;
    s2.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_missing_on_any_instance_is_refused_before_any_load_naming_what_is_there() {
    let (s1, s2) = (instance().await, instance().await);
    let out = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&s1.url(), "a", &[1], out.path());
    cfg.matrix.models = vec!["a".into(), "qwen3:0.6b".into()];
    cfg.matrix.targets = vec![s1.url(), s2.url()];
    let e = run(cfg).await.unwrap_err().to_string();
    assert!(e.contains("qwen3:0.6b"), "{e}");
    assert!(e.contains("a, b"), "it lists what the server has: {e}");
    assert!(!out.path().join("test-run").exists(), "nothing was written");
    s1.stop(Duration::from_secs(1)).await;
    s2.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_fails_its_own_requests_only_and_least_in_flight_routes_around_it() {
    // Dead at the check: refused before any load, naming it.
    let s1 = instance().await;
    let gone = instance().await;
    let dead = gone.url();
    gone.stop(Duration::ZERO).await;
    let out = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&s1.url(), "a", &[4], out.path());
    cfg.options.max_tokens = Some(12);
    cfg.monitor.enabled = false;
    cfg.matrix.models = vec!["a".into()];
    cfg.matrix.targets = vec![s1.url(), dead.clone()];
    let e = run(cfg.clone()).await.unwrap_err().to_string();
    assert!(e.contains(&dead), "{e}");

    // Alive at the check, dead for the load: a fresh pair where the second dies mid-run.
    let s3 = instance().await;
    let s4 = instance().await;
    let dead = s4.url();
    cfg.matrix.targets = vec![s3.url(), dead.clone()];
    cfg.target = s3.url();
    cfg.matrix.policy = TargetPolicy::LeastInFlight;
    cfg.run_id = Some("mid-run".into());
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s4.stop(Duration::ZERO).await;
    });
    cfg.levels = vec![tokengun::plan::Level {
        concurrency: 4,
        rate_per_s: None,
    }];
    cfg.shape = tokengun_common::LoadShape::Closed;
    cfg.duration = Duration::from_millis(1500);
    let report_run = run(cfg).await.unwrap();
    killer.await.unwrap();
    let rows = read_csv(
        &report_run
            .run_dir
            .join("ollama/a/test_results_4/request_summary.csv"),
    );
    let failed: Vec<_> = rows.iter().filter(|r| r["Status"] != "Completed").collect();
    assert!(!failed.is_empty(), "the dead instance's requests fail");
    assert!(
        failed.iter().all(|r| r["Target"] == dead),
        "only the dead instance's records are marked: {failed:?}"
    );
    let alive_ok = rows
        .iter()
        .filter(|r| r["Target"] == s3.url() && r["Status"] == "Completed")
        .count();
    let to_dead = rows.iter().filter(|r| r["Target"] == dead).count();
    assert!(
        alive_ok > to_dead * 3,
        "least-in-flight passes over the refusing instance: {alive_ok} ok vs {to_dead} to the dead one"
    );
    let written = report(&report_run.run_dir, None, &ReportOptions::default()).unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    assert!(
        md.contains(&format!("{dead} failed")) && md.contains("the other instances failed none"),
        "the report names the dead instance:\n{md}"
    );
    s1.stop(Duration::from_secs(1)).await;
    s3.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollamas_own_account_says_when_a_model_ran_partly_on_the_cpu() {
    // A model 40% outside VRAM, as Ollama's /api/ps reports it.
    let mut c = SimConfig::fixed(Duration::from_millis(20), Duration::from_millis(4), 60, 4);
    c.models = vec!["m".into()];
    c.vram_share = 0.6;
    let sim = SimHandle::start("127.0.0.1:0", c).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&sim.url(), "m", &[1, 2, 4], out.path());
    cfg.monitor.process_interval = Duration::from_millis(50);
    cfg.monitor.baseline = Duration::ZERO;
    let ran = run(cfg).await.unwrap();
    let rows = read_csv(&ran.run_dir.join("server_metrics.csv"));
    assert!(
        rows.iter()
            .any(|r| r["source"] == "ollama-ps" && r["metric"] == "cpu_share"),
        "/api/ps reached server_metrics.csv"
    );
    let written = report(&ran.run_dir, None, &ReportOptions::default()).unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    assert!(
        md.contains("40% of a loaded model outside GPU memory"),
        "{md}"
    );
    sim.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_agents_in_their_own_processes_each_load_their_own_instance() {
    let (s1, s2) = (instance().await, instance().await);
    let (a1, a2) = (
        tokengun_tests::AgentProc::spawn(),
        tokengun_tests::AgentProc::spawn(),
    );
    let out = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&s1.url(), "a", &[4], out.path());
    cfg.options.max_tokens = Some(40);
    cfg.monitor.enabled = false;
    cfg.agents = vec![a1.addr.clone(), a2.addr.clone()];
    cfg.matrix.models = vec!["a".into(), "b".into()];
    cfg.matrix.targets = vec![s1.url(), s2.url()];
    cfg.matrix.policy = TargetPolicy::Pinned;
    let ran = run(cfg).await.unwrap();
    for model in ["a", "b"] {
        for (agent, target) in [("agent1", s1.url()), ("agent2", s2.url())] {
            let rows = read_csv(&ran.run_dir.join(format!(
                "ollama/{model}/test_results_4/{agent}/request_summary.csv"
            )));
            assert_eq!(rows.len(), 2, "{agent}: half of level 4");
            assert!(
                rows.iter()
                    .all(|r| r["Target"] == target && r["Status"] == "Completed"),
                "{agent} sends only to its own instance: {rows:?}"
            );
        }
    }
    // Each agent loaded each model on its own instance before the model's level: no load in
    // any level's TTFT (a 0.4 s load at 0.4x is 160 ms; the levels' first tokens take ~12 ms).
    for r in read_csv(&ran.run_dir.join("cycles.csv")) {
        let ttft_max: f64 = r["ttft_max_s"].parse().unwrap();
        assert!(ttft_max < 0.15, "a model load leaked into a level: {r:?}");
    }
    s1.stop(Duration::from_secs(1)).await;
    s2.stop(Duration::from_secs(1)).await;
}
