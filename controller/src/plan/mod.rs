//! The run plan: what a run is asked to do ([`RunConfig`]), from a TOML file and flags
//! ([`file`]), its prompts ([`workload`]), and its compilation into each cycle's plan
//! ([`compile`]), all checked before anything is sent.

pub mod compile;
pub mod datasets;
pub mod file;
pub mod matrix;
pub mod search;
pub mod search_keys;
pub mod server;
pub mod synth;
pub mod tokens;
pub mod trace;
pub mod workload;

pub use compile::{
    InvalidPlan, Phase, PhaseKind, cycle_plan, phases, share, share_targets, validate, warmup_plan,
};
pub use file::{PlanFile, PlanFileError};
pub use matrix::{Group, ManagedServer, Matrix, Setting, TargetPolicy};

use std::path::PathBuf;
use std::time::Duration;
use tokengun_common::plan::format_rate;
use tokengun_common::{Api, Arrival, LoadShape, PromptSpec, RequestOptions, Slo};

/// One level of a sweep: a concurrency, or (open loops) a rate with an optional in-flight cap.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Level {
    /// Burst/closed: requests at once. Open: in-flight cap (0 = none).
    pub concurrency: u32,
    /// Open: requests per second.
    pub rate_per_s: Option<f64>,
}

impl Level {
    /// The level as shown and as its folder's suffix: `8`, or `2.5rps` for a rate.
    pub fn label(&self) -> String {
        match self.rate_per_s {
            Some(r) => format!("{}rps", format_rate(r)),
            None => self.concurrency.to_string(),
        }
    }

    /// Nothing to send: a share of a level too small to reach this agent.
    pub fn is_empty(&self) -> bool {
        self.concurrency == 0 && self.rate_per_s.is_none_or(|r| r <= 0.0)
    }
}

/// How the controller proves itself to remote agents, and checks them: `--agent-ca`,
/// `--agent-cert`, `--agent-key`, `--agent-token-file` (or `TOKENGUN_AGENT_TOKEN`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentAuth {
    /// CA (PEM) that signed the agents' certificates; given, agents are dialled with TLS.
    pub ca: Option<PathBuf>,
    /// This controller's client certificate (PEM), for agents that require one.
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of `cert`.
    pub key: Option<PathBuf>,
    /// File holding the bearer token agents require.
    pub token_file: Option<PathBuf>,
}

impl AgentAuth {
    /// Checks the combination (not the files): what is missing is named.
    pub fn check(&self) -> Result<(), String> {
        match (&self.cert, &self.key) {
            (Some(_), None) => {
                return Err("--agent-cert needs --agent-key (its private key)".into());
            }
            (None, Some(_)) => return Err("--agent-key needs --agent-cert".into()),
            _ => {}
        }
        if self.cert.is_some() && self.ca.is_none() {
            return Err(
                "--agent-cert needs --agent-ca: the CA that signed the agents' certificates, to check them"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Everything a run needs, compiled and validated from a plan file and flags.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    /// The first target (every group's targets are in `matrix`).
    pub target: String,
    /// None: ask the agent to find out (Ollama, else OpenAI-style).
    pub api: Option<Api>,
    /// The first model (every model is in `matrix`).
    pub model: String,
    /// Models, instances and server settings swept (absent from runs before them: one each).
    #[serde(default)]
    pub matrix: Matrix,
    pub prompts: Vec<PromptSpec>,
    /// What the prompts are (source, lengths exact or not), for run.json and the report.
    #[serde(default)]
    pub workload: tokengun_common::run_dir::WorkloadInfo,
    /// What each cycle's plan carries for the workload: conversations, a trace's arrivals.
    #[serde(default)]
    pub cycle_workload: tokengun_common::CycleWorkload,
    /// `--search slo`: the levels are found, not listed (None: the levels as given).
    #[serde(default)]
    pub search: Option<crate::plan::search::SearchSpec>,
    pub shape: LoadShape,
    pub levels: Vec<Level>,
    /// Closed/open: how long each level keeps starting requests.
    pub duration: Duration,
    pub arrival: Arrival,
    /// A phase before the first level whose requests are not counted (zero = none).
    pub warmup: Duration,
    pub seed: u64,
    /// Agent addresses; empty = an agent inside this process.
    pub agents: Vec<String>,
    /// Credentials for remote agents (TLS, client certificate, token).
    pub agent_auth: AgentAuth,
    pub out: PathBuf,
    pub run_id: Option<String>,
    pub request_timeout: Duration,
    pub options: RequestOptions,
    pub extra_body_json: String,
    pub slo: Slo,
    /// Stop the sweep after a level whose error rate (0..1) exceeds this.
    pub stop_on_error_rate: Option<f64>,
    /// Serve the built-in simulator and aim at it instead of `target` (not kept in plan.json: a
    /// simulator dies with its controller, so such a run cannot be resumed).
    #[serde(skip)]
    pub sim: Option<tokengun_simulator::SimConfig>,
    /// Process, machine and power sampling.
    pub monitor: MonitorConfig,
    /// Several agents: a level is divided among them, or run by each.
    pub split: Split,
    /// Several agents: what a lost agent does to the sweep.
    pub on_agent_loss: OnAgentLoss,
    /// How long a lost remote agent is waited for before its cycle closes without it.
    pub reconnect_wait: Duration,
    /// Write the study's per-request throughput CSVs (records.pb has the timelines anyway).
    pub throughput_csv: bool,
    /// Settings given that this plan does not use, said once at the start.
    pub warnings: Vec<String>,
}

/// How a level is applied to several agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// A level N is divided among the agents (N/k each, the remainder to the first ones; rates
    /// divided evenly).
    #[default]
    Total,
    /// Every agent runs the whole level.
    PerAgent,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::PerAgent => "per-agent",
        }
    }
}

