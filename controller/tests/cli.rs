//! The `tokengun` binary end to end: bad input fails before any load with one line that names the
//! problem and the fix; a separate agent process drives the sweep; Ctrl-C keeps what was measured.
#![allow(clippy::unwrap_used)]
// Plain threads, no async runtime here: blocking sleeps are fine.
#![allow(clippy::disallowed_methods)]

mod common;
use common::{BIN, agent_bin, assert_one_line_error, free_port, tokengun};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kills the child when the test ends, whatever happens.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(bin: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits (bounded) for a stdout line containing `needle`.
    fn wait_line(&self, needle: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(e) => panic!("no line containing {needle:?} within {limit:?}: {e}"),
            }
        }
    }

    /// Waits (bounded) for exit; returns the code and stderr.
    fn finish(mut self, limit: Duration) -> (Option<i32>, String) {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return (status.code(), err);
            }
            assert!(
                Instant::now() < end,
                "process still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// A `tokengun-agent serve` process on a free loopback port, and that address.
/// A `tokengun-agent serve` process with its own spool folder (kept while the TempDir lives).
fn spawn_agent(extra: &[&str]) -> (Proc, String, tempfile::TempDir) {
    let spool = tempfile::tempdir().unwrap();
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--spool-dir"];
    args.push(spool.path().to_str().unwrap());
    args.extend_from_slice(extra);
    let agent = Proc::spawn(&agent_bin(), &args);
    let line = agent.wait_line("listening on", Duration::from_secs(20));
    let addr = line.rsplit(' ').next().unwrap().to_string();
    (agent, addr, spool)
}

/// A `tokengun sim` process on a free loopback port, and its URL.
fn spawn_sim(extra: &[&str]) -> (Proc, String) {
    let args: Vec<&str> = ["sim", "--listen", "127.0.0.1:0"]
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect();
    let sim = Proc::spawn(Path::new(BIN), &args);
    let line = sim.wait_line("serving", Duration::from_secs(20));
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    (sim, url)
}

#[test]
fn invalid_levels_are_refused() {
    for bad in ["0,2", "1,x", "4,4", "", "-1", "1,,2"] {
        let out = tokengun(&["run", "--levels", bad]);
        assert_one_line_error(&out, 2, &["--levels"]);
    }
}

#[test]
fn unreachable_target_fails_before_any_load() {
    let out_dir = tempfile::tempdir().unwrap();
    let target = format!("http://127.0.0.1:{}", free_port());
    let out = tokengun(&[
        "run",
        "--target",
        &target,
        "--levels",
        "1",
        "--out",
        out_dir.path().to_str().unwrap(),
    ]);
    assert_one_line_error(&out, 1, &["unreachable", &target, "--target"]);
    assert!(
        entries(out_dir.path()).is_empty(),
        "no run folder for a run that never started"
    );
}

#[test]
fn missing_model_lists_what_the_server_has() {
    let (_sim, url) = spawn_sim(&["--model", "qwen3:0.6b"]);
    let url = url.as_str();
    let out_dir = tempfile::tempdir().unwrap();
    let out = tokengun(&[
        "run",
        "--target",
        url,
        "--model",
        "llama9:70b",
        "--levels",
        "1",
        "--out",
        out_dir.path().to_str().unwrap(),
    ]);
    assert_one_line_error(
        &out,
        1,
        &["llama9:70b", "qwen3:0.6b", "ollama pull", "--model"],
    );
    assert!(entries(out_dir.path()).is_empty());
}

#[test]
fn an_agent_that_does_not_answer_is_named() {
    let addr = format!("127.0.0.1:{}", free_port());
    let out_dir = tempfile::tempdir().unwrap();
    let out = tokengun(&[
        "run",
        "--sim",
        "--agent",
        &addr,
        "--out",
        out_dir.path().to_str().unwrap(),
    ]);
    assert_one_line_error(&out, 1, &[&addr, "did not answer", "tokengun-agent serve"]);
}

#[test]
fn an_unwritable_output_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = tokengun(&["run", "--sim", "--out", file.join("sub").to_str().unwrap()]);
    assert_one_line_error(&out, 1, &["cannot write results", "--out"]);
}

