//! Several hosts on one machine: agents and simulators in their own network namespaces, reached
//! from the root namespace over veth links that the tests cut and restore. Needs root and
//! iproute2: skipped with a message otherwise, except under CI=true where they must run.
//! The multi-agent scenarios: merged cycles equal the sum of the parts, and a link cut mid-cycle
//! is detected, reconnected and replayed with nothing lost and nothing twice.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokengun::link::{AgentAuth, AgentLink, LinkError};
use tokengun_common::Api;
use tokengun_tests::netns::{self, Fabric, NsProc, require_root};
use tokengun_tests::{f, level_dir, read_csv, read_run_json, workspace_bin};

const CONNECT: Duration = Duration::from_secs(3);
/// The target every agent applies on its own host: its namespace's simulator.
const TARGET: &str = "http://127.0.0.1:11434";
/// How long the mid-cycle cut lasts. While it lasts TCP only retransmits: the controller notices
/// through its own silence check (progress records come every 250 ms while a cycle runs).
/// Longer than the controller's 10 s silence limit, so the agent is declared lost, then reconnected.
const CUT_FOR: Duration = Duration::from_secs(13);

fn auth(token: &Path) -> AgentAuth {
    AgentAuth {
        token_file: Some(token.to_path_buf()),
        ..AgentAuth::default()
    }
}

/// A simulator serving model `model` and an agent, in one namespace.
fn sim_and_agent(
    ns: &netns::Netns,
    token: &Path,
    model: &str,
    sim_extra: &[&str],
) -> (NsProc, NsProc) {
    let mut args = vec!["--model", model];
    args.extend_from_slice(sim_extra);
    let (sim, url) = ns.spawn_sim(&args);
    assert_eq!(
        url, TARGET,
        "the simulator should serve on the namespace's loopback"
    );
    let (agent, addr) = ns.spawn_agent(token, &[]);
    assert_eq!(addr, ns.agent_addr());
    (sim, agent)
}

/// `tokengun run ARGS` started from the root namespace, writing `out/run_id`, with no monitor,
/// report or TUI.
fn spawn_controller(args: &[&str], out: &Path, run_id: &str) -> NsProc {
    let out_s = out.to_string_lossy();
    let mut all = vec![
        "run",
        "--out",
        &out_s,
        "--run-id",
        run_id,
        "--no-monitor",
        "--no-report",
        "--no-tui",
    ];
    all.extend_from_slice(args);
    NsProc::spawn_root(&workspace_bin("tokengun"), &all)
}

/// `tokengun run ARGS` from the root namespace; waits for its exit (bounded) and returns the
/// run folder, panicking with its output if it failed.
fn controller(args: &[&str], out: &Path, run_id: &str, limit: Duration) -> PathBuf {
    let mut run = spawn_controller(args, out, run_id);
    let status = run
        .wait_exit(limit)
        .unwrap_or_else(|| panic!("tokengun run still running after {limit:?}"));
    assert!(
        status.success(),
        "tokengun run failed ({status}); stdout:\n{}\nstderr:\n{}",
        run.stdout(),
        run.stderr()
    );
    out.join(run_id)
}

/// Hello on an existing link, given at most `limit`: None when no answer came in time.
async fn hello_within(link: &AgentLink, limit: Duration) -> Option<Result<(), LinkError>> {
    tokio::time::timeout(limit, link.hello(false))
        .await
        .ok()
        .map(|r| r.map(drop))
}

