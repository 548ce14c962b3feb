//! `tokengun run`: the flags (over a plan file) compiled into a [`RunConfig`], the sweep run
//! with the live console or plain lines, the report written at the end.

use super::sim::{profile_arg, tune_sim};
use super::{AgentAuthArgs, EXIT_INTERRUPTED, duration_arg, duration_text};
use crate::plan::{PlanFile, PlanFileError, RunConfig};
use crate::report;
use crate::run::{RunError, RunReport};
use crate::sinks::console::{self, Console};
use crate::sinks::run_folder::RunStatus;
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use tokengun_common::{Arrival, LoadShape};
use tokio_util::sync::CancellationToken;

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
    /// Base URL of the inference server [default: http://127.0.0.1:11434]; several instances as
    /// URL1,URL2,... share each level's load (see --target-policy).
    #[arg(long, value_name = "URL[,URL...]")]
    pub target: Option<String>,
    /// Several targets: round-robin (request i to target i mod n), least-in-flight (to the
    /// target with the fewest requests in flight), pinned (each agent to its own target)
    /// [default: round-robin].
    #[arg(long, value_parser = ["round-robin", "least-in-flight", "pinned"])]
    pub target_policy: Option<String>,
    /// Instance counts to sweep with the same levels, comma-separated (the first N targets),
    /// e.g. 1,2 answers "does a second instance add throughput?" [default: all targets].
    #[arg(long, value_name = "N[,N...]", value_delimiter = ',')]
    pub instances: Vec<u32>,
    /// Several models on Ollama: unload each (keep_alive 0) before the next loads, so two
    /// models never share memory.
    #[arg(long)]
    pub unload_between_models: bool,
    /// The target's API: auto (Ollama if it answers /api/version, else openai-chat),
    /// ollama-generate, ollama-chat, openai-completions, openai-chat [default: auto].
    #[arg(long, value_parser = ["auto", "ollama-generate", "ollama-chat", "openai-completions", "openai-chat"])]
    pub api: Option<String>,
    /// Model to load-test, as the server names it [default: deepseek-r1:7b]; several as a,b,c
    /// are swept one after another (each loaded before its first measured level).
    #[arg(long, value_name = "MODEL[,MODEL...]")]
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
    /// Between power/GPU samples (NVML, IOReport, powermetrics, hwmon, RAPL) [default: 200ms].
    #[arg(long, value_parser = duration_text)]
    pub power_interval: Option<String>,
    /// Apple Silicon power source of the agents: auto (IOReport without root, else powermetrics
    /// when the agent runs as root, else none, saying why), ioreport, powermetrics (as root or
    /// through sudo -n) or none [default: each agent's own --power; auto for the agent inside
    /// `tokengun run`]. IOReport was type-checked for macOS in CI, not run there.
    #[arg(long, value_name = "auto|ioreport|powermetrics|none")]
    pub power: Option<String>,
    /// Idle power measured before the sweep, subtracted in the net energy figures; only taken
    /// when a power source is found (0s = none) [default: 5s].
    #[arg(long, value_parser = duration_text)]
    pub baseline: Option<String>,
    /// The server's Prometheus endpoint, scraped every --monitor-interval into
    /// server_metrics.csv (queue depth, running requests, KV cache), or `off`
    /// [default: <target>/metrics for OpenAI-compatible servers (a server without one is noted
    /// once); for Ollama, which has no such endpoint, its /api/ps (loaded models, VRAM)].
    #[arg(long, value_name = "URL|off")]
    pub server_metrics: Option<String>,
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
    #[command(flatten)]
    pub workload: super::workload_args::WorkloadArgs,
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
    #[command(flatten)]
    pub metrics: super::MetricsArgs,
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
            power: self.power.clone(),
            baseline: self.baseline.clone(),
            server_metrics: self.server_metrics.clone(),
            split: self.split.clone(),
            on_agent_loss: self.on_agent_loss.clone(),
            reconnect_wait: self.reconnect_wait.clone(),
            throughput_csv: self.no_throughput_csv.then_some(false),
            workload: self.workload.as_plan(),
            search: self.workload.search_plan(),
            models: None,
            targets: None,
            target_policy: self.target_policy.clone(),
            instances: (!self.instances.is_empty()).then(|| self.instances.clone()),
            unload_between_models: self.unload_between_models.then_some(true),
            server: None,
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

/// Runs the sweep the flags describe.
pub async fn exec(args: &RunArgs, stop: CancellationToken) -> u8 {
    let cfg = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let mut console = console_for(args.no_tui, args.quiet, &stop);
    let metrics_stop = CancellationToken::new();
    match args.metrics.start(metrics_stop.clone()).await {
        Ok(Some(m)) => console = console.with_metrics(m),
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    }
    let result = crate::run::run(cfg, &mut console, stop).await;
    let code = finish_run(console, result, args.no_report).await;
    metrics_stop.cancel();
    code
}

/// The end-of-run report: written from the files just closed; a failure is a warning, never a
/// lost result (the run's files are already complete on disk).
async fn write_run_report(run_dir: std::path::PathBuf) {
    let dir = run_dir.clone();
    let done = tokio::task::spawn_blocking(move || {
        report::report(&dir, None, &report::ReportOptions::default())
    })
    .await;
    match done {
        Ok(Ok(w)) => console::write_stdout(&format!("report: {}\n", w.html.display())),
        Ok(Err(e)) => eprintln!(
            "warning: report not written ({e}); the results are intact, try `tokengun report {}`",
            run_dir.display()
        ),
        Err(e) => eprintln!(
            "warning: report not written ({e}); the results are intact, try `tokengun report {}`",
            run_dir.display()
        ),
    }
}

/// The live console on a terminal; plain lines for logs, pipes, --no-tui and --quiet.
pub(super) fn console_for(no_tui: bool, quiet: bool, stop: &CancellationToken) -> Console {
    if !no_tui && !quiet && std::io::stdout().is_terminal() {
        Console::live(stop.clone())
    } else {
        Console::new(quiet)
    }
}

/// Restores the terminal, writes the report, says where the results are, and picks the exit code.
pub(super) async fn finish_run(
    mut console: Console,
    result: Result<RunReport, RunError>,
    no_report: bool,
) -> u8 {
    // The terminal is back before anything else is printed.
    console.finish();
    if !no_report {
        let run_dir = match &result {
            Ok(r) => Some(r.run_dir.clone()),
            Err(RunError::Broken { run_dir, .. }) => Some(run_dir.clone()),
            Err(_) => None,
        };
        if let Some(dir) = run_dir {
            write_run_report(dir).await;
        }
    }
    match result {
        Ok(report) => {
            console::write_stdout(&format!("\nresults: {}\n", report.run_dir.display()));
            match report.status {
                RunStatus::Interrupted => {
                    eprintln!("interrupted: finished cycles and the partial one are written");
                    EXIT_INTERRUPTED
                }
                _ => 0,
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                e if e.is_usage() => 2,
                RunError::Interrupted => EXIT_INTERRUPTED,
                _ => 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::{Cli, Command};
    use clap::Parser;

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
