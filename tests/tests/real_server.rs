//! tokengun against a real llama.cpp `llama-server` (SmolLM2-135M), built offline by
//! `scripts/real-server.sh build`: every request's token count is the server's own, the
//! server's timings land in the records and the CSVs, the timing breakdown adds up, and the
//! server's Prometheus counters agree with what tokengun recorded.
//!
//! The server and model are looked up in the script's cache (or `TOKENGUN_LLAMA_SERVER` /
//! `TOKENGUN_LLAMA_MODEL`). Without them the test says how to build them and passes; under
//! `CI=true` it fails instead (`.ci/run` builds them first).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokengun::report::{self, ReportOptions};
use tokengun_common::Api;
use tokengun_tests::{breakdown_sum, f, read_csv, run, run_config};

/// One real server at a time: two llama-servers on 2 cores would time each other's levels.
/// (Events that carry several tokens come from text, not load: llama.cpp holds back a token that
/// ends inside a multi-byte character and sends it with the next; the UTF-8 test shows it.)
static ONE_SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The script's cache folder (scripts/real-server.sh).
fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    std::env::var_os("TOKENGUN_REAL_SERVER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| base.join("tokengun/llama-server-11434"))
}

/// The built server and the model, or why not.
fn server_and_model() -> Result<(PathBuf, PathBuf), String> {
    let cache = cache_dir();
    let server = std::env::var_os("TOKENGUN_LLAMA_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("bin/llama-server"));
    let model = std::env::var_os("TOKENGUN_LLAMA_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("model/SmolLM2-135M-Instruct.Q4_1.gguf"));
    for p in [&server, &model] {
        if !p.is_file() {
            return Err(format!(
                "{} is missing: run `scripts/real-server.sh build` once (10-12 min on 2 cores)",
                p.display()
            ));
        }
    }
    Ok((server, model))
}

/// The server and model; None (after saying why) when they are not built, a failure under
/// `CI=true`.
fn server_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    match server_and_model() {
        Ok(found) => Some(found),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true needs the real server: {why}")
        }
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}

/// A running llama-server, killed on drop.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// `GET path` on 127.0.0.1:`port` over HTTP/1.0: (status, body); None when nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

async fn start(server: &Path, model: &Path, slots: u32, dir: &Path) -> Server {
    let port = free_port();
    let log = dir.join("llama-server.log");
    let lib_dir = server.parent().expect("the server's folder");
    let child = Command::new(server)
        .args(["-m", &model.to_string_lossy(), "--alias", "smollm2"])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["-c", "4096", "-np", &slots.to_string(), "-t", "2"])
        .args(["--no-webui", "--metrics"])
        .env("LD_LIBRARY_PATH", lib_dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("server log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
    let s = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        if get(port, "/health").is_some_and(|(code, _)| code == 200) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "llama-server did not answer /health with 200 within 60 s; its log:\n{}",
        std::fs::read_to_string(&s.log).unwrap_or_default()
    );
}

/// A counter of the server's Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the server's /metrics:\n{text}"))
}

/// Every request_summary.csv row of a run, with its level folder's name.
fn request_rows(run_dir: &Path) -> Vec<(String, HashMap<String, String>)> {
    let mut rows = Vec::new();
    let mut stack = vec![run_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("run folder").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "request_summary.csv") {
                let level = d.file_name().unwrap().to_string_lossy().into_owned();
                rows.extend(read_csv(&p).into_iter().map(|r| (level.clone(), r)));
            }
        }
    }
    rows
}