/// Retries connect + Hello until it works or `limit` passes; returns how long it took.
async fn answers_again(addr: &str, auth: &AgentAuth, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let attempt = async {
            let link = AgentLink::connect_with(addr, CONNECT, auth).await?;
            link.hello(false).await
        };
        match tokio::time::timeout(CONNECT, attempt).await {
            Ok(Ok(_)) => return t0.elapsed(),
            Ok(Err(e)) if t0.elapsed() > limit => panic!("{addr} still unreachable: {e}"),
            Err(_) if t0.elapsed() > limit => panic!("{addr} still silent after {limit:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn three_namespaced_agents_answer_run_a_cycle_and_survive_a_cut_link() {
    let Some(()) = require_root() else { return };
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let token = netns::token_file(dir.path());
    let auth = auth(&token);
    let fabric = Fabric::new(3);
    let mut procs = Vec::new();
    for (k, ns) in fabric.iter().enumerate() {
        procs.push(sim_and_agent(
            ns,
            &token,
            &format!("ns{k}-1b"),
            &["--tokens", "20"],
        ));
    }
    let built = t0.elapsed();
    let links = each_agent_answers(&fabric, &auth).await;
    let run_took = a_run_through_one_agent(&fabric, &token, &dir.path().join("results"));
    let (back_after, old_link_back) = a_cut_link_comes_back(&fabric, &auth, &links).await;
    // The agent is the same process throughout.
    let (_, agent0) = &mut procs[0];
    assert!(agent0.wait_exit(Duration::ZERO).is_none(), "agent 0 exited");
    eprintln!(
        "netns smoke: 3 namespaces + 6 processes in {built:?}; run through one agent {run_took:?}; \
         after restore a new connection answered in {back_after:?}, the old one in {old_link_back:?}; total {:?}",
        t0.elapsed()
    );
}

/// Hello and Preflight on each agent across its link; each agent reaches its own simulator: the
/// one serving ns<k>-1b, on its namespace's loopback. The token is required across the link as
/// on loopback. Returns the links.
async fn each_agent_answers(fabric: &Fabric, auth: &AgentAuth) -> Vec<AgentLink> {
    let mut links = Vec::new();
    for (k, ns) in fabric.iter().enumerate() {
        let link = AgentLink::connect_with(&ns.agent_addr(), CONNECT, auth)
            .await
            .unwrap();
        let info = link.hello(false).await.unwrap();
        assert!(!info.version.is_empty() && !info.in_process, "{info:?}");
        let target = link.preflight(TARGET, None).await.unwrap();
        assert_eq!(target.models, vec![format!("ns{k}-1b")], "agent {k}");
        assert_eq!(target.api, Api::OllamaGenerate);
        links.push(link);
    }
    let refused =
        AgentLink::connect_with(&fabric.ns(0).agent_addr(), CONNECT, &AgentAuth::default())
            .await
            .unwrap()
            .hello(false)
            .await
            .unwrap_err();
    assert!(
        matches!(refused, LinkError::Unauthenticated { .. }),
        "{refused}"
    );
    links
}

/// A single-agent run through the second namespace's agent, aimed at its simulator; returns how
/// long it took.
fn a_run_through_one_agent(fabric: &Fabric, token: &Path, out: &Path) -> Duration {
    let addr = fabric.ns(1).agent_addr();
    let token_s = token.to_string_lossy();
    let run_started = Instant::now();
    let run_dir = controller(
        &[
            "--agent",
            &addr,
            "--agent-token-file",
            &token_s,
            "--target",
            TARGET,
            "--model",
            "ns1-1b",
            "--levels",
            "2",
        ],
        out,
        "netns-smoke",
        Duration::from_secs(120),
    );
    let run_took = run_started.elapsed();
    let cycles = read_csv(&run_dir.join("cycles.csv"));
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert_eq!(f(&cycles[0], "completed"), 2.0, "{:?}", cycles[0]);
    assert_eq!(f(&cycles[0], "output_tokens"), 40.0, "{:?}", cycles[0]);
    let rows = read_csv(&level_dir(&run_dir, "ns1-1b", 2).join("request_summary.csv"));
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["Status"] == "Completed"), "{rows:?}");
    let doc = read_run_json(&run_dir);
    assert_eq!(
        doc["agents"][0]["address"],
        addr.as_str(),
        "{}",
        doc["agents"]
    );
    run_took
}

/// Cuts the first namespace's link: its agent neither accepts connections nor answers on the
/// connection it had (`links[0]`); the others still answer. Restored, new connections work
/// again, and so does the connection that stalled. Returns how long each took to answer again.
async fn a_cut_link_comes_back(
    fabric: &Fabric,
    auth: &AgentAuth,
    links: &[AgentLink],
) -> (Duration, Duration) {
    let ns0 = fabric.ns(0);
    ns0.cut();
    let err = AgentLink::connect_with(&ns0.agent_addr(), CONNECT, auth)
        .await
        .err()
        .expect("a cut link should refuse new connections");
    assert!(matches!(err, LinkError::Unreachable { .. }), "{err}");
    assert!(
        hello_within(&links[0], Duration::from_secs(2))
            .await
            .is_none(),
        "the agent answered across a cut link"
    );
    links[2].hello(false).await.unwrap();

    ns0.restore();
    let back_after = answers_again(&ns0.agent_addr(), auth, Duration::from_secs(20)).await;
    let old_link_t0 = Instant::now();
    loop {
        match hello_within(&links[0], Duration::from_secs(2)).await {
            Some(Ok(())) => break,
            other => assert!(
                old_link_t0.elapsed() < Duration::from_secs(30),
                "the old connection never answered again: {other:?}"
            ),
        }
    }
    (back_after, old_link_t0.elapsed())
}

