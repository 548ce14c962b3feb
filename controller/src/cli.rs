//! The command line: `tokengun run`, `sim`, `report` and `compare`, compiled into a `RunConfig`,
//! a `SimConfig` or report options.

use crate::orchestrator::RunConfig;
use crate::plan_file::{PlanFile, PlanFileError};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use tokengun_common::{Arrival, LoadShape};
use tokengun_simulator::{Faults, OutputLen, PROFILES, SimConfig};

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
    Run(Box<RunArgs>),
    /// Serve the built-in simulated inference server (Ollama or llama.cpp flavour) until Ctrl-C.
    Sim(Box<SimArgs>),
    /// Write report.md, report.html and charts/ for a run folder (any earlier run too).
    Report(ReportArgs),
    /// Overlay several runs' curves and set their findings side by side.
    Compare(CompareArgs),
    /// List agents: version, host, capabilities, and what each monitor source finds there.
    Agents(AgentsArgs),
    /// Take up a run whose controller was lost: its cycle is completed from records.pb and what
    /// the agents kept, then the sweep goes on (runs with remote agents only).
    Resume(ResumeArgs),
}

/// `tokengun resume`.
#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// The run's folder (holding run.json, plan.json, records.pb).
    pub run_dir: PathBuf,
    /// Plain progress lines instead of the live console.
    #[arg(long)]
    pub no_tui: bool,
    /// Print only errors and the final summary table.
    #[arg(long)]
    pub quiet: bool,
    /// Do not write the report at the end.
    #[arg(long)]
    pub no_report: bool,
}

/// `tokengun agents`.
#[derive(Args, Debug)]
pub struct AgentsArgs {
    /// Agent address, HOST:PORT (repeatable).
    #[arg(long = "agent", value_name = "HOST:PORT", required = true)]
    pub agents: Vec<String>,
    /// The inference server the agents would load: a local one's listening process is watched.
    #[arg(long, default_value = tokengun_common::defaults::TARGET)]
    pub target: String,
    /// Server process to watch, as pgrep matches it, or pid:N (repeatable).
    #[arg(long = "watch-process", value_name = "PATTERN")]
    pub watch_process: Vec<String>,
    #[command(flatten)]
    pub auth: AgentAuthArgs,
}

/// How the controller proves itself to agents (and checks them): `run` and `agents` share these.
#[derive(Args, Debug, Clone, Default)]
pub struct AgentAuthArgs {
    /// CA (PEM) that signed the agents' certificates; given, agents are dialled with TLS
    /// (https) [default: plaintext].
    #[arg(long, value_name = "FILE")]
    pub agent_ca: Option<PathBuf>,
    /// This controller's client certificate (PEM), for agents started with --tls-client-ca.
    #[arg(long, value_name = "FILE")]
    pub agent_cert: Option<PathBuf>,
    /// The private key (PEM) of --agent-cert.
    #[arg(long, value_name = "FILE")]
    pub agent_key: Option<PathBuf>,
    /// File holding the bearer token agents started with --token-file require (or set
    /// TOKENGUN_AGENT_TOKEN) [default: no token].
    #[arg(long, value_name = "FILE")]
    pub agent_token_file: Option<PathBuf>,
}

/// Thresholds of the report's findings, shared by `report` and `compare`.
#[derive(Args, Debug, Clone)]
pub struct FindingArgs {
    /// A level qualifies as "best" only with at most this error rate, percent [default: 1].
    #[arg(long, value_name = "PERCENT", default_value_t = 1.0, value_parser = percent_arg)]
    pub max_error_rate: f64,
    /// ...and with at least this share of its requests meeting the run's SLO, percent [default: 95].
    #[arg(long, value_name = "PERCENT", default_value_t = 95.0, value_parser = percent_arg)]
    pub min_goodput: f64,
    /// The knee: the last level before a step whose gain per unit of concurrency (or rate) is
    /// below this share of the first level's tokens/s per unit, percent [default: 25].
    #[arg(long, value_name = "PERCENT", default_value_t = 25.0, value_parser = percent_arg)]
    pub knee_slope: f64,
    /// Throughputs within this much of the highest count as a tie for "best" (the lower level
    /// wins), percent [default: 5].
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0, value_parser = percent_arg)]
    pub best_tolerance: f64,
}

