//! One end-to-end scenario in a builder: a simulator, the local agents that drive it (none: the
//! controller's in-process agent), one run of the real controller against them, and the files it
//! wrote read back.
//!
//! ```ignore
//! let ran = Scenario::fixed("m:1b", 20, 2, 40, 16).agents(3).levels(&[3, 7]).run().await;
//! assert_eq!(ran.cycles().len(), 2);
//! ran.stop().await;
//! ```

use crate::{read_csv, read_run_json, run, run_config};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokengun::plan::{Level, RunConfig};
use tokengun::run::{RunError, RunReport};
use tokengun_agent::{AgentConfig, LocalAgent};
use tokengun_common::{LoadShape, defaults, path_safe};
use tokengun_simulator::{SimConfig, SimHandle};

/// An edit of the run's configuration, applied once the simulator's address is known.
type Edit = Box<dyn FnOnce(&mut RunConfig) + Send>;

/// What to start and how to run it; [`Scenario::run`] does it.
pub struct Scenario {
    sim: SimConfig,
    model: String,
    levels: Vec<u32>,
    agents: Vec<AgentConfig>,
    edits: Vec<Edit>,
}

impl Scenario {
    /// A simulator configured as `sim`; the run asks for its first model, at level 1.
    pub fn new(sim: SimConfig) -> Self {
        let model = sim
            .models
            .first()
            .cloned()
            .unwrap_or_else(|| defaults::MODEL.to_string());
        Self {
            sim,
            model,
            levels: vec![1],
            agents: Vec::new(),
            edits: Vec::new(),
        }
    }

    /// A [`SimConfig::fixed`] simulator that serves `model` only: FIFO `slots`, the first token
    /// `ttft_ms` after a slot is taken, then one every `token_delay_ms`, `tokens` in all.
    pub fn fixed(model: &str, ttft_ms: u64, token_delay_ms: u64, tokens: u32, slots: u32) -> Self {
        Self::new(SimConfig {
            models: vec![model.to_string()],
            ..SimConfig::fixed(
                Duration::from_millis(ttft_ms),
                Duration::from_millis(token_delay_ms),
                tokens,
                slots,
            )
        })
    }

    /// Changes the simulator's configuration.
    pub fn sim(mut self, edit: impl FnOnce(&mut SimConfig)) -> Self {
        edit(&mut self.sim);
        self
    }

    /// The model the run asks for.
    pub fn model(mut self, model: &str) -> Self {
        self.model = model.to_string();
        self
    }

    /// A burst sweep over these concurrency levels.
    pub fn levels(mut self, levels: &[u32]) -> Self {
        self.levels = levels.to_vec();
        self
    }

    /// `n` local agents with the default configuration, reached over real gRPC.
    pub fn agents(mut self, n: usize) -> Self {
        self.agents
            .extend(std::iter::repeat_with(AgentConfig::default).take(n));
        self
    }

    /// One more local agent, configured as `config`.
    pub fn agent(mut self, config: AgentConfig) -> Self {
        self.agents.push(config);
        self
    }

    /// A closed loop at each level for `duration`.
    pub fn closed(self, duration: Duration) -> Self {
        self.config(move |c| {
            c.shape = LoadShape::Closed;
            c.duration = duration;
        })
    }

    /// An open loop at each of `rates` (requests/s) for `duration`, as [`crate::open_config`].
    pub fn open(self, rates: &[f64], duration: Duration) -> Self {
        let levels: Vec<Level> = rates
            .iter()
            .map(|&r| Level {
                concurrency: 0,
                rate_per_s: Some(r),
            })
            .collect();
        self.config(move |c| {
            c.shape = LoadShape::Open;
            c.duration = duration;
            c.levels = levels;
        })
    }

