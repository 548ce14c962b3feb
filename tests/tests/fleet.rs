//! Several agents in one run (real agents on loopback ports, one simulator): levels split or
//! applied per agent, merged figures equal the sum of the parts, per-agent files, start spread,
//! and a lost agent.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use tokengun::plan::{OnAgentLoss, Split};
use tokengun_tests::{
    AgentProc, Scenario, SimConfig, SimHandle, f, level_dir, read_csv, read_run_json, run,
    run_config,
};

/// A 16-slot simulator with ground truth, serving `m:1b`, driven by `agents` local agents.
fn sixteen_slots(agents: usize) -> Scenario {
    Scenario::fixed("m:1b", 20, 2, 40, 16)
        .sim(|s| s.record_truth = true)
        .agents(agents)
}

/// A 16-slot simulator serving `m:1b` whose requests stream for about 1.5 s (300 tokens, one
/// every 5 ms): long enough to break something mid-cycle.
async fn long_requests() -> SimHandle {
    SimHandle::start(
        "127.0.0.1:0",
        SimConfig {
            models: vec!["m:1b".into()],
            ..SimConfig::fixed(Duration::from_millis(10), Duration::from_millis(5), 300, 16)
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_split_a_level_and_the_merge_is_the_sum_of_the_parts() {
    let ran = sixteen_slots(3).levels(&[3, 7]).run().await;
    let dir = ran.run_dir();
    let cycles = ran.cycles();
    let m = ran.run_json();
    assert_eq!(m["split"], "total");
    assert_eq!(m["agents"].as_array().unwrap().len(), 3);
    for (row, (level, shares)) in cycles.iter().zip([(3u32, [1u32, 1, 1]), (7, [3, 2, 2])]) {
        assert_eq!(row["agents"], "3", "{row:?}");
        assert_eq!(row["completed"], level.to_string(), "{row:?}");
        assert_eq!(row["partial"], "false");
        let spread = f(row, "start_spread_s");
        assert!((0.0..0.1).contains(&spread), "start spread {spread} s");
        let mut tokens = 0.0;
        let mut rows = 0;
        for (k, share) in shares.iter().enumerate() {
            let file = ran
                .level_dir(level)
                .join(format!("agent{}", k + 1))
                .join("request_summary.csv");
            let reqs = read_csv(&file);
            assert_eq!(reqs.len(), *share as usize, "{}", file.display());
            rows += reqs.len();
            tokens += reqs.iter().map(|r| f(r, "TokenCount")).sum::<f64>();
        }
        assert_eq!(rows, level as usize);
        assert_eq!(
            tokens,
            f(row, "output_tokens"),
            "merged tokens = sum of the parts"
        );
    }
    let c = &m["cycles"][1]["agents"];
    assert_eq!(c.as_array().unwrap().len(), 3);
    let done: u64 = c
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["completed"].as_u64().unwrap())
        .sum();
    assert_eq!(done, 7);
    assert!(c.as_array().unwrap().iter().all(|a| a["lost"] == false));
    // The simulator saw exactly the merged number of requests.
    assert_eq!(ran.sim().truth().len(), 10);
    // records.pb holds every request with its whole timeline, per agent, once.
    let stored = tokengun_proto::stored::read_all(&dir.join("records.pb")).unwrap();
    let requests: Vec<(&str, &tokengun_common::RequestRecord)> = stored
        .iter()
        .filter_map(|(a, r)| match &r.body {
            tokengun_common::RecordBody::Request(q) => Some((a.as_str(), q.as_ref())),
            _ => None,
        })
        .collect();
    assert_eq!(requests.len(), 10);
    for (_, q) in &requests {
        let timeline: u64 = q.timeline.iter().map(|c| u64::from(c.tokens)).sum();
        assert_eq!(timeline, q.output_tokens, "{q:?}");
    }
    let done = stored
        .iter()
        .filter(|(_, r)| matches!(r.body, tokengun_common::RecordBody::CycleDone(_)))
        .count();
    assert_eq!(done, 6, "a cycle end per agent per level");
    assert!(requests.iter().filter(|(a, _)| *a == "agent1").count() == 4);
    ran.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_agent_split_gives_each_agent_the_whole_level() {
    let ran = sixteen_slots(2)
        .levels(&[4])
        .config(|c| c.split = Split::PerAgent)
        .run()
        .await;
    let row = &ran.cycles()[0];
    assert_eq!(row["completed"], "8");
    assert_eq!(row["requests"], "8");
    assert_eq!(ran.sim().truth().len(), 8);
    ran.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_agent_marks_the_cycle_and_the_sweep_goes_on_without_it() {
    // Long requests, so the cycle is still running when one agent is killed.
    let sim = long_requests().await;
    let keep = AgentProc::spawn();
    let doomed = AgentProc::spawn();
    let out = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&sim.url(), "m:1b", &[4, 2], out.path());
    cfg.agents = vec![keep.addr.clone(), doomed.addr.clone()];
    cfg.reconnect_wait = Duration::from_millis(500);
    cfg.on_agent_loss = OnAgentLoss::Continue;
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        drop(doomed); // SIGKILL: the stream breaks mid-cycle, nothing more comes
    });
    let report = run(cfg).await.unwrap();
    killer.await.unwrap();
    let cycles = read_csv(&report.run_dir.join("cycles.csv"));
    assert_eq!(cycles.len(), 2, "the sweep went on");
    assert_eq!(cycles[0]["partial"], "true", "{:?}", cycles[0]);
    let m = read_run_json(&report.run_dir);
    let parts = m["cycles"][0]["agents"].as_array().unwrap();
    assert_eq!(parts[1]["lost"], true, "{parts:?}");
    assert_eq!(parts[1]["recovered"], false);
    assert_eq!(parts[0]["completed"], 2);
    // The second level ran on the agent that was left, whole.
    assert_eq!(cycles[1]["completed"], "2");
    assert_eq!(cycles[1]["partial"], "false");
    assert_eq!(cycles[1]["agents"], "1");
    assert!(
        m["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("agent2") && n.as_str().unwrap().contains("lost")),
        "{}",
        m["notes"]
    );
    drop(keep);
    sim.stop(Duration::from_secs(1)).await;
}

/// A TCP relay to an agent whose link can be cut (every connection dropped, new ones refused)
/// and restored: the agent process lives on, as when a cable is pulled.
struct Relay {
    addr: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start(to: String) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // refused: dropped at once
                }
                let to = to.clone();
                let mut cut_rx = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Self { addr, up, cut }
    }

    fn set(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_is_reconnected_and_the_records_replayed() {
    let sim = long_requests().await;
    let a = AgentProc::spawn();
    let b = AgentProc::spawn();
    let relay = std::sync::Arc::new(Relay::start(b.addr.clone()).await);
    let out = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&sim.url(), "m:1b", &[6, 2], out.path());
    cfg.agents = vec![a.addr.clone(), relay.addr.clone()];
    cfg.reconnect_wait = Duration::from_secs(20);
    let r2 = relay.clone();
    let sim = std::sync::Arc::new(sim);
    let s2 = sim.clone();
    let cable = tokio::spawn(async move {
        // Cut once both agents' requests stream (6 decoding), well before they end.
        let t0 = tokio::time::Instant::now();
        while s2.decoding() < 6 && t0.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        r2.set(false);
        // The cycle (about 1.5 s of streaming) ends on the agent while its link is down.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        r2.set(true);
    });
    let report = run(cfg).await.unwrap();
    cable.await.unwrap();
    let m = read_run_json(&report.run_dir);
    let parts = m["cycles"][0]["agents"].as_array().unwrap();
    assert_eq!(parts[1]["lost"], true, "{parts:?}");
    assert_eq!(parts[1]["recovered"], true, "{parts:?}");
    // Nothing lost: every request of the cut agent reached its file, once.
    let file = level_dir(&report.run_dir, "m-1b", 6).join("agent2/request_summary.csv");
    let rows = read_csv(&file);
    assert_eq!(rows.len(), 3, "{}", file.display());
    let mut ids: Vec<&str> = rows.iter().map(|r| r["RequestID"].as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "no duplicates");
    assert!(rows.iter().all(|r| r["Status"] == "Completed"), "{rows:?}");
    let cycles = read_csv(&report.run_dir.join("cycles.csv"));
    assert_eq!(cycles[0]["completed"], "6");
    assert_eq!(
        cycles[0]["partial"], "true",
        "lost mid-cycle: marked, though recovered"
    );
    assert_eq!(cycles[1]["completed"], "2");
    assert_eq!(cycles[1]["partial"], "false");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_and_restarted_on_its_spool_gives_back_what_it_recorded() {
    let sim = std::sync::Arc::new(
        SimHandle::start(
            "127.0.0.1:0",
            SimConfig {
                models: vec!["m:1b".into()],
                // Requests of very different lengths: some end before the kill, some are cut.
                output: tokengun_simulator::OutputLen::Uniform { min: 20, max: 400 },
                ..SimConfig::fixed(Duration::from_millis(10), Duration::from_millis(5), 300, 32)
            },
        )
        .await
        .unwrap(),
    );
    let a = AgentProc::spawn();
    // The second agent on a fixed port, so it can come back at the same address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let spool = tempfile::tempdir().unwrap();
    let spool_path = spool.path().to_path_buf();
    let b = AgentProc::spawn_at(&listen, &spool_path);
    let out = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&sim.url(), "m:1b", &[16, 2], out.path());
    cfg.agents = vec![a.addr.clone(), b.addr.clone()];
    cfg.reconnect_wait = Duration::from_secs(20);
    let s2 = sim.clone();
    let listen2 = listen.clone();
    let crash = tokio::spawn(async move {
        let t0 = tokio::time::Instant::now();
        while s2.decoding() < 16 && t0.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Some short requests have ended by now; the long ones are still streaming.
        tokio::time::sleep(Duration::from_millis(900)).await;
        let mut b = b;
        let _ = b.child.kill(); // SIGKILL
        let _ = b.child.wait();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Back on the same address and spool: same agent id, same records.
        let back = AgentProc::spawn_at(&listen2, &spool_path);
        (b, back)
    });
    let report = run(cfg).await.unwrap();
    let (_dead, back) = crash.await.unwrap();
    let m = read_run_json(&report.run_dir);
    let parts = m["cycles"][0]["agents"].as_array().unwrap();
    assert_eq!(parts[1]["lost"], true, "{parts:?}");
    assert_eq!(parts[1]["recovered"], true, "{parts:?}");
    // What agent2 finished before the kill reached its file, once; what it had in flight is gone.
    let file = level_dir(&report.run_dir, "m-1b", 16).join("agent2/request_summary.csv");
    let rows = read_csv(&file);
    let mut ids: Vec<&str> = rows.iter().map(|r| r["RequestID"].as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), rows.len(), "no duplicates");
    assert!(
        !rows.is_empty(),
        "requests finished before the kill were recorded"
    );
    assert!(
        rows.len() < 8,
        "the ones in flight at the kill were lost: {}",
        rows.len()
    );
    assert_eq!(parts[1]["requests"].as_u64().unwrap(), 8);
    let cycles = read_csv(&report.run_dir.join("cycles.csv"));
    assert_eq!(cycles[0]["partial"], "true");
    // The sweep went on, with the restarted agent back in it.
    assert_eq!(cycles[1]["completed"], "2", "{:?}", cycles[1]);
    assert_eq!(cycles[1]["agents"], "2");
    drop((a, back, spool));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_controller_is_resumed_and_the_replay_completes_its_cycle() {
    let sim = std::sync::Arc::new(long_requests().await);
    let (a, b) = (AgentProc::spawn(), AgentProc::spawn());
    let out = tempfile::tempdir().unwrap();
    let bin = tokengun_tests::workspace_bin("tokengun");
    let url = sim.url();
    let out_s = out.path().to_string_lossy().into_owned();
    let mut controller = std::process::Command::new(&bin)
        .args([
            "run",
            "--target",
            &url,
            "--api",
            "ollama-generate",
            "--model",
            "m:1b",
            "--levels",
            "4,2",
            "--agent",
            &a.addr,
            "--agent",
            &b.addr,
            "--run-id",
            "killed",
            "--out",
            &out_s,
            "--no-tui",
            "--no-monitor",
            "--no-report",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while the first level's 4 requests stream (each lasts about 1.5 s).
    let t0 = tokio::time::Instant::now();
    while sim.decoding() < 4 && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    controller.kill().unwrap();
    controller.wait().unwrap();
    let dir = out.path().join("killed");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "running", "it died mid-run");
    // The agents finish the cycle on their own while no controller listens.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (bin2, dir2) = (bin.clone(), dir.clone());
    let resumed = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&bin2)
            .args(["resume", dir2.to_str().unwrap(), "--no-tui", "--no-report"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        resumed.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&resumed.stdout),
        String::from_utf8_lossy(&resumed.stderr)
    );
    let m = read_run_json(&dir);
    assert_eq!(m["status"], "complete");
    let cycles = read_csv(&dir.join("cycles.csv"));
    assert_eq!(cycles.len(), 2, "the interrupted level and the next one");
    assert_eq!(cycles[0]["completed"], "4", "{:?}", cycles[0]);
    assert_eq!(cycles[1]["completed"], "2");
    for k in 1..=2 {
        let rows =
            read_csv(&level_dir(&dir, "m-1b", 4).join(format!("agent{k}/request_summary.csv")));
        assert_eq!(rows.len(), 2, "agent{k}: every request, once");
    }
    let stored = tokengun_proto::stored::read_all(&dir.join("records.pb")).unwrap();
    let requests = stored
        .iter()
        .filter(|(_, r)| matches!(r.body, tokengun_common::RecordBody::Request(_)))
        .count();
    assert_eq!(requests, 6, "records.pb holds each request once");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_answers_while_the_agent_is_busy_with_load() {
    // No delays, 1,000 tokens a request: the agent parses as fast as it can.
    let mut sim_cfg = SimConfig::profile("firehose").unwrap();
    sim_cfg.models = vec!["m:1b".into()];
    let sim = SimHandle::start("127.0.0.1:0", sim_cfg).await.unwrap();
    let agent = AgentProc::spawn();
    let out = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&sim.url(), "m:1b", &[32], out.path());
    cfg.agents = vec![agent.addr.clone()];
    cfg.shape = tokengun_common::LoadShape::Closed;
    cfg.duration = Duration::from_secs(4);
    cfg.monitor.enabled = false;
    let load = tokio::spawn(run(cfg));
    // The asking side on a thread and runtime of its own: this process also hosts the simulator
    // and the controller, whose work must not be what is measured.
    let addr = agent.addr.clone();
    let asker = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let link = tokengun::link::AgentLink::connect(&addr, Duration::from_secs(5))
                .await
                .unwrap();
            let t0 = tokio::time::Instant::now();
            while link.status().await.unwrap().0 != "running" {
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "the cycle never ran"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut times = Vec::new();
            while times.len() < 40 {
                let asked = std::time::Instant::now();
                let (state, _, _) = link.status().await.unwrap();
                if state != "running" {
                    break;
                }
                times.push(asked.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            times
        })
    });
    let report = load.await.unwrap().unwrap();
    let times = asker.join().unwrap();
    let row = &read_csv(&report.run_dir.join("cycles.csv"))[0];
    let worst = times.iter().max().copied().unwrap_or_default();
    eprintln!(
        "Status under load: {} answers, worst {worst:?} (agent CPU {}%, {} tokens)",
        times.len(),
        row["agent_cpu_pct"],
        row["output_tokens"]
    );
    assert!(
        f(row, "output_tokens") > 100_000.0,
        "the agent was busy: {row:?}"
    );
    assert!(times.len() >= 5, "asked while it ran: {times:?}");
    // A generous bound: what matters is that it answers while the load runs.
    assert!(worst < Duration::from_secs(2), "{times:?}");
    drop(agent);
    sim.stop(Duration::from_secs(1)).await;
}
