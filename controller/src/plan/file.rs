//! The run plan as a TOML file and as flags: both fill a [`PlanFile`], flags over file, and one
//! `compile` turns it into a validated [`RunConfig`] before anything is sent.

use super::AgentAuth;
use super::workload;
use super::{Level, MonitorConfig, OnAgentLoss, RunConfig, ServerMetrics, Split};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokengun_common::plan::{MAX_LEVEL, check_extra_body};
use tokengun_common::{Api, Arrival, LoadShape, PromptSpec, RequestOptions, Slo, defaults};
use tokengun_simulator::SimConfig;

/// The most prompt bytes a plan may carry (it travels to agents in one message).
pub const MAX_WORKLOAD_BYTES: usize = 32 * 1024 * 1024;

/// Every setting of a run; `None` means "not given here" (flags over file, file over defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub target: Option<String>,
    /// `auto` (default: Ollama if it answers /api/version, else OpenAI chat), `ollama-generate`,
    /// `ollama-chat`, `openai-completions`, `openai-chat`.
    pub api: Option<String>,
    pub model: Option<String>,
    /// One prompt for every request.
    pub prompt: Option<String>,
    /// `builtin`, `synthetic:WORDS`, or a path (plain lines or JSONL); overrides `prompt`.
    pub prompts: Option<String>,
    pub shape: Option<LoadShape>,
    /// Concurrency levels (burst, closed) or rates in requests/s (open).
    pub levels: Option<Vec<f64>>,
    /// Closed and open: how long each level keeps starting requests (e.g. "60s").
    pub duration: Option<String>,
    pub arrival: Option<Arrival>,
    /// Open: most requests in flight (0 = no cap but the agent's own).
    pub max_in_flight: Option<u32>,
    /// A closed/open phase before the first level whose requests are not counted (e.g. "10s").
    pub warmup: Option<String>,
    pub seed: Option<u64>,
    /// Per-request timeout (e.g. "10m").
    pub timeout: Option<String>,
    /// Stop the sweep after a level whose error rate exceeds this many percent.
    pub stop_on_error_rate: Option<f64>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    /// Sampling seed sent to the server (`options.seed`), not tokengun's schedule seed.
    pub sampling_seed: Option<i64>,
    pub stop: Option<Vec<String>>,
    pub keep_alive: Option<String>,
    /// A JSON object merged into every request body.
    pub extra_json: Option<String>,
    pub slo_tokens_per_s: Option<f64>,
    pub slo_ttft: Option<String>,
    pub slo_e2e: Option<String>,
    pub agents: Option<Vec<String>>,
    /// CA (PEM) that signed the agents' certificates: agents are dialled with TLS.
    pub agent_ca: Option<PathBuf>,
    /// This controller's client certificate (PEM), for agents that require one.
    pub agent_cert: Option<PathBuf>,
    /// The private key (PEM) of `agent_cert`.
    pub agent_key: Option<PathBuf>,
    /// File holding the bearer token agents require.
    pub agent_token_file: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub run_id: Option<String>,
    /// Sample the server's processes, the machine and power sources (default true).
    pub monitor: Option<bool>,
    /// Process names or patterns to watch (as pgrep matches them), or `pid:N`.
    pub watch_process: Option<Vec<String>>,
    /// Between process samples (e.g. "1s").
    pub monitor_interval: Option<String>,
    /// Between power samples (e.g. "200ms").
    pub power_interval: Option<String>,
    /// The agents' Apple Silicon power source: auto, ioreport, powermetrics or none (default:
    /// each agent's own `--power`).
    pub power: Option<String>,
    /// Idle power measured before the sweep for this long (e.g. "5s"; "0s" = none).
    pub baseline: Option<String>,
    /// The server's Prometheus endpoint to scrape: a URL, or "off" (default: `<target>/metrics`).
    pub server_metrics: Option<String>,
    /// Several agents: `total` (a level divided among them) or `per-agent`.
    pub split: Option<String>,
    /// Several agents: `continue` or `stop` when one is lost.
    pub on_agent_loss: Option<String>,
    /// How long a lost agent is waited for (e.g. "30s").
    pub reconnect_wait: Option<String>,
    /// The study's per-request throughput CSVs (default true; records.pb has the timelines).
    pub throughput_csv: Option<bool>,
    /// `[workload]`: token lengths, output lengths, shared prefixes (see `plan::synth`).
    pub workload: Option<super::synth::WorkloadPlan>,
    /// `[search]`: the highest level meeting the SLO (see `plan::search_keys`).
    pub search: Option<super::search_keys::SearchPlan>,
    /// Several models, swept one after another (`model` may also be `a,b,c`).
    pub models: Option<Vec<String>>,
    /// Several server instances the load is spread over (`target` may also be `URL1,URL2`).
    pub targets: Option<Vec<String>>,
    /// `round-robin` (default), `least-in-flight`, or `pinned` (each agent to its own target).
    pub target_policy: Option<String>,
    /// Instance counts to sweep: the first N targets (e.g. [1, 2]).
    pub instances: Option<Vec<u32>>,
    /// Ollama: unload each model (`keep_alive: 0`) before the next one loads (default false).
    pub unload_between_models: Option<bool>,
    /// A server the plan starts, checks and stops per setting (lists in `env`/`args` sweep).
    pub server: Option<super::server::ServerTable>,
}