#[test]
fn a_fabric_is_removed_even_when_its_test_panics() {
    let Some(()) = require_root() else { return };
    let dir = tempfile::tempdir().unwrap();
    let token = netns::token_file(dir.path());
    let (tx, rx) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let fabric = Fabric::new(2);
        let (agent, _) = fabric.ns(1).spawn_agent(&token, &[]);
        let names: Vec<(String, String)> = fabric
            .iter()
            .map(|n| (n.name.clone(), n.host_veth.clone()))
            .collect();
        tx.send((names, agent.pid(), fabric.ns(1).octet)).unwrap();
        // Leak the handle: the fabric alone must still end the agent.
        std::mem::forget(agent);
        panic!("a test failing with a fabric up");
    })
    .join();
    assert!(panicked.is_err());
    let (names, pid, octet) = rx.recv().unwrap();
    let listed = String::from_utf8(
        std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for (ns, veth) in &names {
        assert!(!listed.contains(ns.as_str()), "{ns} still listed: {listed}");
        assert!(
            netns::ip(&["link", "show", veth]).is_err(),
            "{veth} still exists"
        );
    }
    let routes = String::from_utf8(
        std::process::Command::new("ip")
            .args(["route", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !routes.contains(&format!("10.77.{octet}.0/24")),
        "route left: {routes}"
    );
    // Killed: gone, or a zombie nobody reaped (its handle was leaked).
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z "),
        "agent {pid} still alive: {state}"
    );
}

// ---- Multi-agent runs: against the controller's multi-agent contract (lead's branch). ----

/// Three namespaces, each with a simulator (`m-1b`, `sim_extra`) and a token agent.
struct Hosts {
    fabric: Fabric,
    _procs: Vec<(NsProc, NsProc)>,
    token: PathBuf,
    dir: tempfile::TempDir,
}

fn three_hosts(sim_extra: &[&str]) -> Hosts {
    let dir = tempfile::tempdir().unwrap();
    let token = netns::token_file(dir.path());
    let fabric = Fabric::new(3);
    let procs = fabric
        .iter()
        .map(|ns| sim_and_agent(ns, &token, "m-1b", sim_extra))
        .collect();
    Hosts {
        fabric,
        _procs: procs,
        token,
        dir,
    }
}

impl Hosts {
    /// `--agent A --agent B --agent C --agent-token-file F --target ... --model m-1b`.
    fn agent_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for ns in self.fabric.iter() {
            v.push("--agent".to_string());
            v.push(ns.agent_addr());
        }
        v.extend(
            [
                "--agent-token-file",
                &self.token.to_string_lossy(),
                "--target",
                TARGET,
                "--model",
                "m-1b",
            ]
            .map(String::from),
        );
        v
    }
}

fn agent_summary(run_dir: &Path, level: u32, k: usize) -> Vec<HashMap<String, String>> {
    read_csv(
        &level_dir(run_dir, "m-1b", level)
            .join(format!("agent{k}"))
            .join("request_summary.csv"),
    )
}

fn assert_unique_ids(rows: &[HashMap<String, String>], what: &str) {
    let mut seen = HashSet::new();
    for r in rows {
        assert!(
            seen.insert(r["RequestID"].clone()),
            "{what}: RequestID {} twice",
            r["RequestID"]
        );
    }
}