impl FindingArgs {
    /// The report options these flags describe.
    pub fn options(&self, timeline_level: Option<String>) -> crate::report::ReportOptions {
        crate::report::ReportOptions {
            findings: crate::report::findings::FindingOptions {
                max_error_rate: self.max_error_rate / 100.0,
                min_good_share: self.min_goodput / 100.0,
                knee_fraction: self.knee_slope / 100.0,
                best_tolerance: self.best_tolerance / 100.0,
            },
            timeline_level,
        }
    }
}

fn percent_arg(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100")),
    }
}

/// `tokengun report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run folder (the one `tokengun run` printed after "results:").
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// Folder to write report.md, report.html and charts/ into [default: the run folder].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Level whose requests the timeline chart shows, e.g. 8 or 2.5rps [default: the first
    /// level past the knee, else the last].
    #[arg(long, value_name = "LEVEL")]
    pub timeline_level: Option<String>,
    #[command(flatten)]
    pub findings: FindingArgs,
}

/// `tokengun compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Two or more run folders.
    #[arg(value_name = "RUN_DIR", num_args = 2.., required = true)]
    pub run_dirs: Vec<PathBuf>,
    /// A label per run, in order (repeat the flag) [default: each run's model, with its run id
    /// when two share a model].
    #[arg(long = "label", value_name = "TEXT")]
    pub labels: Vec<String>,
    /// Folder to write compare.md, compare.html and charts/ into [default: a new
    /// results/compare-<time> folder].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub findings: FindingArgs,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 150ms, 2s, 10m)"))
}

/// Checks a duration flag at parse time but keeps its text (plan files hold text too).
fn duration_text(s: &str) -> Result<String, String> {
    duration_arg(s).map(|_| s.to_string())
}

/// Parses `--levels`: comma-separated positive numbers (concurrency, or rates for open loops).
/// Done after parsing (not by clap) so every mistake gets one line naming the flag.
fn parse_levels_flag(s: &str) -> Result<Vec<f64>, PlanFileError> {
    let bad = |m: String| PlanFileError::Field {
        field: "levels",
        message: m,
    };
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(bad(format!(
                "{s:?} has an empty element; use a comma-separated list such as 1,2,4,8"
            )));
        }
        let v: f64 = part.parse().map_err(|_| {
            bad(format!(
                "{part:?} is not a number; use e.g. 1,2,4,8 (or rates 0.5,1,2 with --shape open)"
            ))
        })?;
        if !(v.is_finite() && v > 0.0) {
            return Err(bad(format!(
                "level {part} is out of range: levels are above zero"
            )));
        }
        out.push(v);
    }
    Ok(out)
}

