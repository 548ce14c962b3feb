//! The command line: `tokengun run` and `tokengun sim`, compiled into a `RunConfig` / `SimConfig`.

use crate::orchestrator::RunConfig;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use tokengun_common::{Api, defaults, plan::parse_levels};
use tokengun_simulator::{Faults, SimConfig};

/// Load-test and benchmark LLM inference servers (Ollama and OpenAI-compatible).
#[derive(Parser, Debug)]
#[command(name = "tokengun", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a concurrency sweep against a server (or the built-in simulator with --sim).
    Run(RunArgs),
    /// Serve the built-in simulated Ollama server until Ctrl-C.
    Sim(SimArgs),
}

/// A parsed `--levels` list (a newtype, so clap treats it as one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Levels(pub Vec<u32>);

fn levels_arg(s: &str) -> Result<Levels, String> {
    parse_levels(s).map(Levels).map_err(|e| e.to_string())
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 150ms, 2s, 10m)"))
}

/// `tokengun run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Base URL of the inference server.
    #[arg(long, default_value = defaults::TARGET)]
    pub target: String,
    /// Model to load-test (as the server names it).
    #[arg(long, default_value = defaults::MODEL)]
    pub model: String,
    /// Prompt sent with every request.
    #[arg(long, default_value = defaults::PROMPT)]
    pub prompt: String,
    /// Concurrency levels, comma-separated; one cycle per level [default: 1,2,4,8,12,16,24,32,64,128;
    /// 1,2,4,8 with --sim].
    #[arg(long, value_parser = levels_arg)]
    pub levels: Option<Levels>,
    /// Agent to generate the load, HOST:PORT (default: an agent inside this process).
    #[arg(long = "agent", value_name = "HOST:PORT")]
    pub agents: Vec<String>,
    /// Folder that receives the run's folder.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Name of the run's folder [default: the start time, e.g. 20261127T192130Z].
    #[arg(long)]
    pub run_id: Option<String>,
    /// A request still unfinished after this long is recorded as a timeout (e.g. 90s, 10m).
    #[arg(long, default_value = "10m", value_parser = duration_arg)]
    pub request_timeout: Duration,
    /// Cap on output tokens per request (Ollama `options.num_predict`) [default: the server's].
    #[arg(long, value_name = "TOKENS")]
    pub max_tokens: Option<u32>,
    /// Extra JSON object merged into every request body, e.g. '{"keep_alive":"10m"}'.
    #[arg(long, value_name = "JSON")]
    pub extra_json: Option<String>,
    /// A request meets the service level when it streams at least this many tokens/s.
    #[arg(long, default_value_t = defaults::SLO_TOKENS_PER_S, value_name = "TOKENS_PER_S")]
    pub slo_tokens_per_s: f64,
    /// Aim at the built-in simulator (started on a free loopback port) instead of --target.
    #[arg(long)]
    pub sim: bool,
    /// Simulator: slot acquired -> first token.
    #[arg(long, default_value = "150ms", value_parser = duration_arg, requires = "sim")]
    pub sim_ttft: Duration,
    /// Simulator: gap between tokens of one request.
    #[arg(long, default_value = "10ms", value_parser = duration_arg, requires = "sim")]
    pub sim_token_delay: Duration,
    /// Simulator: output tokens per request.
    #[arg(long, default_value_t = 100, requires = "sim")]
    pub sim_tokens: u32,
    /// Simulator: requests served in parallel (more wait in a FIFO queue).
    #[arg(long, default_value_t = 4, requires = "sim")]
    pub sim_slots: u32,
    /// Print only errors and the final summary table.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `tokengun sim`.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:11434")]
    pub listen: String,
    /// Model names to serve (repeatable).
    #[arg(long = "model", default_value = defaults::MODEL)]
    pub models: Vec<String>,
    /// Slot acquired -> first token.
    #[arg(long, default_value = "150ms", value_parser = duration_arg)]
    pub ttft: Duration,
    /// Gap between tokens of one request.
    #[arg(long, default_value = "10ms", value_parser = duration_arg)]
    pub token_delay: Duration,
    /// Output tokens per request (a request's options.num_predict may lower it).
    #[arg(long, default_value_t = 100)]
    pub tokens: u32,
    /// Requests served in parallel (Ollama's OLLAMA_NUM_PARALLEL); more wait in a FIFO queue.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Answer every Nth request with HTTP 500 (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fail_every: u64,
    /// Cut every Nth request's stream mid-way (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub cut_every: u64,
    /// Tokens sent before a cut stream is dropped.
    #[arg(long, default_value_t = 10, value_name = "TOKENS")]
    pub cut_after: u32,
    /// Send a non-JSON line in every Nth request's stream (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub malformed_every: u64,
}