#[test]
fn a_separate_agent_process_runs_the_sweep() {
    let (_agent, addr, _spool) = spawn_agent(&[]);
    let out_dir = tempfile::tempdir().unwrap();
    let out = tokengun(&[
        "run",
        "--agent",
        &addr,
        "--sim",
        "--sim-tokens",
        "20",
        "--sim-token-delay",
        "2ms",
        "--levels",
        "1,3",
        "--run-id",
        "separate",
        "--out",
        out_dir.path().to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| REQ ID | TOKENS |"),
        "the study's table: {stdout}"
    );
    let run = out_dir.path().join("separate");
    let cycles = std::fs::read_to_string(run.join("cycles.csv")).unwrap();
    assert_eq!(cycles.lines().count(), 3, "{cycles}");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "complete");
    assert_eq!(m["agents"][0]["address"], addr.as_str());
    assert_eq!(m["agents"][0]["in_process"], false);
    let summary = run.join("ollama/deepseek-r1-7b/test_results_3/request_summary.csv");
    let text = std::fs::read_to_string(summary).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(
        text.lines()
            .skip(1)
            .all(|l| l.contains(",20,200,Completed,")),
        "{text}"
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_cleanly_and_keeps_the_results() {
    let out_dir = tempfile::tempdir().unwrap();
    let run = Proc::spawn(
        Path::new(BIN),
        &[
            "run",
            "--sim",
            "--sim-tokens",
            "100000",
            "--sim-token-delay",
            "1ms",
            "--levels",
            "3,4",
            "--run-id",
            "interrupted",
            "--out",
            out_dir.path().to_str().unwrap(),
        ],
    );
    run.wait_line("cycle 1/2", Duration::from_secs(30));
    // Let tokens flow, then interrupt as a user would.
    std::thread::sleep(Duration::from_millis(700));
    let ok = Command::new("kill")
        .args(["-INT", &run.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let (code, err) = run.finish(Duration::from_secs(30));
    assert_eq!(code, Some(130), "{err}");
    let dir = out_dir.path().join("interrupted");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "interrupted");
    assert!(m["ended_at"].is_string());
    let cycles = std::fs::read_to_string(dir.join("cycles.csv")).unwrap();
    let rows: Vec<&str> = cycles.lines().collect();
    assert_eq!(rows.len(), 2, "one (partial) cycle: {cycles}");
    let partial = rows[0].split(',').position(|h| h == "partial").unwrap();
    assert_eq!(
        rows[1].split(',').nth(partial),
        Some("true"),
        "marked partial: {cycles}"
    );
    let summary = std::fs::read_to_string(
        dir.join("ollama/deepseek-r1-7b/test_results_3/request_summary.csv"),
    )
    .unwrap();
    let reqs: Vec<&str> = summary.lines().skip(1).collect();
    assert_eq!(reqs.len(), 3, "every in-flight request recorded: {summary}");
    for r in reqs {
        let cols: Vec<&str> = r.split(',').collect();
        assert_eq!(cols[7], "Aborted", "{r}");
        assert!(
            cols[5].parse::<u64>().unwrap() > 10,
            "tokens received before the stop are kept: {r}"
        );
    }
    assert!(!dir.join("ollama/deepseek-r1-7b/test_results_4").exists());
}

#[cfg(unix)]
#[test]
fn an_agent_stopped_mid_cycle_records_its_requests_and_exits() {
    // Ctrl-C drains for --drain-timeout, then aborts what still runs (100 s requests here).
    let (agent, addr, _spool) = spawn_agent(&["--drain-timeout", "1s"]);
    let out_dir = tempfile::tempdir().unwrap();
    let run = Proc::spawn(
        Path::new(BIN),
        &[
            "run",
            "--agent",
            &addr,
            "--sim",
            "--sim-tokens",
            "100000",
            "--sim-token-delay",
            "1ms",
            "--levels",
            "2,4",
            "--run-id",
            "agent-stopped",
            "--out",
            out_dir.path().to_str().unwrap(),
        ],
    );
    run.wait_line("cycle 1/2", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let ok = Command::new("kill")
        .args(["-INT", &agent.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let (agent_code, agent_err) = agent.finish(Duration::from_secs(15));
    assert_eq!(
        agent_code,
        Some(0),
        "the agent exits on Ctrl-C even with a cycle running: {agent_err}"
    );
    let (code, err) = run.finish(Duration::from_secs(30));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("stopped early") && err.contains("partial"),
        "{err}"
    );
    let dir = out_dir.path().join("agent-stopped");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "partial");
    let summary = std::fs::read_to_string(
        dir.join("ollama/deepseek-r1-7b/test_results_2/request_summary.csv"),
    )
    .unwrap();
    let reqs: Vec<&str> = summary.lines().skip(1).collect();
    assert_eq!(
        reqs.len(),
        2,
        "the aborted requests reached the controller: {summary}"
    );
    assert!(reqs.iter().all(|r| r.contains(",Aborted,")), "{summary}");
}

#[test]
fn a_plan_file_with_warmup_runs_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        "shape = \"closed\"\nlevels = [2, 3]\nduration = \"400ms\"\nwarmup = \"300ms\"\nprompts = \"builtin\"\nmax_tokens = 5\nseed = 3\n",
    )
    .unwrap();
    let out = tokengun(&[
        "run",
        "--plan",
        plan.to_str().unwrap(),
        "--levels",
        "2",
        "--sim",
        "--sim-tokens",
        "20",
        "--sim-token-delay",
        "2ms",
        "--sim-ttft",
        "5ms",
        "--run-id",
        "planned",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = dir.path().join("planned");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(m["shape"], "closed");
    assert_eq!(
        m["levels"],
        serde_json::json!(["2"]),
        "--levels overrides the file"
    );
    assert_eq!(m["warmup"]["level"], "warmup");
    assert!(m["warmup"]["requests"].as_u64().unwrap() > 0);
    assert!(m["prompt_count"].as_u64().unwrap() >= 20, "the builtin set");
    let rows = std::fs::read_to_string(
        run.join("ollama/deepseek-r1-7b/test_results_2/request_summary.csv"),
    )
    .unwrap();
    let mut prompts = std::collections::BTreeSet::new();
    for line in rows.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols[5], "5", "max_tokens reaches the server: {line}");
        prompts.insert(cols[14].to_string());
    }
    assert!(
        prompts.len() > 3,
        "prompts vary across requests: {prompts:?}"
    );
}

#[test]
fn a_bad_plan_file_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        "shape = \"open\"\nlevels = [2]\nduration = \"soon\"\n",
    )
    .unwrap();
    let out = tokengun(&["run", "--plan", plan.to_str().unwrap()]);
    assert_one_line_error(&out, 2, &["--duration", "soon"]);
    std::fs::write(&plan, "levles = [2]\n").unwrap();
    let out = tokengun(&["run", "--plan", plan.to_str().unwrap()]);
    assert_one_line_error(&out, 2, &["levles"]);
}