    /// Any other change to the run's configuration (applied in the order given, after the
    /// others).
    pub fn config(mut self, edit: impl FnOnce(&mut RunConfig) + Send + 'static) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    /// Starts everything and runs the controller to the end; panics if the run fails.
    pub async fn run(self) -> Ran {
        let (result, rig) = self.launch().await;
        match result {
            Ok(report) => Ran { report, rig },
            Err(e) => panic!("the run failed: {e}"),
        }
    }

    /// Starts everything and runs the controller, which must refuse the run.
    pub async fn run_err(self) -> Refused {
        let (result, rig) = self.launch().await;
        match result {
            Ok(report) => panic!("the run went ahead: {}", report.run_dir.display()),
            Err(e) => Refused {
                error: e.to_string(),
                rig,
            },
        }
    }

    async fn launch(self) -> (Result<RunReport, RunError>, Rig) {
        let sim = SimHandle::start("127.0.0.1:0", self.sim)
            .await
            .unwrap_or_else(|e| panic!("cannot start the simulator: {e}"));
        let mut agents = Vec::new();
        for config in self.agents {
            agents.push(
                LocalAgent::start(config)
                    .await
                    .unwrap_or_else(|e| panic!("cannot start an agent: {e}")),
            );
        }
        let out = tempfile::tempdir().expect("temporary output folder");
        let mut cfg = run_config(&sim.url(), &self.model, &self.levels, out.path());
        cfg.agents = agents.iter().map(|a| a.addr().to_string()).collect();
        for edit in self.edits {
            edit(&mut cfg);
        }
        let family = cfg.api.map_or("ollama", |a| a.family());
        let model_dir = PathBuf::from(family).join(path_safe(&cfg.model));
        let result = run(cfg).await;
        let rig = Rig {
            sim,
            agents,
            out,
            model_dir,
        };
        (result, rig)
    }
}

/// What a scenario started: kept until [`Ran::stop`] or [`Refused::stop`].
struct Rig {
    sim: SimHandle,
    agents: Vec<LocalAgent>,
    out: tempfile::TempDir,
    /// `<api family>/<model>` under the run folder.
    model_dir: PathBuf,
}

impl Rig {
    async fn stop(self) {
        for a in self.agents {
            a.stop(Duration::from_secs(1)).await;
        }
        self.sim.stop(Duration::from_secs(1)).await;
    }
}

/// A finished run, with the simulator and agents still up.
pub struct Ran {
    pub report: RunReport,
    rig: Rig,
}

impl Ran {
    /// The run folder.
    pub fn run_dir(&self) -> &Path {
        &self.report.run_dir
    }

    /// The simulator (its ground truth, when recorded).
    pub fn sim(&self) -> &SimHandle {
        &self.rig.sim
    }

    /// The rows of `cycles.csv`.
    pub fn cycles(&self) -> Vec<HashMap<String, String>> {
        read_csv(&self.run_dir().join("cycles.csv"))
    }

    /// `run.json`, checked against its schema.
    pub fn run_json(&self) -> serde_json::Value {
        read_run_json(self.run_dir())
    }

    /// The folder of one level (`8`, or `2.5rps` for open loops).
    pub fn level_dir(&self, level: impl std::fmt::Display) -> PathBuf {
        self.run_dir()
            .join(&self.rig.model_dir)
            .join(format!("test_results_{level}"))
    }

    /// The rows of one level's `request_summary.csv` (one agent's run).
    pub fn requests(&self, level: impl std::fmt::Display) -> Vec<HashMap<String, String>> {
        read_csv(&self.level_dir(level).join("request_summary.csv"))
    }

    /// Stops the agents, then the simulator.
    pub async fn stop(self) {
        self.rig.stop().await;
    }
}

/// A run the controller refused, with the simulator and agents still up.
pub struct Refused {
    /// The controller's error, as it would print it.
    pub error: String,
    rig: Rig,
}

impl Refused {
    /// The folder the run would have been written under.
    pub fn out_dir(&self) -> &Path {
        self.rig.out.path()
    }

    /// Stops the agents, then the simulator.
    pub async fn stop(self) {
        self.rig.stop().await;
    }
}
