//! tokengun's controller: the CLI, the orchestrator of cycles, agent links, result writers,
//! and the report / compare generator.
#![forbid(unsafe_code)]

pub mod cli;
pub mod console;
pub mod link;
pub mod monitoring;
pub mod orchestrator;
pub mod output;
pub mod plan_file;
pub mod report;
pub mod tui;
pub mod workload;

use cli::{Cli, Command};
use console::Console;
use orchestrator::RunError;
use output::RunStatus;
use std::io::IsTerminal;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Exit code when the user interrupted a run (results kept), as shells report SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Runs a parsed command line; returns the process exit code. `stop` is cancelled on Ctrl-C.
pub async fn execute(cli: Cli, stop: CancellationToken) -> u8 {
    match cli.command {
        Command::Run(args) => {
            let cfg = match args.config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 2;
                }
            };
            let mut console = console_for(args.no_tui, args.quiet, &stop);
            let result = orchestrator::run(cfg, &mut console, stop).await;
            finish_run(console, result, args.no_report).await
        }
        Command::Resume(args) => {
            let mut console = console_for(args.no_tui, args.quiet, &stop);
            let result = orchestrator::resume(&args.run_dir, &mut console, stop).await;
            finish_run(console, result, args.no_report).await
        }
        Command::Report(args) => {
            let opts = args.findings.options(args.timeline_level.clone());
            match report::report(&args.run_dir, args.out.as_deref(), &opts) {
                Ok(w) => {
                    console::write_stdout(&format!(
                        "report: {}\n        {}\ncharts: {} in {}\n",
                        w.markdown.display(),
                        w.html.display(),
                        w.charts.len(),
                        w.markdown.with_file_name("charts").display()
                    ));
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        Command::Compare(args) => {
            let opts = args.findings.options(None);
            let out = match args.out.clone() {
                Some(o) => o,
                None => match new_compare_dir() {
                    Ok(o) => o,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return 1;
                    }
                },
            };
            match report::compare(&args.run_dirs, &args.labels, &out, &opts) {
                Ok(w) => {
                    console::write_stdout(&format!(
                        "compare: {}\n         {}\ncharts: {} in {}\n",
                        w.markdown.display(),
                        w.html.display(),
                        w.charts.len(),
                        out.join("charts").display()
                    ));
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    if matches!(e, report::ReportError::LabelCount { .. }) {
                        2
                    } else {
                        1
                    }
                }
            }
        }
        Command::Agents(args) => agents(&args).await,
        Command::Sim(args) => {
            let config = args.config();
            let (models, flavor) = (config.models.join(", "), config.flavor);
            let handle = match tokengun_simulator::SimHandle::start(&args.listen, config).await {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            };
            console::write_stdout(&format!(
                "tokengun simulator ({} profile, {}) serving on {} (models: {models}); Ctrl-C to stop\n",
                args.profile,
                match flavor {
                    tokengun_simulator::Flavor::Ollama => "Ollama's /api and /v1 endpoints",
                    tokengun_simulator::Flavor::LlamaCpp => "llama.cpp's /v1 endpoints",
                },
                handle.url()
            ));
            stop.cancelled().await;
            handle.stop(Duration::from_secs(2)).await;
            0
        }
    }
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

/// `results/compare-<time>`, a new folder (suffixed when taken).
fn new_compare_dir() -> Result<std::path::PathBuf, String> {
    let base = format!(
        "compare-{}",
        output::default_run_id(std::time::SystemTime::now())
    );
    let results = std::path::Path::new("results");
    std::fs::create_dir_all(results)
        .map_err(|e| format!("cannot create results/: {e}; pass --out with a writable folder"))?;
    for n in 1..1000 {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let dir = results.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(format!(
                    "cannot create {}: {e}; pass --out with a writable folder",
                    dir.display()
                ));
            }
        }
    }
    Err("too many compare folders for this second; pass --out".into())
}

/// `tokengun agents`: each agent's identity and what its monitors find; exit 1 if any is down.
async fn agents(args: &cli::AgentsArgs) -> u8 {
    let auth = link::AgentAuth {
        ca: args.auth.agent_ca.clone(),
        cert: args.auth.agent_cert.clone(),
        key: args.auth.agent_key.clone(),
        token_file: args.auth.agent_token_file.clone(),
    };
    if let Err(e) = auth.check() {
        eprintln!("error: {e}");
        return 2;
    }
    let spec = tokengun_proto::MonitorSpec {
        watch_process: args.watch_process.clone(),
        target_url: args.target.clone(),
        power: true,
        ..Default::default()
    };
    let mut code = 0;
    for addr in &args.agents {
        let probed = async {
            let l = link::AgentLink::connect_with(addr, std::time::Duration::from_secs(5), &auth)
                .await?;
            let info = l.hello(false).await?;
            let (state, cycle, last_seq) = l.status().await?;
            let clock = l.clock_offset(8).await?;
            let probe = l.probe(spec.clone()).await?;
            Ok::<_, link::LinkError>((info, (state, cycle, last_seq), clock, probe))
        };
        match probed.await {
            Ok((info, (state, cycle, last_seq), clock, probe)) => {
                let doing = match state.as_str() {
                    "running" => format!("running cycle {cycle}"),
                    "prepared" => format!("cycle {cycle} prepared"),
                    other => other.to_string(),
                };
                let mut text = format!(
                    "{addr}: up, {doing} · tokengun-agent {} · id {} · host {} · max {} concurrent · {last_seq} records so far\n  clock: read to ±{:.2} ms (lowest of 8 round trips {:.2} ms)\n  capabilities: {}\n",
                    info.version,
                    info.agent_id,
                    info.hostname,
                    info.max_concurrency,
                    clock.rtt.as_secs_f64() * 1e3 / 2.0,
                    clock.rtt.as_secs_f64() * 1e3,
                    info.capabilities.join(", ")
                );
                for s in &probe.sources {
                    text.push_str(&format!(
                        "  {:<13} {:<11} {}\n",
                        s.source,
                        if s.available { "found" } else { "unavailable" },
                        s.detail
                    ));
                }
                for w in &probe.watching {
                    text.push_str(&format!("  watching: {w}\n"));
                }
                console::write_stdout(&text);
            }
            Err(e) => {
                console::write_stdout(&format!("{addr}: down · {e}\n"));
                code = 1;
            }
        }
    }
    code
}

/// The live console on a terminal; plain lines for logs, pipes, --no-tui and --quiet.
fn console_for(no_tui: bool, quiet: bool, stop: &CancellationToken) -> Console {
    if !no_tui && !quiet && std::io::stdout().is_terminal() {
        Console::live(stop.clone())
    } else {
        Console::new(quiet)
    }
}

/// Restores the terminal, writes the report, says where the results are, and picks the exit code.
async fn finish_run(
    mut console: Console,
    result: Result<orchestrator::RunReport, RunError>,
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
                RunError::Plan(_) | RunError::AboveAgentLimit { .. } => 2,
                RunError::Interrupted => EXIT_INTERRUPTED,
                _ => 1,
            }
        }
    }
}