/// `tokengun run`. Every flag may also come from `--plan FILE`; flags win.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// TOML plan file (see plans/); flags given here override its settings.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Base URL of the inference server [default: http://127.0.0.1:11434].
    #[arg(long)]
    pub target: Option<String>,
    /// The target's API: auto (Ollama if it answers /api/version, else openai-chat),
    /// ollama-generate, ollama-chat, openai-completions, openai-chat [default: auto].
    #[arg(long, value_parser = ["auto", "ollama-generate", "ollama-chat", "openai-completions", "openai-chat"])]
    pub api: Option<String>,
    /// Model to load-test, as the server names it [default: deepseek-r1:7b].
    #[arg(long)]
    pub model: Option<String>,
    /// Prompt sent with every request [default: "What is the philosophical definition of time?"].
    #[arg(long)]
    pub prompt: Option<String>,
    /// Workload instead of --prompt: `builtin` (a varied set), `synthetic:WORDS`, or a file of
    /// prompts (one per line, or JSONL with "prompt", "max_tokens", "options", ...).
    #[arg(long, value_name = "SOURCE")]
    pub prompts: Option<String>,
    /// How requests are released: burst (N at once, the study's cycle), closed (keep N in flight
    /// for --duration), open (arrivals at a rate for --duration) [default: burst].
    #[arg(long, value_enum)]
    pub shape: Option<ShapeArg>,
    /// Levels, comma-separated: concurrency for burst/closed, requests/s for open [default:
    /// 1,2,4,8,12,16,24,32,64,128; 1,2,4,8 with --sim].
    #[arg(long, allow_hyphen_values = true)]
    pub levels: Option<String>,
    /// One open-loop rate in requests/s (same as --shape open --levels RATE).
    #[arg(long, value_name = "REQ_PER_S", conflicts_with_all = ["levels", "shape"])]
    pub rate: Option<f64>,
    /// Closed/open: how long each level keeps starting requests [default: 60s].
    #[arg(long, value_parser = duration_text)]
    pub duration: Option<String>,
    /// Open: constant or poisson (seeded) arrivals [default: poisson].
    #[arg(long, value_enum)]
    pub arrival: Option<ArrivalArg>,
    /// Open: most requests in flight; more wait, and their wait counts [default: 0 = no cap].
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// A phase before the first level whose requests are not counted (e.g. 10s) [default: none].
    #[arg(long, value_parser = duration_text)]
    pub warmup: Option<String>,
    /// Seed for arrivals and prompt choice: same seed, same schedule and prompts [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// A request unfinished after this long is recorded as a timeout [default: 10m].
    #[arg(long, alias = "request-timeout", value_parser = duration_text)]
    pub timeout: Option<String>,
    /// Stop the sweep after a level whose error rate exceeds this percentage (0-100).
    #[arg(long, value_name = "PERCENT")]
    pub stop_on_error_rate: Option<f64>,
    /// Cap on output tokens per request (Ollama options.num_predict) [default: the server's].
    #[arg(long, value_name = "TOKENS")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (options.temperature) [default: the server's].
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Sampling seed sent to the server (options.seed) [default: the server's].
    #[arg(long)]
    pub sampling_seed: Option<i64>,
    /// Stop sequence (options.stop), repeatable.
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// How long the server keeps the model loaded after a request (keep_alive), e.g. 10m.
    #[arg(long)]
    pub keep_alive: Option<String>,
    /// Extra JSON object merged into every request body, e.g. '{"think":false}'.
    #[arg(long, value_name = "JSON")]
    pub extra_json: Option<String>,
    /// Goodput: a request is good when it streams at least this many tokens/s [default: 10].
    #[arg(long, value_name = "TOKENS_PER_S")]
    pub slo_tokens_per_s: Option<f64>,
    /// Goodput: and its TTFT is at most this (e.g. 2s) [default: no limit].
    #[arg(long, value_parser = duration_text)]
    pub slo_ttft: Option<String>,
    /// Goodput: and its end-to-end latency is at most this [default: no limit].
    #[arg(long, value_parser = duration_text)]
    pub slo_e2e: Option<String>,
    /// Do not sample the server's processes, the machine or power sources.
    #[arg(long)]
    pub no_monitor: bool,
    /// Server process to watch: a name or pattern as pgrep matches it, or pid:N (repeatable)
    /// [default: the process listening on a local --target's port, else "ollama" for Ollama].
    #[arg(long = "watch-process", value_name = "PATTERN")]
    pub watch_process: Vec<String>,
    /// Between samples of the server's processes and the machine [default: 1s].
    #[arg(long, value_parser = duration_text)]
    pub monitor_interval: Option<String>,
    /// Between power/GPU samples (NVML, powermetrics, hwmon, RAPL) [default: 200ms].
    #[arg(long, value_parser = duration_text)]
    pub power_interval: Option<String>,
    /// Idle power measured before the sweep, subtracted in the net energy figures; only taken
    /// when a power source is found (0s = none) [default: 5s].
    #[arg(long, value_parser = duration_text)]
    pub baseline: Option<String>,
    /// Several agents: `total` divides each level among them (N/k each; rates too), `per-agent`
    /// gives each the whole level [default: total].
    #[arg(long, value_parser = ["total", "per-agent"])]
    pub split: Option<String>,
    /// Several agents: when one is lost, `continue` with the others (cycles it missed say so)
    /// or `stop` the sweep [default: continue].
    #[arg(long, value_parser = ["continue", "stop"])]
    pub on_agent_loss: Option<String>,
    /// Skip the study's per-request throughput CSVs (one file per request); the timelines are
    /// in records.pb either way. For runs of many thousands of requests.
    #[arg(long)]
    pub no_throughput_csv: bool,
    /// How long a lost agent is waited for (its records are replayed when it is back) before
    /// its cycle closes without it [default: 30s].
    #[arg(long, value_parser = duration_text)]
    pub reconnect_wait: Option<String>,
    /// Agent to generate the load, HOST:PORT [default: an agent inside this process].
    #[arg(long = "agent", value_name = "HOST:PORT")]
    pub agents: Vec<String>,
    #[command(flatten)]
    pub auth: AgentAuthArgs,
    /// Folder that receives the run's folder [default: results].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Name of the run's folder [default: the start time, e.g. 20261127T192130Z].
    #[arg(long)]
    pub run_id: Option<String>,
    /// Aim at the built-in simulator (started on a free loopback port) instead of --target.
    #[arg(long)]
    pub sim: bool,
    /// Simulator profile: fast, study, llama-server, firehose (see `tokengun sim --help`).
    #[arg(long, default_value = "fast", value_parser = profile_arg, requires = "sim")]
    pub sim_profile: String,
    /// Simulator: slot acquired -> first token [default: the profile's; fast: 150ms].
    #[arg(long, value_parser = duration_arg, requires = "sim")]
    pub sim_ttft: Option<Duration>,
    /// Simulator: gap between tokens of one request [default: the profile's; fast: 10ms].
    #[arg(long, value_parser = duration_arg, requires = "sim")]
    pub sim_token_delay: Option<Duration>,
    /// Simulator: output tokens per request [default: the profile's; fast: 100].
    #[arg(long, requires = "sim")]
    pub sim_tokens: Option<u32>,
    /// Simulator: requests served in parallel, more wait FIFO [default: the profile's; fast: 4].
    #[arg(long, requires = "sim")]
    pub sim_slots: Option<u32>,
    /// Print only errors and the final summary table.
    #[arg(long, short)]
    pub quiet: bool,
    /// Do not write report.md / report.html / charts/ at the end of the run
    /// (`tokengun report <run-dir>` writes them later).
    #[arg(long)]
    pub no_report: bool,
    /// Plain progress lines (a line per cycle, a heartbeat every 5 s) instead of the live
    /// console; the default when stdout is not a terminal.
    #[arg(long)]
    pub no_tui: bool,
}

