//! Test harness for end-to-end scenarios: starts real simulators and agents on 127.0.0.1:0,
//! runs the real controller, and reads back the real files it wrote.
#![forbid(unsafe_code)]

pub mod netns;
mod scenario;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokengun::plan::{Level, RunConfig};
use tokengun::run::{RunError, RunReport};
use tokengun::sinks::console::Console;
use tokengun_common::{Api, Arrival, LoadShape, PromptSpec, RequestOptions, Slo};
use tokio_util::sync::CancellationToken;

pub use scenario::{Ran, Refused, Scenario};
pub use tokengun_simulator::{Faults, SimConfig, SimHandle};

/// A CSV file as rows of column -> value.
pub fn read_csv(path: &Path) -> Vec<HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let headers = r.headers().expect("csv header").clone();
    r.records()
        .map(|row| {
            let row = row.expect("csv row");
            headers
                .iter()
                .zip(row.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Parses a float cell, failing the test with the column's name when it is not one.
pub fn f(row: &HashMap<String, String>, col: &str) -> f64 {
    row.get(col)
        .unwrap_or_else(|| panic!("no column {col} in {row:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("column {col} = {:?} is not a number: {e}", row[col]))
}

/// A request_summary.csv row's time breakdown (QueueTime … ClientTime) summed, seconds: equals
/// its TotalDuration when the server reported its timings.
pub fn breakdown_sum(row: &HashMap<String, String>) -> f64 {
    tokengun_common::run_dir::requests::col::BREAKDOWN
        .iter()
        .map(|c| f(row, c))
        .sum()
}

/// A burst-sweep configuration aimed at `target`, writing under `out`.
pub fn run_config(target: &str, model: &str, levels: &[u32], out: &Path) -> RunConfig {
    RunConfig {
        target: target.to_string(),
        api: Some(Api::OllamaGenerate),
        options: RequestOptions::default(),
        model: model.to_string(),
        prompts: vec![PromptSpec::plain(
            "What is the philosophical definition of time?",
        )],
        workload: Default::default(),
        cycle_workload: Default::default(),
        search: None,
        shape: LoadShape::Burst,
        levels: levels
            .iter()
            .map(|&concurrency| Level {
                concurrency,
                rate_per_s: None,
            })
            .collect(),
        duration: Duration::ZERO,
        arrival: Arrival::Poisson,
        warmup: Duration::ZERO,
        seed: 0,
        agents: Vec::new(),
        out: out.to_path_buf(),
        run_id: Some("test-run".into()),
        request_timeout: Duration::from_secs(30),
        extra_body_json: String::new(),
        slo: Slo::default(),
        stop_on_error_rate: None,
        sim: None,
        monitor: tokengun::plan::MonitorConfig::default(),
        split: tokengun::plan::Split::Total,
        on_agent_loss: tokengun::plan::OnAgentLoss::Continue,
        reconnect_wait: Duration::from_secs(30),
        throughput_csv: true,
        warnings: Vec::new(),
        agent_auth: Default::default(),
        matrix: Default::default(),
    }
}

/// An open-loop configuration: `rates` in requests/s, each for `duration`.
pub fn open_config(
    target: &str,
    model: &str,
    rates: &[f64],
    duration: Duration,
    out: &Path,
) -> RunConfig {
    let mut c = run_config(target, model, &[1], out);
    c.shape = LoadShape::Open;
    c.duration = duration;
    c.levels = rates
        .iter()
        .map(|&r| Level {
            concurrency: 0,
            rate_per_s: Some(r),
        })
        .collect();
    c
}

/// Runs the controller to the end with a quiet console.
pub async fn run(cfg: RunConfig) -> Result<RunReport, RunError> {
    let mut console = Console::new(true);
    tokengun::run::run(cfg, &mut console, CancellationToken::new()).await
}

/// The study's folder of one level (`8`, or `2.5rps` for open loops).
pub fn level_dir(run_dir: &Path, model_dir: &str, level: impl std::fmt::Display) -> PathBuf {
    run_dir
        .join("ollama")
        .join(model_dir)
        .join(format!("test_results_{level}"))
}

/// Path of a sibling binary of this workspace (built by `cargo test --workspace`; built here
/// with cargo if a narrower command left it out).
pub fn workspace_bin(name: &str) -> PathBuf {
    // Integration tests live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .to_path_buf();
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    path
}

/// The checked-in JSON Schema of `run.json`.
pub fn run_schema() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/run.schema.json");
    serde_json::from_slice(&std::fs::read(&path).expect("schemas/run.schema.json"))
        .expect("schema is JSON")
}

/// Reads a run's `run.json` and fails the test unless it matches the checked-in schema.
pub fn read_run_json(run_dir: &Path) -> serde_json::Value {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).expect("run.json"))
            .expect("run.json is JSON");
    let schema = run_schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "run.json breaks schemas/run.schema.json: {errors:#?}"
    );
    doc
}

/// A real `tokengun-agent serve` process on a loopback port with its own record spool, killed
/// (SIGKILL) when dropped.
pub struct AgentProc {
    pub child: std::process::Child,
    /// Where it listens, as it printed it.
    pub addr: String,
    _spool: Option<tempfile::TempDir>,
}

impl AgentProc {
    /// On a free port, with a spool in a fresh temporary folder.
    pub fn spawn() -> Self {
        let spool = tempfile::tempdir().expect("temporary spool folder");
        let mut a = Self::spawn_at("127.0.0.1:0", spool.path());
        a._spool = Some(spool);
        a
    }

    /// On `listen`, keeping its spool in `spool` (a restarted agent given the same folder is the
    /// same agent).
    pub fn spawn_at(listen: &str, spool: &Path) -> Self {
        let mut cmd = std::process::Command::new(workspace_bin("tokengun-agent"));
        cmd.args(["serve", "--listen", listen, "--spool-dir"])
            .arg(spool);
        Self::start(cmd, None)
    }

    /// Started under `ulimit -n NOFILE` (soft and hard), with its own spool.
    pub fn spawn_with_nofile(nofile: u32) -> Self {
        let spool = tempfile::tempdir().expect("temporary spool folder");
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(format!(
            "ulimit -n {nofile} && exec '{}' serve --listen 127.0.0.1:0 --spool-dir '{}'",
            workspace_bin("tokengun-agent").display(),
            spool.path().display()
        ));
        Self::start(cmd, Some(spool))
    }

    fn start(mut cmd: std::process::Command, spool: Option<tempfile::TempDir>) -> Self {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tokengun-agent");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("agent stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("agent's first line");
        let addr = line
            .split("listening on ")
            .nth(1)
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim()
            .to_string();
        Self {
            child,
            addr,
            _spool: spool,
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
