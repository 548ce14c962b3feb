//! A plan that owns its server (`[server]`): the agent starts it for each setting, checks it
//! healthy, runs the sweep, stops it (SIGTERM), and records exactly what ran; the report
//! compares the settings. A command the agent does not allow, and a server that never answers,
//! are refused with what to do and the server's own last words.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use tokengun::plan::PlanFile;
use tokengun::report::{ReportOptions, report};
use tokengun_tests::{AgentProc, read_csv, read_run_json, run, workspace_bin};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plan whose server is the simulator (a real process, `tokengun sim`), swept over
/// OLLAMA_NUM_PARALLEL = 1 and 4 at level 4.
fn plan(dir: &Path, port: u16, command: &str, extra: &str) -> PlanFile {
    let text = format!(
        r#"target = "http://127.0.0.1:{port}"
model = "m"
levels = [4]
max_tokens = 20
monitor = false
out = "{out}"
run_id = "managed"
{extra}
[server]
command = "{command}"
args = ["sim", "--listen", "127.0.0.1:{port}", "--model", "m", "--tokens", "20", "--time-scale", "0.3"]
env = {{ OLLAMA_NUM_PARALLEL = [1, 4] }}
health_timeout = "20s"
stop_grace = "5s"
"#,
        out = dir.display()
    );
    let path = dir.join("plan.toml");
    std::fs::write(&path, text).unwrap();
    PlanFile::load(&path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_setting_gets_its_own_server_and_the_report_compares_them() {
    let out = tempfile::tempdir().unwrap();
    let port = free_port();
    let bin = workspace_bin("tokengun");
    let cfg = plan(out.path(), port, &bin.to_string_lossy(), "")
        .compile(None)
        .unwrap();
    let ran = run(cfg).await.unwrap();
    let dir = &ran.run_dir;

    let cycles = read_csv(&dir.join("cycles.csv"));
    let settings: Vec<&str> = cycles.iter().map(|r| r["setting"].as_str()).collect();
    assert_eq!(settings, ["OLLAMA_NUM_PARALLEL=1", "OLLAMA_NUM_PARALLEL=4"]);
    assert!(cycles.iter().all(|r| r["failed"] == "0"), "{cycles:?}");
    // One slot queues the burst of four; four slots do not: the setting took effect.
    let p99 = |i: usize| -> f64 { cycles[i]["ttft_p99_s"].parse().unwrap() };
    assert!(
        p99(0) > 2.0 * p99(1),
        "1 slot {} vs 4 slots {}",
        p99(0),
        p99(1)
    );
    assert!(
        dir.join("ollama/m/OLLAMA_NUM_PARALLEL-1/test_results_4/request_summary.csv")
            .is_file()
    );

    // Exactly what ran, and how it stopped.
    let run_json = read_run_json(dir);
    let groups = run_json["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let pids: Vec<u64> = groups
        .iter()
        .map(|g| g["server"]["pid"].as_u64().unwrap())
        .collect();
    assert_ne!(pids[0], pids[1], "a fresh process per setting");
    for g in groups {
        let s = &g["server"];
        assert_eq!(s["command"], bin.to_string_lossy().as_ref());
        assert!(
            s["version"].as_str().unwrap().contains("tokengun-sim"),
            "{s}"
        );
        assert!(s["stopped"].as_str().unwrap().contains("SIGTERM"), "{s}");
        assert_eq!(s["env"][0][0], "OLLAMA_NUM_PARALLEL");
    }
    // Stopped: nothing listens on the port any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    let written = report(dir, None, &ReportOptions::default()).unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    assert!(md.contains("## Groups side by side"), "{md}");
    assert!(md.contains("OLLAMA_NUM_PARALLEL=4 serves"), "{md}");
    assert!(
        md.contains("m: OLLAMA_NUM_PARALLEL=4 peaks at")
            && md.contains("with OLLAMA_NUM_PARALLEL=1"),
        "the settings compared:\n{md}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_starts_only_the_commands_it_allows_and_a_dead_start_shows_its_output() {
    let out = tempfile::tempdir().unwrap();
    let port = free_port();
    let bin = workspace_bin("tokengun");
    // A remote agent started without --allow-server-command refuses before any load.
    let agent = AgentProc::spawn();
    let extra = format!("agents = [\"{}\"]", agent.addr);
    let cfg = plan(out.path(), port, &bin.to_string_lossy(), &extra)
        .compile(None)
        .unwrap();
    let e = run(cfg).await.unwrap_err().to_string();
    assert!(
        e.contains("--allow-server-command") && e.contains("OLLAMA_NUM_PARALLEL=1"),
        "{e}"
    );
    assert!(!out.path().join("managed").exists(), "nothing was written");

    // A server that dies at start: its own last output lines are in the error.
    let cfg = plan(out.path(), port, "sh", "");
    let mut cfg = cfg.compile(None).unwrap();
    let server = cfg.matrix.server.as_mut().unwrap();
    for s in &mut server.settings {
        s.args = vec![
            "-c".into(),
            "echo loading weights; echo 'error: model file not found' >&2; exit 7".into(),
        ];
    }
    let e = run(cfg).await.unwrap_err().to_string();
    assert!(
        e.contains("exit status: 7") && e.contains("model file not found"),
        "{e}"
    );
}

/// Two consecutive free loopback ports (`tokengun sim --instances 2` takes a port and the next).
fn free_pair() -> u16 {
    for _ in 0..50 {
        let a = free_port();
        if a < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", a + 1)).is_ok() {
            return a;
        }
    }
    panic!("no two consecutive free ports");
}

#[test]
fn the_shipped_matrix_plan_runs_three_models_two_instance_counts_and_two_settings() {
    // plans/matrix.toml as the README runs it, on free ports and twice as fast.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("plans/matrix.toml")).unwrap();
    let p = free_pair();
    let text = text
        .replace("11500", &p.to_string())
        .replace("11501", &(p + 1).to_string())
        .replace("\"--time-scale\", \"0.1\"", "\"--time-scale\", \"0.05\"");
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("matrix.toml");
    std::fs::write(&plan, text).unwrap();
    let out = std::process::Command::new(workspace_bin("tokengun"))
        .args(["run", "--plan"])
        .arg(&plan)
        .args(["--no-tui", "--run-id", "m", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_dir = dir.path().join("m");
    let cycles = read_csv(&run_dir.join("cycles.csv"));
    assert_eq!(cycles.len(), 3 * 2 * 2 * 4);
    assert!(cycles.iter().all(|r| r["failed"] == "0"), "{cycles:?}");
    let groups: std::collections::BTreeSet<&str> =
        cycles.iter().map(|r| r["group_label"].as_str()).collect();
    assert_eq!(groups.len(), 12);
    assert!(groups.contains("llama3.2:1b · 2 instances · OLLAMA_NUM_PARALLEL=8"));
    assert!(
        run_dir
            .join("ollama/qwen3-8b/2-instances_OLLAMA_NUM_PARALLEL-8/test_results_8/request_summary.csv")
            .is_file()
    );
    // The console names each group over its rows, and the report compares all of them.
    assert!(
        stdout.contains("  ▸ qwen3:4b · 1 instance · OLLAMA_NUM_PARALLEL=2"),
        "{stdout}"
    );
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(
        md.starts_with("# tokengun report: 12 groups (3 models × 2 instance counts × 2 settings)"),
        "{md}"
    );
    assert!(
        md.contains("qwen3:8b (OLLAMA_NUM_PARALLEL=2): 2 instances peaks at"),
        "{md}"
    );
    assert!(
        md.contains("qwen3:8b: OLLAMA_NUM_PARALLEL=8 peaks at"),
        "{md}"
    );
    // Each setting's server was started and stopped.
    let run_json = read_run_json(&run_dir);
    for g in run_json["groups"].as_array().unwrap() {
        assert!(
            g["server"]["stopped"].as_str().unwrap().contains("SIGTERM"),
            "{g}"
        );
    }
}