#[test]
fn stop_on_error_rate_ends_the_sweep() {
    let (_sim, url) = spawn_sim(&[
        "--fail-every",
        "2",
        "--tokens",
        "5",
        "--token-delay",
        "1ms",
        "--ttft",
        "1ms",
    ]);
    let url = url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let out = tokengun(&[
        "run",
        "--target",
        url,
        "--levels",
        "4,8,16",
        "--stop-on-error-rate",
        "30",
        "--run-id",
        "stopped",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sweep stopped"));
    let run = dir.path().join("stopped");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(m["cycles"].as_array().unwrap().len(), 1);
    assert!(
        m["stop_reason"].as_str().unwrap().contains("50.0%"),
        "{}",
        m["stop_reason"]
    );
    assert!(!run.join("ollama/deepseek-r1-7b/test_results_8").exists());
}

#[test]
fn a_run_ends_with_its_report_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let common = [
        "run",
        "--sim",
        "--sim-slots",
        "2",
        "--sim-tokens",
        "20",
        "--sim-ttft",
        "20ms",
        "--levels",
        "1,2,4",
        "--quiet",
        "--out",
        out_dir,
    ];
    let out = tokengun(&[&common[..], &["--run-id", "with"]].concat());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = dir.path().join("with");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("report: "), "{stdout}");
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(
        html.contains("Saturation knee: concurrency 2"),
        "two slots saturate at 2"
    );
    for chart in ["throughput", "per_request", "ttft", "errors", "timeline"] {
        assert!(run.join(format!("charts/{chart}.png")).is_file(), "{chart}");
    }
    assert!(run.join("report.md").is_file());

    let out = tokengun(&[&common[..], &["--run-id", "without", "--no-report"]].concat());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = dir.path().join("without");
    assert!(run.join("cycles.csv").is_file());
    assert!(!run.join("report.html").exists() && !run.join("charts").exists());

    // Written later from the files alone, into another folder.
    let elsewhere = dir.path().join("elsewhere");
    let out = tokengun(&[
        "report",
        run.to_str().unwrap(),
        "--out",
        elsewhere.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(elsewhere.join("report.html").is_file() && elsewhere.join("charts/ttft.png").is_file());
}

#[test]
fn report_refusals_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokengun(&["report", dir.path().join("nope").to_str().unwrap()]);
    assert_one_line_error(&out, 1, &["not a tokengun run folder", "no such folder"]);
    std::fs::write(dir.path().join("cycles.csv"), "level,requests\n").unwrap();
    let out = tokengun(&["report", dir.path().to_str().unwrap()]);
    assert_one_line_error(&out, 1, &["no finished level"]);
    std::fs::write(dir.path().join("cycles.csv"), "a,b\n1,2\n").unwrap();
    let out = tokengun(&["report", dir.path().to_str().unwrap()]);
    assert_one_line_error(&out, 1, &["cycles.csv", "column \"level\" is missing"]);
    let out = tokengun(&[
        "report",
        dir.path().to_str().unwrap(),
        "--knee-slope",
        "140",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = tokengun(&["compare", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "compare needs two runs");
}