/// server_metrics.csv holds the server's own gauges, scraped during the levels: at level 4 on 2
/// slots, requests running. (Its `requests_deferred` is read too, but its value not asserted: requests
/// beyond the server's HTTP threads wait before llama.cpp counts them, and a scrape itself waits
/// for a free HTTP thread, so what it reports under a burst depends on timing.)
fn check_server_metrics(run_dir: &Path, id: &str) {
    let rows = read_csv(&run_dir.join("server_metrics.csv"));
    let max = |metric: &str, cycle: &str| {
        rows.iter()
            .filter(|r| r["metric"] == metric && r["cycle"] == cycle)
            .map(|r| f(r, "value"))
            .fold(f64::NAN, f64::max)
    };
    let running = max("llamacpp:requests_processing", "4");
    assert!((1.0..=2.0).contains(&running), "{id}: {rows:?}");
    assert!(
        rows.iter()
            .any(|r| r["metric"] == "llamacpp:requests_deferred" && r["cycle"] == "4"),
        "{id}: the deferred gauge is read during level 4: {rows:?}"
    );
    assert!(rows.iter().all(|r| r["source"] == "prometheus"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_llama_server_counts_timings_and_breakdown_agree() {
    let _one = ONE_SERVER.lock().await;
    let Some((server, model)) = server_or_skip("the real-server test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Two slots, so level 4 queues half its requests: the breakdown must show it.
    let srv = start(&server, &model, 2, dir.path()).await;
    let port: u16 = srv.url.rsplit(':').next().unwrap().parse().unwrap();
    let mut recorded_tokens = 0.0;
    for (api, id) in [
        (Api::OpenaiCompletions, "completions"),
        (Api::OpenaiChat, "chat"),
    ] {
        let mut cfg = run_config(&srv.url, "smollm2", &[1, 4], dir.path());
        cfg.api = Some(api);
        cfg.run_id = Some(id.into());
        cfg.options.max_tokens = Some(24);
        // Every request runs to max_tokens (finish "length"), so counts must match exactly.
        cfg.extra_body_json = r#"{"ignore_eos": true}"#.into();
        cfg.request_timeout = Duration::from_secs(60);
        // Scrape the server's /metrics often enough to see a short level's queue.
        cfg.monitor.process_interval = Duration::from_millis(100);
        let ran = run(cfg).await.unwrap_or_else(|e| {
            panic!(
                "run against the real server failed: {e}\nserver log:\n{}",
                std::fs::read_to_string(&srv.log).unwrap_or_default()
            )
        });
        assert_eq!(ran.cycles.len(), 2, "{id}");
        for c in &ran.cycles {
            assert_eq!(c.failed, 0, "{id} level {}: {}", c.level, c.errors_by_kind);
            let a = c
                .server_account
                .unwrap_or_else(|| panic!("{id} level {}: no server account", c.level));
            assert_eq!(a.token_checked, c.completed, "{id} level {}", c.level);
            // The model may wander into multi-byte text (ignore_eos): those events carry the
            // tokens held back inside a character, and say so; nothing else may differ.
            assert_eq!(
                a.token_exact + a.token_utf8_merged,
                c.completed,
                "{id}: counts exact: {a:?}"
            );
            assert_eq!(a.token_mismatch, 0, "{id}: {a:?}");
            if a.token_utf8_merged == 0 {
                assert_eq!(a.tokens_per_chunk, Some(1.0), "{id}: a token per event");
            }
            assert_eq!(a.breakdown_requests, c.completed, "{id}");
            assert!(a.prefill_s_mean.unwrap() > 0.0 && a.decode_s_mean.unwrap() > 0.0);
            recorded_tokens += c.output_tokens as f64;
        }
        let (one, four) = (
            ran.cycles[0].server_account.unwrap(),
            ran.cycles[1].server_account.unwrap(),
        );
        assert!(
            four.queue_s_mean.unwrap() > one.queue_s_mean.unwrap() + 0.05,
            "{id}: level 4 on 2 slots must queue: {one:?} vs {four:?}"
        );

        let rows = request_rows(&ran.run_dir);
        assert_eq!(rows.len(), 5, "{id}: 1 + 4 requests");
        for (level, r) in &rows {
            assert_eq!(r["Status"], "Completed", "{id} {level}: {r:?}");
            assert_eq!(r["TokenCount"], "24", "{id} {level}");
            assert_eq!(r["TokenSource"], "server");
            assert!(
                ["exact", "utf8-merged"].contains(&r["TokenAgreement"].as_str()),
                "{id} {level}: {r:?}"
            );
            assert!(f(r, "ServerPromptEvalDuration") > 0.0 && f(r, "ServerEvalDuration") > 0.0);
            assert!(f(r, "ServerPromptEvalTokens") >= 1.0);
            let parts = breakdown_sum(r);
            assert!(
                (parts - f(r, "TotalDuration")).abs() < 1e-5,
                "{id} {level}: parts {parts} vs E2E {}",
                f(r, "TotalDuration")
            );
        }

        check_server_metrics(&ran.run_dir, id);
        let written = report::report(&ran.run_dir, None, &ReportOptions::default()).unwrap();
        assert!(
            written.charts.iter().any(|c| c.ends_with("breakdown.png")),
            "{id}: the report has the breakdown chart"
        );
        let md = std::fs::read_to_string(&written.markdown).unwrap();
        assert!(
            md.contains("the server's own count agrees with the tokens seen in the stream for all 5 requests"),
            "{id}: report.md states the token agreement:\n{md}"
        );
    }
    // The server's own counters: every token it generated is one tokengun recorded.
    let (code, text) = get(port, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    assert_eq!(
        metric(&text, "llamacpp:tokens_predicted_total"),
        recorded_tokens
    );
}

/// A plan that owns a real llama-server: the agent starts it with `-np 1`, then `-np 4`, checks
/// each healthy (llama.cpp answers 503 while it loads the model), stops it with SIGTERM, and
/// the slots setting shows in the queueing of a burst of four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_starts_a_real_llama_server_per_setting() {
    let _one = ONE_SERVER.lock().await;
    let Some((server, model)) = server_or_skip("the managed real-server test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let plan = format!(
        r#"target = "http://127.0.0.1:{port}"
api = "openai-completions"
model = "smollm2"
levels = [4]
max_tokens = 16
extra_json = '{{"ignore_eos": true}}'
monitor = false
run_id = "managed"
out = "{out}"
[server]
command = "{server}"
args = ["-m", "{model}", "--alias", "smollm2", "--host", "127.0.0.1", "--port", "{port}",
        "-c", "2048", "-t", "2", "--no-webui", "-np", ["1", "4"]]
health_timeout = "60s"
"#,
        out = dir.path().display(),
        server = server.display(),
        model = model.display()
    );
    let path = dir.path().join("plan.toml");
    std::fs::write(&path, plan).unwrap();
    let cfg = tokengun::plan::PlanFile::load(&path)
        .unwrap()
        .compile(None)
        .unwrap();
    let ran = run(cfg).await.unwrap();
    let cycles = read_csv(&ran.run_dir.join("cycles.csv"));
    let settings: Vec<&str> = cycles.iter().map(|r| r["setting"].as_str()).collect();
    assert_eq!(settings, ["-np 1", "-np 4"]);
    assert!(cycles.iter().all(|r| r["failed"] == "0"), "{cycles:?}");
    // One slot serves the burst one by one: its last first token waits for three answers (each
    // about the server's mean decode time), which four slots do not.
    let (one, four) = (f(&cycles[0], "ttft_p99_s"), f(&cycles[1], "ttft_p99_s"));
    let decode_s = f(&cycles[0], "decode_s_mean");
    assert!(
        one > 2.0 * decode_s && one > four,
        "-np 1 TTFT p99 {one} s (decode {decode_s} s a request) vs -np 4 {four} s"
    );
    let run_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ran.run_dir.join("run.json")).unwrap())
            .unwrap();
    for g in run_json["groups"].as_array().unwrap() {
        let s = &g["server"];
        assert_eq!(s["command"], server.to_string_lossy().as_ref());
        assert!(s["stopped"].as_str().unwrap().contains("SIGTERM"), "{s}");
        assert!(s["ready_s"].as_f64().unwrap() > 0.0, "{s}");
    }
    assert!(get(port, "/health").is_none(), "the server was stopped");
}

/// Text of multi-byte characters: a grammar makes the real server write only crabs (U+1F980,
/// 4 bytes, 3 SmolLM2 tokens each). llama.cpp sends a token that ends inside a character with the
/// next, so 24 tokens arrive in 8 events: tokengun takes the server's count, says `utf8-merged`,
/// places the held tokens at their events (ITL per token) and never calls it a mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_held_inside_multibyte_characters_are_counted_at_their_events() {
    let _one = ONE_SERVER.lock().await;
    let Some((server, model)) = server_or_skip("the real-server UTF-8 test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = start(&server, &model, 2, dir.path()).await;
    let mut cfg = run_config(&srv.url, "smollm2", &[2], dir.path());
    cfg.api = Some(Api::OpenaiCompletions);
    cfg.run_id = Some("utf8".into());
    cfg.options.max_tokens = Some(24);
    cfg.extra_body_json = r#"{"ignore_eos": true, "grammar": "root ::= \"\ud83e\udd80\"+"}"#.into();
    cfg.request_timeout = Duration::from_secs(60);
    let ran = run(cfg).await.unwrap();
    let c = ran.cycles.last().unwrap();
    assert_eq!(c.failed, 0, "{}", c.errors_by_kind);
    let a = c.server_account.unwrap();
    assert_eq!(
        (a.token_checked, a.token_utf8_merged, a.token_mismatch),
        (c.completed, c.completed, 0),
        "{a:?}"
    );
    assert!(a.tokens_per_chunk.unwrap() > 2.0, "{a:?}");
    assert_eq!(c.output_tokens, 24 * u64::from(c.completed));
    for (level, r) in request_rows(&ran.run_dir) {
        assert_eq!(r["TokenAgreement"], "utf8-merged", "{level}: {r:?}");
        assert_eq!(r["TokenCount"], "24", "{level}");
    }
    // Each request's timeline: fewer rows than tokens, the held tokens at their events.
    let mut timelines = 0;
    let mut stack = vec![ran.run_dir.clone()];
    while let Some(d) = stack.pop() {
        for p in std::fs::read_dir(&d).unwrap().flatten().map(|e| e.path()) {
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with("_throughput.csv") {
                let rows = read_csv(&p);
                assert!(
                    !rows.is_empty() && rows.len() < 24,
                    "{}: {rows:?}",
                    p.display()
                );
                assert_eq!(rows.last().unwrap()["TokenCount"], "24");
                assert!(rows.iter().any(|r| f(r, "ChunkTokens") > 1.0));
                timelines += 1;
            }
        }
    }
    assert!(
        timelines >= c.completed,
        "a timeline per request: {timelines}"
    );
    let md = std::fs::read_to_string(
        report::report(&ran.run_dir, None, &ReportOptions::default())
            .unwrap()
            .markdown,
    )
    .unwrap();
    assert!(
        md.contains("had tokens held back inside a multi-byte character"),
        "report.md explains the events:\n{md}"
    );
}