impl SimArgs {
    /// The simulator configuration these flags describe.
    pub fn config(&self) -> SimConfig {
        SimConfig {
            models: self.models.clone(),
            ttft: self.ttft,
            token_delay: self.token_delay,
            tokens: self.tokens,
            slots: self.slots,
            faults: Faults {
                fail_every: self.fail_every,
                cut_every: self.cut_every,
                cut_after_tokens: self.cut_after,
                malformed_every: self.malformed_every,
            },
            ..SimConfig::default()
        }
    }
}

/// Flags could be parsed but do not make a run.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error("--extra-json is not a JSON object: {0}")]
    ExtraJson(String),
    #[error("--slo-tokens-per-s must be a positive number")]
    Slo,
    #[error("--max-tokens must be at least 1")]
    MaxTokens,
}

impl RunArgs {
    /// Compiles the flags into a run configuration.
    pub fn config(&self) -> Result<RunConfig, FlagError> {
        let mut extra = match &self.extra_json {
            Some(s) => match serde_json::from_str::<serde_json::Value>(s) {
                Ok(serde_json::Value::Object(m)) => m,
                Ok(_) => return Err(FlagError::ExtraJson("not an object".into())),
                Err(e) => return Err(FlagError::ExtraJson(e.to_string())),
            },
            None => serde_json::Map::new(),
        };
        if let Some(n) = self.max_tokens {
            if n == 0 {
                return Err(FlagError::MaxTokens);
            }
            let options = extra
                .entry("options")
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if let Some(o) = options.as_object_mut() {
                o.insert("num_predict".into(), n.into());
            }
        }
        if !(self.slo_tokens_per_s.is_finite() && self.slo_tokens_per_s > 0.0) {
            return Err(FlagError::Slo);
        }
        let levels = self.levels.clone().map(|l| l.0).unwrap_or_else(|| {
            if self.sim {
                defaults::SIM_LEVELS.to_vec()
            } else {
                defaults::LEVELS.to_vec()
            }
        });
        Ok(RunConfig {
            target: self.target.clone(),
            api: Api::Ollama,
            model: self.model.clone(),
            prompt: self.prompt.clone(),
            levels,
            agents: self.agents.clone(),
            out: self.out.clone(),
            run_id: self.run_id.clone(),
            request_timeout: self.request_timeout,
            extra_body_json: if extra.is_empty() {
                String::new()
            } else {
                serde_json::Value::Object(extra).to_string()
            },
            slo_tokens_per_s: self.slo_tokens_per_s,
            sim: self.sim.then(|| SimConfig {
                models: vec![self.model.clone()],
                ttft: self.sim_ttft,
                token_delay: self.sim_token_delay,
                tokens: self.sim_tokens,
                slots: self.sim_slots,
                ..SimConfig::default()
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tokengun").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let Command::Run(r) = parse(&["run", "--levels", "1,2,4"]).unwrap().command else {
            panic!("not run")
        };
        assert_eq!(r.config().unwrap().levels, vec![1, 2, 4]);
    }

    #[test]
    fn defaults_are_the_study() {
        let Command::Run(r) = parse(&["run"]).unwrap().command else {
            panic!("not run")
        };
        let c = r.config().unwrap();
        assert_eq!(c.levels, vec![1, 2, 4, 8, 12, 16, 24, 32, 64, 128]);
        assert_eq!(c.model, "deepseek-r1:7b");
        assert_eq!(c.target, "http://127.0.0.1:11434");
        assert_eq!(c.prompt, "What is the philosophical definition of time?");
        assert!(c.sim.is_none());
        let Command::Run(r) = parse(&["run", "--sim"]).unwrap().command else {
            panic!("not run")
        };
        assert_eq!(r.config().unwrap().levels, vec![1, 2, 4, 8]);
    }

    #[test]
    fn max_tokens_merges_into_options() {
        let Command::Run(r) = parse(&[
            "run",
            "--max-tokens",
            "64",
            "--extra-json",
            r#"{"options":{"temperature":0}}"#,
        ])
        .unwrap()
        .command
        else {
            panic!("not run")
        };
        let v: serde_json::Value =
            serde_json::from_str(&r.config().unwrap().extra_body_json).unwrap();
        assert_eq!(v["options"]["num_predict"], 64);
        assert_eq!(v["options"]["temperature"], 0);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["run", "--levels", "0,1"]).is_err());
        assert!(parse(&["run", "--levels", "a"]).is_err());
        assert!(parse(&["run", "--request-timeout", "soon"]).is_err());
        assert!(
            parse(&["run", "--sim-slots", "2"]).is_err(),
            "sim flags need --sim"
        );
        let Command::Run(r) = parse(&["run", "--extra-json", "[1]"]).unwrap().command else {
            panic!("not run")
        };
        assert!(r.config().is_err());
    }
}