#[tokio::test]
async fn three_agents_split_each_level_and_the_merge_equals_the_sum_of_the_parts() {
    let Some(()) = require_root() else { return };
    let hosts = three_hosts(&["--tokens", "30", "--slots", "8"]);
    let out = hosts.dir.path().join("results");
    let mut args = hosts.agent_args();
    args.extend(["--levels", "3,6", "--split", "total"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run_dir = controller(&args, &out, "three-split", Duration::from_secs(180));

    let cycles = read_csv(&run_dir.join("cycles.csv"));
    let doc = read_run_json(&run_dir);
    assert_eq!(cycles.len(), 2, "{cycles:?}");
    for (i, (row, level)) in cycles.iter().zip([3u32, 6]).enumerate() {
        assert_eq!(f(row, "completed"), f64::from(level), "{row:?}");
        assert_eq!(f(row, "agents"), 3.0, "{row:?}");
        let spread_s = f(row, "start_spread_s");
        assert!(
            (0.0..0.1).contains(&spread_s),
            "level {level}: start spread {spread_s} s"
        );
        // Per-agent files: every request once, the merged figures their sum.
        let (mut requests, mut tokens) = (0usize, 0.0);
        for k in 1..=3 {
            let rows = agent_summary(&run_dir, level, k);
            assert_unique_ids(&rows, &format!("level {level} agent{k}"));
            assert!(rows.iter().all(|r| r["Status"] == "Completed"), "{rows:?}");
            // N/k each: 1,1,1 and 2,2,2.
            assert_eq!(rows.len(), level as usize / 3, "level {level} agent{k}");
            requests += rows.len();
            tokens += rows.iter().map(|r| f(r, "TokenCount")).sum::<f64>();
        }
        assert_eq!(requests, level as usize, "level {level}");
        assert_eq!(f(row, "output_tokens"), tokens, "level {level}: {row:?}");
        // run.json: one entry per agent, in --agent order, their shares summing to the level.
        let agents = doc["cycles"][i]["agents"].as_array().unwrap();
        assert_eq!(agents.len(), 3, "{agents:?}");
        for (k, (a, ns)) in agents.iter().zip(hosts.fabric.iter()).enumerate() {
            assert_eq!(a["agent"], format!("agent{}", k + 1).as_str());
            assert_eq!(a["address"], ns.agent_addr().as_str());
            assert_eq!(a["requests"], u64::from(level / 3), "{a}");
            assert_eq!(a["completed"], u64::from(level / 3), "{a}");
            assert_eq!(a["failed"], 0, "{a}");
            assert_eq!(a["lost"], false, "{a}");
            let offset_s = a["start_offset_s"].as_f64().unwrap();
            assert!(offset_s.abs() < 0.1, "{a}");
        }
        let doc_tokens: f64 = agents
            .iter()
            .map(|a| a["output_tokens"].as_f64().unwrap())
            .sum();
        assert_eq!(doc_tokens, tokens, "level {level}");
    }
}

#[tokio::test]
async fn a_link_cut_mid_cycle_loses_nothing_and_marks_the_agent_lost_then_recovered() {
    let Some(()) = require_root() else { return };
    let hosts = three_hosts(&["--tokens", "20", "--slots", "8"]);
    let out = hosts.dir.path().join("results");
    let mut args = hosts.agent_args();
    args.extend(
        [
            "--shape",
            "closed",
            "--levels",
            "3",
            "--duration",
            "6s",
            "--split",
            "total",
            "--on-agent-loss",
            "continue",
            "--reconnect-wait",
            "30s",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut run = spawn_controller(&args, &out, "cut-mid-cycle");
    // The cycle starts after the handshakes and the clock probes (its plain progress line,
    // --no-tui); 2 s into it, cut the second agent's link for CUT_FOR.
    let cut = hosts.fabric.ns(1);
    run.wait_line("cycle 1/1", Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(2)).await;
    cut.cut();
    tokio::time::sleep(CUT_FOR).await;
    cut.restore();
    let status = run
        .wait_exit(Duration::from_secs(120))
        .expect("the run should finish after the link came back");
    assert!(
        status.success(),
        "run failed ({status}): {}\n{}",
        run.stdout(),
        run.stderr()
    );
    let run_dir = out.join("cut-mid-cycle");

    let doc = read_run_json(&run_dir);
    let agents = doc["cycles"][0]["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 3, "{agents:?}");
    let cycles = read_csv(&run_dir.join("cycles.csv"));
    let mut requests = 0u64;
    for (k, a) in agents.iter().enumerate() {
        let rows = agent_summary(&run_dir, 3, k + 1);
        assert_unique_ids(&rows, &format!("agent{}", k + 1));
        // The agent kept running through the cut; the controller replayed what it missed.
        assert_eq!(
            rows.len() as u64,
            a["requests"].as_u64().unwrap(),
            "agent{}: rows vs its CycleDone count: {a}",
            k + 1
        );
        requests += rows.len() as u64;
        let cut_one = k == 1;
        assert_eq!(a["lost"], cut_one, "{a}");
        assert_eq!(a["recovered"], cut_one, "{a}");
    }
    assert_eq!(f(&cycles[0], "agents"), 3.0, "{:?}", cycles[0]);
    assert_eq!(
        f(&cycles[0], "completed") + f(&cycles[0], "failed"),
        requests as f64,
        "{:?}",
        cycles[0]
    );
}