/// A plan file or flag combination that does not make a run; always names the field.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot read plan file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plan file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("--{flag} (plan key `{field}`): {message}", flag = field.replace('_', "-"))]
    Field {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Workload(#[from] workload::WorkloadError),
    #[error(transparent)]
    Synth(#[from] super::synth::SynthError),
}

pub(super) fn field(field: &'static str, message: impl Into<String>) -> PlanFileError {
    PlanFileError::Field {
        field,
        message: message.into(),
    }
}

fn duration(
    name: &'static str,
    v: &Option<String>,
    default: Duration,
) -> Result<Duration, PlanFileError> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            field(
                name,
                format!("{s:?} is not a duration ({e}); use e.g. 150ms, 60s, 10m"),
            )
        }),
    }
}

/// An open loop's level: a rate in requests/s, with the in-flight cap (0 = none).
fn rate_level(v: f64, max_in_flight: u32) -> Result<Level, PlanFileError> {
    if !(v.is_finite() && v > 0.0 && v <= tokengun_common::plan::MAX_RATE_PER_S) {
        return Err(field(
            "levels",
            format!("rate {v} is not a positive number of requests/s"),
        ));
    }
    Ok(Level {
        concurrency: max_in_flight,
        rate_per_s: Some(v),
    })
}

/// A burst or closed loop's level: a whole number of requests at once.
fn concurrency_level(v: f64) -> Result<Level, PlanFileError> {
    if !(v.fract() == 0.0 && v >= 1.0 && v <= f64::from(MAX_LEVEL)) {
        return Err(field(
            "levels",
            format!("{v} is not a concurrency: use whole numbers from 1 to {MAX_LEVEL}"),
        ));
    }
    Ok(Level {
        concurrency: v as u32,
        rate_per_s: None,
    })
}

