#![allow(clippy::unwrap_used)]
//! `--search slo` on the simulator: a 4-slot server whose fifth concurrent request waits a whole
//! generation, searched for the highest burst meeting TTFT p99 <= 60 ms.

use tokengun::plan::PlanFile;
use tokengun::plan::search_keys::SearchPlan;
use tokengun_tests::Scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_brackets_bisects_and_repeats_the_answer() {
    let spec = PlanFile {
        search: Some(SearchPlan {
            mode: Some("slo".into()),
            max: Some(64.0),
            ttft_p99: Some("60ms".into()),
            ..Default::default()
        }),
        ..PlanFile::default()
    }
    .compile(None)
    .unwrap()
    .search;
    assert!(spec.is_some());
    // 4 slots; a request holds its slot 20 ms + 20 tokens x 5 ms = 120 ms.
    let ran = Scenario::fixed("m:1b", 20, 5, 20, 4)
        .config(move |c| c.search = spec)
        .run()
        .await;
    let m = ran.run_json();
    let s = &m["search"];
    let labels: Vec<&str> = s["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, vec!["1", "2", "4", "8", "6", "5", "4-rep2"], "{s}");
    assert_eq!(s["answer"], 4.0);
    assert_eq!(s["failed_above"], 5.0);
    let failed = &s["probes"][3];
    assert_eq!(failed["met"], false);
    assert!(
        failed["why"].as_str().unwrap().contains("TTFT p99"),
        "{failed}"
    );
    // Every probe is a level of its own in cycles.csv, goodput and all.
    let cycles = ran.cycles();
    assert_eq!(cycles.len(), 7);
    assert!(
        cycles
            .iter()
            .all(|c| !c["goodput_requests_per_s"].is_empty())
    );
    let data = tokengun::report::load::load_run(ran.run_dir()).unwrap();
    let doc = tokengun::report::run_report(&data, &Default::default()).unwrap();
    let said = doc.blocks.iter().any(|b| match b {
        tokengun::report::doc::Block::Para(p) => p.contains("between 4 and 5"),
        _ => false,
    });
    assert!(said, "the report gives the answer and its bracket");
    ran.stop().await;
}
