//! One agent serves run after run: its record numbering goes on, each run reads only its own.

use std::time::Duration;
use tokengun_tests::{SimConfig, SimHandle, level_dir, read_csv, run, run_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_agent_is_whole_and_separate() {
    let sim = SimHandle::start(
        "127.0.0.1:0",
        SimConfig {
            models: vec!["m:1b".into()],
            ..SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(1), 10, 4)
        },
    )
    .await
    .unwrap();
    let agent = tokengun_agent::LocalAgent::start(tokengun_agent::AgentConfig::default())
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    for (run_id, levels) in [("first", vec![1u32, 2]), ("second", vec![3u32, 2])] {
        let mut cfg = run_config(&sim.url(), "m:1b", &levels, out.path());
        cfg.agents = vec![agent.addr().to_string()];
        cfg.run_id = Some(run_id.into());
        let report = run(cfg).await.unwrap();
        let cycles = read_csv(&report.run_dir.join("cycles.csv"));
        assert_eq!(cycles.len(), 2, "{run_id}");
        for (row, level) in cycles.iter().zip(&levels) {
            assert_eq!(row["partial"], "false", "{run_id}: {row:?}");
            assert_eq!(row["completed"], level.to_string(), "{run_id}: {row:?}");
            let rows =
                read_csv(&level_dir(&report.run_dir, "m-1b", *level).join("request_summary.csv"));
            assert_eq!(
                rows.len(),
                *level as usize,
                "{run_id}: only this run's requests"
            );
        }
        let m: serde_json::Value = tokengun_tests::read_run_json(&report.run_dir);
        assert_eq!(m["notes"], serde_json::json!([]), "{run_id}");
    }
    agent.stop(Duration::from_secs(1)).await;
    sim.stop(Duration::from_secs(1)).await;
}