impl PlanFile {
    /// Reads a TOML plan; unknown keys and wrong types are refused with their name and line.
    pub fn load(path: &Path) -> Result<Self, PlanFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut plan: PlanFile = toml::from_str(&text).map_err(|e| PlanFileError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        // A prompts file named in a plan is found beside the plan, wherever tokengun runs from.
        if let (Some(p), Some(dir)) = (&plan.prompts, path.parent()) {
            let is_file =
                p != "builtin" && !p.starts_with("synthetic:") && Path::new(p).is_relative();
            if is_file {
                plan.prompts = Some(dir.join(p).to_string_lossy().into_owned());
            }
        }
        // So are certificate and token files, and a tokenizer.
        if let (Some(w), Some(dir)) = (plan.workload.as_mut(), path.parent()) {
            w.resolve_beside(dir);
        }
        if let Some(dir) = path.parent() {
            for f in [
                &mut plan.agent_ca,
                &mut plan.agent_cert,
                &mut plan.agent_key,
                &mut plan.agent_token_file,
            ] {
                if let Some(p) = f.as_mut().filter(|p| p.is_relative()) {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(plan)
    }

    /// This plan with every setting `over` gives replacing its own.
    pub fn overlay(mut self, over: PlanFile) -> PlanFile {
        // One prompt given over a file's workload replaces the workload.
        if over.prompt.is_some() {
            self.prompts = None;
        }
        let workload = super::synth::WorkloadPlan::overlay(self.workload.take(), over.workload);
        let search = super::search_keys::SearchPlan::overlay(self.search.take(), over.search);
        // A model or target given as a flag replaces the file's lists.
        if over.model.is_some() {
            self.models = None;
        }
        if over.target.is_some() {
            self.targets = None;
        }
        macro_rules! pick {
            ($($f:ident),*) => { PlanFile { workload, search, $($f: over.$f.or(self.$f)),* } };
        }
        pick!(
            target,
            api,
            model,
            prompt,
            prompts,
            shape,
            levels,
            duration,
            arrival,
            max_in_flight,
            warmup,
            seed,
            timeout,
            stop_on_error_rate,
            max_tokens,
            temperature,
            sampling_seed,
            stop,
            keep_alive,
            extra_json,
            slo_tokens_per_s,
            slo_ttft,
            slo_e2e,
            agents,
            agent_ca,
            agent_cert,
            agent_key,
            agent_token_file,
            out,
            run_id,
            monitor,
            watch_process,
            monitor_interval,
            power_interval,
            power,
            baseline,
            server_metrics,
            split,
            on_agent_loss,
            reconnect_wait,
            throughput_csv,
            models,
            targets,
            target_policy,
            instances,
            unload_between_models,
            server
        )
    }

    /// Applies defaults and checks every field; `sim` aims the run at the built-in simulator.
    pub fn compile(&self, sim: Option<SimConfig>) -> Result<RunConfig, PlanFileError> {
        let shape = self.shape.unwrap_or(LoadShape::Burst);
        let seed = self.seed.unwrap_or(0);
        let levels = self.levels(shape, sim.is_some())?;
        let duration_v = duration("duration", &self.duration, Duration::from_secs(60))?;
        if shape.has_duration() && duration_v.is_zero() {
            return Err(field(
                "duration",
                "must be above zero for closed and open loops",
            ));
        }
        let warmup = duration("warmup", &self.warmup, Duration::ZERO)?;
        let request_timeout = duration("timeout", &self.timeout, Duration::from_secs(600))?;
        let monitor = self.monitor_config()?;
        if request_timeout.is_zero() {
            return Err(field("timeout", "must be above zero"));
        }
        if let Some(r) = self.stop_on_error_rate {
            if !(0.0..=100.0).contains(&r) {
                return Err(field("stop_on_error_rate", "a percentage from 0 to 100"));
            }
        }
        let (prompts, workload, cycle_workload) = self.prompts(seed)?;
        let (options, extra_body_json) = self.request_options()?;
        let api = self.api()?;
        let slo = self.slo()?;
        let matrix = self.matrix(sim.is_some())?;
        let target = matrix.targets[0].clone();
        let model = matrix.models[0].clone();
        let agent_auth = self.agent_auth()?;
        let cfg = RunConfig {
            matrix,
            warnings: self.warnings(shape),
            target,
            api,
            options,
            model,
            prompts,
            workload,
            cycle_workload,
            search: super::search_keys::compile(self.search.as_ref(), shape)?,
            shape,
            levels,
            duration: duration_v,
            arrival: self.arrival.unwrap_or_default(),
            warmup,
            seed,
            agents: self.agents.clone().unwrap_or_default(),
            agent_auth,
            out: self.out.clone().unwrap_or_else(|| PathBuf::from("results")),
            run_id: self.run_id.clone(),
            request_timeout,
            extra_body_json,
            slo,
            stop_on_error_rate: self.stop_on_error_rate.map(|p| p / 100.0),
            monitor,
            split: self.split()?,
            on_agent_loss: self.on_agent_loss()?,
            reconnect_wait: duration(
                "reconnect_wait",
                &self.reconnect_wait,
                Duration::from_secs(30),
            )?,
            throughput_csv: self.throughput_csv.unwrap_or(true),
            sim: sim.map(|mut s| {
                for model in self.model_names() {
                    if !s.models.contains(&model) {
                        s.models.push(model);
                    }
                }
                s
            }),
        };
        if cfg.search.is_some() && cfg.groups().len() > 1 {
            return Err(field(
                "search",
                "an SLO search runs one group: give one model, one instance count and one server setting (run one search per group)",
            ));
        }
        Ok(super::trace::replay_level(
            cfg,
            self.shape.is_some() || self.levels.is_some(),
        )?)
    }

    /// The model asked for, or the study's.
    fn model_name(&self) -> String {
        self.model
            .clone()
            .unwrap_or_else(|| defaults::MODEL.to_string())
    }

    /// The levels: concurrencies, or rates (requests/s) with the in-flight cap for open loops;
    /// the study's (or the simulator's shorter list) when none are given.
    fn levels(&self, shape: LoadShape, sim: bool) -> Result<Vec<Level>, PlanFileError> {
        let levels = match &self.levels {
            Some(l) => l.clone(),
            None if shape.is_rate() => {
                return Err(field(
                    "levels",
                    "an open loop needs rates: --levels 1,2,4 (requests/s) or --rate 2",
                ));
            }
            None if sim => defaults::SIM_LEVELS.iter().map(|&l| f64::from(l)).collect(),
            None => defaults::LEVELS.iter().map(|&l| f64::from(l)).collect(),
        };
        if levels.is_empty() {
            return Err(field("levels", "no levels given"));
        }
        let max_in_flight = self.max_in_flight.unwrap_or(0);
        if max_in_flight > MAX_LEVEL {
            return Err(field("max_in_flight", format!("at most {MAX_LEVEL}")));
        }
        let mut compiled = Vec::with_capacity(levels.len());
        for &v in &levels {
            let level = if shape.is_rate() {
                rate_level(v, max_in_flight)?
            } else {
                concurrency_level(v)?
            };
            if compiled.iter().any(|l: &Level| l.label() == level.label()) {
                return Err(field(
                    "levels",
                    format!(
                        "{} is listed twice; each level gets its own folder",
                        level.label()
                    ),
                ));
            }
            compiled.push(level);
        }
        Ok(compiled)
    }

    /// Process, machine and power sampling.
    fn monitor_config(&self) -> Result<MonitorConfig, PlanFileError> {
        let monitor = MonitorConfig {
            enabled: self.monitor.unwrap_or(true),
            watch_process: self.watch_process.clone().unwrap_or_default(),
            process_interval: duration(
                "monitor_interval",
                &self.monitor_interval,
                MonitorConfig::DEFAULT_PROCESS_INTERVAL,
            )?,
            power_interval: duration(
                "power_interval",
                &self.power_interval,
                MonitorConfig::DEFAULT_POWER_INTERVAL,
            )?,
            baseline: duration("baseline", &self.baseline, MonitorConfig::DEFAULT_BASELINE)?,
            power: tokengun_common::sources::PowerChoice::parse(
                self.power.as_deref().unwrap_or(""),
            )
            .map_err(|_| field("power", "auto, ioreport, powermetrics or none"))?,
            server_metrics: match self.server_metrics.as_deref().map(str::trim) {
                None | Some("") => ServerMetrics::AtTarget,
                Some("off") => ServerMetrics::Off,
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                    ServerMetrics::Url(u.to_string())
                }
                Some(_) => {
                    return Err(field(
                        "server_metrics",
                        "a URL (http://host:port/metrics) or \"off\"",
                    ));
                }
            },
        };
        for (name, d) in [
            ("monitor_interval", monitor.process_interval),
            ("power_interval", monitor.power_interval),
        ] {
            if d < Duration::from_millis(50) || d > Duration::from_secs(3600) {
                return Err(field(name, "between 50ms and 1h"));
            }
        }
        if monitor.baseline > Duration::from_secs(600) {
            return Err(field("baseline", "at most 10m"));
        }
        if let Some(w) = monitor.watch_process.iter().find(|w| w.trim().is_empty()) {
            return Err(field(
                "watch_process",
                format!("{w:?} is empty: give a process name, e.g. ollama"),
            ));
        }
        Ok(monitor)
    }

    /// The workload: the prompts source, or the one prompt (the study's by default).
    fn prompts(
        &self,
        seed: u64,
    ) -> Result<
        (
            Vec<PromptSpec>,
            tokengun_common::run_dir::WorkloadInfo,
            tokengun_common::CycleWorkload,
        ),
        PlanFileError,
    > {
        let base = super::synth::Base {
            prompts: self.prompts.as_deref(),
            prompt: self.prompt.as_deref(),
            default_prompt: defaults::PROMPT,
        };
        let (prompts, info, cycle) = super::synth::compile(&base, self.workload.as_ref(), seed)?;
        let workload_bytes: usize = prompts.iter().map(PromptSpec::size_bytes).sum();
        if workload_bytes > MAX_WORKLOAD_BYTES {
            return Err(field(
                if self.prompts.is_some() {
                    "prompts"
                } else {
                    "prompt"
                },
                format!(
                    "the workload is {workload_bytes} bytes; at most {MAX_WORKLOAD_BYTES} go to an agent"
                ),
            ));
        }
        Ok((prompts, info, cycle))
    }

    /// The API named, or None for `auto` (the agent finds out).
    fn api(&self) -> Result<Option<Api>, PlanFileError> {
        match self.api.as_deref() {
            None | Some("auto") => Ok(None),
            Some(name) => Api::parse(name).map(Some).ok_or_else(|| {
                field("api", format!("{name:?} is not one of auto, ollama-generate, ollama-chat, openai-completions, openai-chat"))
            }),
        }
    }

    /// What a request must meet to count as good.
    fn slo(&self) -> Result<Slo, PlanFileError> {
        let secs = |name: &'static str, v: &Option<String>| {
            v.as_ref()
                .map(|_| duration(name, v, Duration::ZERO).map(|d| d.as_secs_f64()))
                .transpose()
        };
        let slo = Slo {
            tokens_per_s: self.slo_tokens_per_s.unwrap_or(defaults::SLO_TOKENS_PER_S),
            ttft_s: secs("slo_ttft", &self.slo_ttft)?,
            e2e_s: secs("slo_e2e", &self.slo_e2e)?,
        };
        if !(slo.tokens_per_s.is_finite() && slo.tokens_per_s >= 0.0) {
            return Err(field("slo_tokens_per_s", "a number of tokens/s, 0 or more"));
        }
        Ok(slo)
    }

    /// The models: `models`, else `model` split at commas, else the study's.
    pub(super) fn model_names(&self) -> Vec<String> {
        match &self.models {
            Some(m) => m.iter().map(|s| s.trim().to_string()).collect(),
            None => self
                .model_name()
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
        }
    }

    /// The server's base URLs (`targets`, else `target` split at commas), each checked unless
    /// the simulator stands in for them.
    pub(super) fn target_urls(&self, sim: bool) -> Result<Vec<String>, PlanFileError> {
        let given: Vec<String> = match &self.targets {
            Some(t) => t.clone(),
            None => self
                .target
                .clone()
                .unwrap_or_else(|| defaults::TARGET.to_string())
                .split(',')
                .map(str::to_string)
                .collect(),
        };
        let mut out: Vec<String> = Vec::new();
        for t in given {
            // `http://host:8000/v1` is how OpenAI SDKs are configured; tokengun adds the paths.
            let t = t
                .trim()
                .trim_end_matches('/')
                .trim_end_matches("/v1")
                .to_string();
            if !sim {
                tokengun_common::plan::parse_target(&t)
                    .map_err(|e| field("target", e.to_string()))?;
            }
            if out.contains(&t) {
                return Err(field("target", format!("{t} is listed twice")));
            }
            out.push(t);
        }
        if out.is_empty() {
            return Err(field("target", "no target given"));
        }
        Ok(out)
    }

    /// The credentials for remote agents, with their files checked.
    fn agent_auth(&self) -> Result<AgentAuth, PlanFileError> {
        let agent_auth = AgentAuth {
            ca: self.agent_ca.clone(),
            cert: self.agent_cert.clone(),
            key: self.agent_key.clone(),
            token_file: self.agent_token_file.clone(),
        };
        agent_auth.check().map_err(|m| {
            let name = if m.starts_with("--agent-key") {
                "agent_key"
            } else {
                "agent_cert"
            };
            field(name, m)
        })?;
        Ok(agent_auth)
    }

    /// Settings given that this shape does not use, said once at the start.
    fn warnings(&self, shape: LoadShape) -> Vec<String> {
        let mut warnings = Vec::new();
        let ignored = |what: &str| {
            format!(
                "{what} does not apply to a {} loop and is ignored",
                shape.as_str()
            )
        };
        if !shape.is_rate() {
            if self.max_in_flight.is_some() {
                warnings.push(ignored("--max-in-flight"));
            }
            if self.arrival.is_some() {
                warnings.push(ignored("--arrival"));
            }
        }
        if !shape.has_duration() && self.duration.is_some() {
            warnings.push(ignored("--duration"));
        }
        warnings
    }

    fn split(&self) -> Result<Split, PlanFileError> {
        match self.split.as_deref() {
            None | Some("total") => Ok(Split::Total),
            Some("per-agent") => Ok(Split::PerAgent),
            Some(other) => Err(field(
                "split",
                format!("{other:?}: use total (divide each level among the agents) or per-agent"),
            )),
        }
    }

    fn on_agent_loss(&self) -> Result<OnAgentLoss, PlanFileError> {
        match self.on_agent_loss.as_deref() {
            None | Some("continue") => Ok(OnAgentLoss::Continue),
            Some("stop") => Ok(OnAgentLoss::Stop),
            Some(other) => Err(field(
                "on_agent_loss",
                format!("{other:?}: use continue or stop"),
            )),
        }
    }

    /// The request options (each backend maps them to its API's names) and the extra JSON.
    fn request_options(&self) -> Result<(RequestOptions, String), PlanFileError> {
        if self.max_tokens == Some(0) {
            return Err(field("max_tokens", "at least 1"));
        }
        if let Some(t) = self.temperature {
            if !(t.is_finite() && t >= 0.0) {
                return Err(field("temperature", "a number, 0 or more"));
            }
        }
        let options = RequestOptions {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            seed: self.sampling_seed,
            stop: self.stop.clone().unwrap_or_default(),
            keep_alive: self.keep_alive.clone(),
        };
        let json = match &self.extra_json {
            Some(s) => match serde_json::from_str::<serde_json::Value>(s) {
                Ok(v @ serde_json::Value::Object(_)) => v.to_string(),
                Ok(_) => return Err(field("extra_json", "not a JSON object")),
                Err(e) => return Err(field("extra_json", e.to_string())),
            },
            None => String::new(),
        };
        check_extra_body(&json).map_err(|m| field("extra_json", m))?;
        Ok((options, json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_plans_compile() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plans");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let plan = PlanFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
            plan.compile(None)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert!(n >= 3, "study, soak and open-sweep plans ship");
    }

    #[test]
    fn round_trip_through_toml() {
        let p = PlanFile {
            model: Some("qwen3:0.6b".into()),
            shape: Some(LoadShape::Open),
            levels: Some(vec![0.5, 2.0]),
            duration: Some("30s".into()),
            arrival: Some(Arrival::Constant),
            seed: Some(7),
            stop: Some(vec!["\n\n".into()]),
            ..PlanFile::default()
        };
        let text = toml::to_string(&p).unwrap();
        let back: PlanFile = toml::from_str(&text).unwrap();
        assert_eq!(back, p);
        let c = back.compile(None).unwrap();
        assert_eq!(c.levels[0].label(), "0.5rps");
        assert_eq!(c.duration, Duration::from_secs(30));
    }

    #[test]
    fn a_plans_prompts_file_is_found_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.txt"), "one\ntwo\n").unwrap();
        let plan = dir.path().join("plan.toml");
        std::fs::write(
            &plan,
            "prompts = \"p.txt\"\nshape = \"burst\"\nduration = \"5s\"\n",
        )
        .unwrap();
        let c = PlanFile::load(&plan).unwrap().compile(None).unwrap();
        assert_eq!(c.prompts.len(), 2);
        assert_eq!(
            c.warnings,
            vec!["--duration does not apply to a burst loop and is ignored".to_string()]
        );
    }

    #[test]
    fn agent_credentials_are_found_beside_the_plan_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("plan.toml");
        std::fs::write(
            &plan,
            "agents = [\"gpu1.lab:7411\"]\nagent_ca = \"lab/ca.pem\"\nagent_cert = \"lab/ws.pem\"\nagent_key = \"/abs/ws-key.pem\"\n",
        )
        .unwrap();
        let c = PlanFile::load(&plan).unwrap().compile(None).unwrap();
        assert_eq!(c.agent_auth.ca, Some(dir.path().join("lab/ca.pem")));
        assert_eq!(c.agent_auth.cert, Some(dir.path().join("lab/ws.pem")));
        assert_eq!(c.agent_auth.key, Some(PathBuf::from("/abs/ws-key.pem")));
        let e = PlanFile {
            agent_cert: Some("ws.pem".into()),
            ..PlanFile::default()
        }
        .compile(None)
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("--agent-cert ") && e.contains("--agent-key"),
            "{e}"
        );
    }