/// What losing one of several agents does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnAgentLoss {
    /// The sweep goes on with the others; cycles it missed say so.
    #[default]
    Continue,
    /// The sweep stops (results so far kept, run marked partial).
    Stop,
}

/// What the agent samples besides the load, and the idle baseline.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MonitorConfig {
    pub enabled: bool,
    /// Empty: the agent picks the target's server.
    pub watch_process: Vec<String>,
    pub process_interval: Duration,
    pub power_interval: Duration,
    /// Idle power measured before the sweep (zero = none; only with a power source).
    pub baseline: Duration,
    /// Which Prometheus endpoint of the server the agents scrape while they monitor.
    #[serde(default)]
    pub server_metrics: ServerMetrics,
    /// `--power`: the agents' Apple Silicon power source (None: each agent's own `--power`).
    #[serde(default)]
    pub power: Option<tokengun_common::sources::PowerChoice>,
}

/// The server's own metrics endpoint (`server_metrics.csv`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerMetrics {
    /// `<target>/metrics` for OpenAI-compatible servers (llama.cpp with `--metrics`, vLLM,
    /// SGLang, TGI); for Ollama, which has no such endpoint, `<target>/api/ps` (what it has
    /// loaded, and how much of it on the CPU).
    #[default]
    AtTarget,
    /// Another URL.
    Url(String),
    /// Not scraped.
    Off,
}

impl ServerMetrics {
    /// The URL to scrape for a run against `target` speaking `api`, empty when none.
    pub fn url(&self, target: &str, api: tokengun_common::Api) -> String {
        match self {
            ServerMetrics::AtTarget if api.family() == "ollama" => {
                format!("{}/api/ps", target.trim_end_matches('/'))
            }
            ServerMetrics::AtTarget => format!("{}/metrics", target.trim_end_matches('/')),
            ServerMetrics::Url(u) => u.clone(),
            ServerMetrics::Off => String::new(),
        }
    }
}

impl RunConfig {
    /// Every group of the run, in order (a plan from before the matrix is one group).
    pub fn groups(&self) -> Vec<Group> {
        let mut m = self.matrix.clone();
        if m.models.is_empty() {
            m.models = vec![self.model.clone()];
        }
        if m.targets.is_empty() {
            m.targets = vec![self.target.clone()];
        }
        m.groups()
    }
}

impl MonitorConfig {
    pub const DEFAULT_PROCESS_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_POWER_INTERVAL: Duration = Duration::from_millis(200);
    pub const DEFAULT_BASELINE: Duration = Duration::from_secs(5);
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            watch_process: Vec::new(),
            process_interval: Self::DEFAULT_PROCESS_INTERVAL,
            power_interval: Self::DEFAULT_POWER_INTERVAL,
            baseline: Self::DEFAULT_BASELINE,
            server_metrics: ServerMetrics::AtTarget,
            power: None,
        }
    }
}