/// `--shape` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShapeArg {
    Burst,
    Closed,
    Open,
}

/// `--arrival` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArrivalArg {
    Constant,
    Poisson,
}

fn range_arg(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not a range of token counts like 100-400");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u32, u32) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

fn profile_arg(s: &str) -> Result<String, String> {
    if SimConfig::profile(s).is_some() {
        Ok(s.to_string())
    } else {
        let names: Vec<&str> = PROFILES.iter().map(|p| p.0).collect();
        Err(format!(
            "unknown profile {s:?}; choose one of {}",
            names.join(", ")
        ))
    }
}

/// Applies the common simulator overrides to a profile.
pub fn tune_sim(
    profile: &str,
    ttft: Option<Duration>,
    token_delay: Option<Duration>,
    tokens: Option<u32>,
    slots: Option<u32>,
) -> SimConfig {
    let mut c = SimConfig::profile(profile).unwrap_or_default();
    if let Some(t) = ttft {
        c.engine.prefill_base = t;
    }
    if let Some(d) = token_delay {
        c.engine.step_base = d;
    }
    if let Some(n) = tokens {
        c.output = OutputLen::Fixed(n);
    }
    if let Some(n) = slots {
        c.engine.slots = n;
    }
    c
}

/// `tokengun sim`: a profile, then any overrides.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:11434")]
    pub listen: String,
    /// Named behaviour: fast (demos, tests), study (the study's M2 Pro + deepseek-r1:7b),
    /// llama-server (llama.cpp on 2 CPU cores, measured), firehose (no delays).
    #[arg(long, default_value = "fast", value_parser = profile_arg)]
    pub profile: String,
    /// Model names to serve (repeatable) [default: the profile's].
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Slot acquired -> first token (prefill base) [default: the profile's].
    #[arg(long, value_parser = duration_arg)]
    pub ttft: Option<Duration>,
    /// Decode step with one request decoding [default: the profile's].
    #[arg(long, value_parser = duration_arg)]
    pub token_delay: Option<Duration>,
    /// Extra decode time per request decoding together (batch cost) [default: the profile's].
    #[arg(long, value_parser = duration_arg)]
    pub step_per_seq: Option<Duration>,
    /// Output tokens per request (a request's num_predict / max_tokens may lower it).
    #[arg(long)]
    pub tokens: Option<u32>,
    /// Requests served in parallel; more wait in a FIFO queue.
    #[arg(long)]
    pub slots: Option<u32>,
    /// Most requests waiting for a slot; more get 503 [default: unbounded, as Ollama].
    #[arg(long, value_name = "N")]
    pub queue_limit: Option<u32>,
    /// Output tokens drawn uniformly from MIN-MAX per request (seeded), e.g. 100-400.
    #[arg(long, value_name = "MIN-MAX", value_parser = range_arg, conflicts_with = "tokens")]
    pub tokens_range: Option<(u32, u32)>,
    /// Prefill cost per prompt token (about four characters a token) [default: the profile's].
    #[arg(long, value_parser = duration_arg)]
    pub prefill_per_token: Option<Duration>,
    /// Whether a prefill stalls every running stream, as llama.cpp's does [default: the profile's].
    #[arg(long)]
    pub prefill_stalls: Option<bool>,
    /// Model load on the first request and after --keep-alive idle [default: the profile's].
    #[arg(long, value_parser = duration_arg)]
    pub load_time: Option<Duration>,
    /// Idle time after which the model is unloaded [default: 5m].
    #[arg(long, value_parser = duration_arg)]
    pub keep_alive: Option<Duration>,
    /// Lognormal sigma of the decode-step jitter (0 = none; the llama-server profile has 0.12).
    #[arg(long)]
    pub jitter: Option<f64>,
    /// Every Nth request's first token comes --slow-first-by late (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub slow_first_every: u64,
    /// How late a slow first token is.
    #[arg(long, default_value = "2s", value_parser = duration_arg)]
    pub slow_first_by: Duration,
    /// Multiply every delay (0.1 = ten times faster).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Seed for output lengths, jitter and load failures.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The first N output tokens are reasoning ("thinking") [default: the profile's].
    #[arg(long, value_name = "N")]
    pub reasoning_tokens: Option<u32>,
    /// Reasoning as inline <think>...</think> text instead of its own field.
    #[arg(long)]
    pub reasoning_inline: bool,
    /// Answer every Nth request with HTTP 500 (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fail_every: u64,
    /// End every Nth request's stream mid-way (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub cut_every: u64,
    /// Tokens sent before a cut stream ends.
    #[arg(long, default_value_t = 10, value_name = "TOKENS")]
    pub cut_after: u32,
    /// Send a non-JSON line in every Nth request's stream (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub malformed_every: u64,
    /// Stall the whole server this long after the first generate request (e.g. 30s).
    #[arg(long, value_parser = duration_arg)]
    pub stall_at: Option<Duration>,
    /// How long the stall lasts.
    #[arg(long, default_value = "1s", value_parser = duration_arg)]
    pub stall_for: Duration,
    /// Keep every request's token send instants and serve them at GET /tokengun/truth (JSON,
    /// instants from an epoch given on the machine's monotonic clock), for accuracy
    /// measurements. Memory grows by about 8 bytes a token: for bounded runs only.
    #[arg(long)]
    pub record_truth: bool,
}

impl SimArgs {
    /// The simulator configuration these flags describe.
    pub fn config(&self) -> SimConfig {
        let mut c = tune_sim(
            &self.profile,
            self.ttft,
            self.token_delay,
            self.tokens,
            self.slots,
        );
        if !self.models.is_empty() {
            c.models = self.models.clone();
        }
        if let Some(b) = self.step_per_seq {
            c.engine.step_per_seq = b;
        }
        if let Some(n) = self.reasoning_tokens {
            c.reasoning_tokens = n;
        }
        c.reasoning_inline = self.reasoning_inline;
        c.engine.queue_limit = self.queue_limit.or(c.engine.queue_limit);
        if let Some((min, max)) = self.tokens_range {
            c.output = OutputLen::Uniform { min, max };
        }
        if let Some(d) = self.prefill_per_token {
            c.engine.prefill_per_token = d;
        }
        if let Some(b) = self.prefill_stalls {
            c.engine.prefill_stalls = b;
        }
        if let Some(d) = self.load_time {
            c.engine.load_time = d;
        }
        if let Some(d) = self.keep_alive {
            c.engine.keep_alive = d;
        }
        if let Some(j) = self.jitter {
            c.engine.jitter_sigma = j;
        }
        c.time_scale = self.time_scale;
        c.seed = self.seed;
        c.record_truth = self.record_truth;
        c.faults = Faults {
            fail_every: self.fail_every,
            cut_every: self.cut_every,
            cut_after_tokens: self.cut_after,
            malformed_every: self.malformed_every,
            stall_at: self.stall_at,
            stall_for: self.stall_for,
            slow_first_every: self.slow_first_every,
            slow_first_by: self.slow_first_by,
        };
        c
    }
}

impl RunArgs {
    /// The settings given as flags (`None` where a flag was not given).
    pub fn as_plan(&self) -> Result<PlanFile, PlanFileError> {
        let (shape, levels) = match self.rate {
            Some(r) => (Some(LoadShape::Open), Some(vec![r])),
            None => (
                self.shape.map(|s| match s {
                    ShapeArg::Burst => LoadShape::Burst,
                    ShapeArg::Closed => LoadShape::Closed,
                    ShapeArg::Open => LoadShape::Open,
                }),
                self.levels.as_deref().map(parse_levels_flag).transpose()?,
            ),
        };
        Ok(PlanFile {
            target: self.target.clone(),
            api: self.api.clone(),
            model: self.model.clone(),
            prompt: self.prompt.clone(),
            prompts: self.prompts.clone(),
            shape,
            levels,
            duration: self.duration.clone(),
            arrival: self.arrival.map(|a| match a {
                ArrivalArg::Constant => Arrival::Constant,
                ArrivalArg::Poisson => Arrival::Poisson,
            }),
            max_in_flight: self.max_in_flight,
            warmup: self.warmup.clone(),
            seed: self.seed,
            timeout: self.timeout.clone(),
            stop_on_error_rate: self.stop_on_error_rate,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            sampling_seed: self.sampling_seed,
            stop: (!self.stop.is_empty()).then(|| self.stop.clone()),
            keep_alive: self.keep_alive.clone(),
            extra_json: self.extra_json.clone(),
            slo_tokens_per_s: self.slo_tokens_per_s,
            slo_ttft: self.slo_ttft.clone(),
            slo_e2e: self.slo_e2e.clone(),
            agents: (!self.agents.is_empty()).then(|| self.agents.clone()),
            agent_ca: self.auth.agent_ca.clone(),
            agent_cert: self.auth.agent_cert.clone(),
            agent_key: self.auth.agent_key.clone(),
            agent_token_file: self.auth.agent_token_file.clone(),
            out: self.out.clone(),
            run_id: self.run_id.clone(),
            monitor: self.no_monitor.then_some(false),
            watch_process: (!self.watch_process.is_empty()).then(|| self.watch_process.clone()),
            monitor_interval: self.monitor_interval.clone(),
            power_interval: self.power_interval.clone(),
            baseline: self.baseline.clone(),
            split: self.split.clone(),
            on_agent_loss: self.on_agent_loss.clone(),
            reconnect_wait: self.reconnect_wait.clone(),
            throughput_csv: self.no_throughput_csv.then_some(false),
        })
    }

    /// Compiles plan file and flags (flags win) into a validated run configuration.
    pub fn config(&self) -> Result<RunConfig, PlanFileError> {
        let file = match &self.plan {
            Some(path) => PlanFile::load(path)?,
            None => PlanFile::default(),
        };
        let sim = self.sim.then(|| {
            tune_sim(
                &self.sim_profile,
                self.sim_ttft,
                self.sim_token_delay,
                self.sim_tokens,
                self.sim_slots,
            )
        });
        file.overlay(self.as_plan()?).compile(sim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(
            std::iter::once("tokengun")
                .chain(["run"])
                .chain(args.iter().copied()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        match cli.command {
            Command::Run(r) => *r,
            _ => panic!("not run"),
        }
    }

    fn parse_fails(args: &[&str]) -> bool {
        Cli::try_parse_from(
            std::iter::once("tokengun")
                .chain(["run"])
                .chain(args.iter().copied()),
        )
        .is_err()
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = run_args(&["--levels", "1,2,4"]).config().unwrap();
        assert_eq!(
            c.levels.iter().map(|l| l.concurrency).collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
    }

    #[test]
    fn defaults_are_the_study() {
        let c = run_args(&[]).config().unwrap();
        let levels: Vec<u32> = c.levels.iter().map(|l| l.concurrency).collect();
        assert_eq!(levels, vec![1, 2, 4, 8, 12, 16, 24, 32, 64, 128]);
        assert_eq!(c.model, "deepseek-r1:7b");
        assert_eq!(c.target, "http://127.0.0.1:11434");
        assert_eq!(
            c.prompts[0].text,
            "What is the philosophical definition of time?"
        );
        assert_eq!(c.shape, LoadShape::Burst);
        assert!(c.sim.is_none());
        assert_eq!(run_args(&["--sim"]).config().unwrap().levels.len(), 4);
    }

    #[test]
    fn rate_is_an_open_loop() {
        let c = run_args(&["--rate", "2.5", "--duration", "5s", "--arrival", "constant"])
            .config()
            .unwrap();
        assert_eq!(c.shape, LoadShape::Open);
        assert_eq!(c.levels[0].rate_per_s, Some(2.5));
        assert_eq!(c.arrival, Arrival::Constant);
    }

    #[test]
    fn request_options_merge_into_the_body() {
        let c = run_args(&[
            "--max-tokens",
            "64",
            "--temperature",
            "0",
            "--stop",
            "END",
            "--keep-alive",
            "10m",
            "--extra-json",
            r#"{"options":{"top_k":5},"think":false}"#,
        ])
        .config()
        .unwrap();
        assert_eq!(c.options.max_tokens, Some(64));
        assert_eq!(c.options.temperature, Some(0.0));
        assert_eq!(c.options.stop, vec!["END".to_string()]);
        assert_eq!(c.options.keep_alive.as_deref(), Some("10m"));
        let v: serde_json::Value = serde_json::from_str(&c.extra_body_json).unwrap();
        assert_eq!(v["options"]["top_k"], 5);
        assert_eq!(v["think"], false);
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in ["0,1", "a", "1,,2", "-1", ""] {
            let e = run_args(&["--levels", bad])
                .config()
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("--levels "), "{bad:?}: {e}");
        }
        assert!(parse_fails(&["--timeout", "soon"]));
        assert!(parse_fails(&["--sim-slots", "2"]), "sim flags need --sim");
        assert!(parse_fails(&["--rate", "2", "--levels", "1"]));
        assert!(parse_fails(&["--rate", "2", "--shape", "closed"]));
        assert!(run_args(&["--extra-json", "[1]"]).config().is_err());
        assert!(run_args(&["--levels", "1.5"]).config().is_err());
    }
}