    #[test]
    fn flags_override_the_file() {
        let file = PlanFile {
            model: Some("a".into()),
            seed: Some(1),
            ..PlanFile::default()
        };
        let flags = PlanFile {
            model: Some("b".into()),
            ..PlanFile::default()
        };
        let merged = file.overlay(flags);
        assert_eq!(merged.model.as_deref(), Some("b"));
        assert_eq!(merged.seed, Some(1));
        // One prompt on the command line replaces a file's workload.
        let file = PlanFile {
            prompts: Some("builtin".into()),
            ..PlanFile::default()
        };
        let merged = file.overlay(PlanFile {
            prompt: Some("x".into()),
            ..PlanFile::default()
        });
        assert_eq!(merged.prompts, None);
        assert_eq!(merged.compile(None).unwrap().prompts.len(), 1);
    }

    #[test]
    fn server_metrics_default_to_the_target_and_to_api_ps_for_ollama() {
        let monitor = |v: Option<&str>| {
            PlanFile {
                server_metrics: v.map(str::to_string),
                ..Default::default()
            }
            .compile(None)
            .map(|c| c.monitor.server_metrics)
        };
        let at = monitor(None).unwrap();
        assert_eq!(
            at.url("http://h:8080/", Api::OpenaiChat),
            "http://h:8080/metrics"
        );
        // Ollama has no /metrics: its own account of what it has loaded stands in.
        assert_eq!(
            at.url("http://h:11434", Api::OllamaGenerate),
            "http://h:11434/api/ps"
        );
        let off = monitor(Some("off")).unwrap();
        assert_eq!(off.url("http://h:8080", Api::OpenaiChat), "");
        let other = monitor(Some("http://h:9090/metrics")).unwrap();
        assert_eq!(
            other.url("http://h:8080", Api::OllamaChat),
            "http://h:9090/metrics"
        );
        let e = monitor(Some("h:9090")).unwrap_err().to_string();
        assert!(
            e.starts_with("--server-metrics ") && e.contains("\"off\""),
            "{e}"
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let err = |p: PlanFile| p.compile(None).unwrap_err().to_string();
        assert!(
            err(PlanFile {
                levels: Some(vec![1.5]),
                ..Default::default()
            })
            .starts_with("--levels ")
        );
        assert!(
            err(PlanFile {
                levels: Some(vec![2.0, 2.0]),
                ..Default::default()
            })
            .starts_with("--levels ")
        );
        assert!(
            err(PlanFile {
                shape: Some(LoadShape::Open),
                ..Default::default()
            })
            .starts_with("--levels ")
        );
        assert!(
            err(PlanFile {
                duration: Some("soon".into()),
                ..Default::default()
            })
            .starts_with("--duration ")
        );
        assert!(
            err(PlanFile {
                stop_on_error_rate: Some(120.0),
                ..Default::default()
            })
            .starts_with("--stop-on-error-rate ")
        );
        assert!(
            err(PlanFile {
                extra_json: Some(r#"{"prompt":"x"}"#.into()),
                ..Default::default()
            })
            .starts_with("--extra-json ")
        );
        assert!(
            err(PlanFile {
                target: Some("localhost:11434".into()),
                ..Default::default()
            })
            .starts_with("--target ")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "modle = \"x\"\n").unwrap();
        let e = PlanFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("modle"), "{e}");
        std::fs::write(&path, "levels = \"1,2\"\n").unwrap();
        let e = PlanFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("levels"), "{e}");
    }
}
