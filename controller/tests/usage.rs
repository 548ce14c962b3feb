//! What a user sees through the `tokengun` binary, end to end against the built-in simulator:
//! short answers keep their rates and goodput, `export` gives every field of records.pb, shell
//! completions and the man page come from the CLI's own definitions.
#![allow(clippy::unwrap_used)]

mod common;
use common::{BIN, agent_bin, free_port, tokengun};

use std::path::{Path, PathBuf};
use std::process::Command;
use tokengun_common::record::{RecordBody, RequestRecord};
use tokengun_common::run_dir::read_cycles;

/// `tokengun run --sim` with `args` into a fresh folder; the run folder it made (and the folder
/// holding it, kept while the TempDir lives).
fn run_sim(args: &[&str]) -> (PathBuf, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let mut all = vec!["run", "--sim", "-q", "--out", out.path().to_str().unwrap()];
    all.extend_from_slice(args);
    let done = tokengun(&all);
    assert!(
        done.status.success(),
        "tokengun {all:?}: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let runs: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    (runs[0].clone(), out)
}

fn report_md(run: &Path) -> String {
    std::fs::read_to_string(run.join("report.md")).unwrap()
}

#[test]
fn short_answers_keep_their_rate_and_goodput() {
    // max_tokens = 8 at 4 ms a token: 28 ms from first to last token, under the 50 ms a long
    // stream's rate needs; every request meets a 10 tok/s and 2 s TTFT objective.
    let (run, _keep) = run_sim(&[
        "--levels",
        "1,4",
        "--max-tokens",
        "8",
        "--sim-ttft",
        "50ms",
        "--sim-token-delay",
        "4ms",
        "--slo-ttft",
        "2s",
    ]);
    let cycles = read_cycles(&run).unwrap();
    assert_eq!(cycles.len(), 2);
    for c in &cycles {
        assert_eq!(c.completed, c.requests, "{}", c.level);
        let rate = c.mean_request_tokens_per_s.unwrap_or_else(|| {
            panic!("level {}: no per-request rate for 8-token answers", c.level)
        });
        // 250 tok/s by the simulator's clock; a loaded 2-core machine reads gaps a little long.
        assert!((100.0..=400.0).contains(&rate), "level {}: {rate}", c.level);
        assert_eq!(c.unrated_requests, 0, "{}", c.level);
        assert_eq!(c.goodput_requests, c.requests, "level {}", c.level);
    }
    assert!(!report_md(&run).contains("no measurable decode rate"));
}

#[test]
fn one_token_answers_are_not_failed_for_a_rate_nobody_could_measure() {
    let (run, _keep) = run_sim(&["--levels", "2", "--max-tokens", "1", "--sim-ttft", "20ms"]);
    let cycles = read_cycles(&run).unwrap();
    let c = &cycles[0];
    assert_eq!((c.requests, c.completed), (2, 2));
    assert_eq!(c.mean_request_tokens_per_s, None);
    assert_eq!(c.unrated_requests, 2);
    // The rate limit (10 tok/s by default) could not be judged: no request fails it.
    assert_eq!(c.goodput_requests, 2);
    let md = report_md(&run);
    assert!(
        md.contains("2 of 2 completed requests had no measurable decode rate"),
        "{md}"
    );
}

/// The request records of records.pb, decoded directly: (agent, record), in file order.
fn stored_requests(run: &Path) -> Vec<(String, RequestRecord)> {
    tokengun_proto::stored::read_all(&run.join("records.pb"))
        .unwrap()
        .into_iter()
        .filter_map(|(agent, r)| match r.body {
            RecordBody::Request(r) => Some((agent, *r)),
            _ => None,
        })
        .collect()
}

fn export(run: &Path, args: &[&str]) -> String {
    let mut all = vec!["export", run.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = tokengun(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn export_round_trips_every_field_of_records_pb() {
    let (run, _keep) = run_sim(&[
        "--levels",
        "1,3",
        "--max-tokens",
        "6",
        "--sim-ttft",
        "20ms",
        "--sim-token-delay",
        "2ms",
        "--warmup",
        "50ms",
    ]);
    let stored = stored_requests(&run);
    assert!(stored.len() >= 4, "{}", stored.len());
    let jsonl = export(&run, &["--format", "jsonl", "--tokens"]);
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), stored.len());
    let levels: Vec<String> = read_cycles(&run)
        .unwrap()
        .into_iter()
        .map(|c| c.level)
        .collect();
    for (line, (agent, rec)) in lines.iter().zip(&stored) {
        // Every field of the record, timeline included, reads back into the same record.
        let back: RequestRecord = serde_json::from_value(line.clone()).unwrap();
        assert_eq!(&back, rec);
        assert_eq!(line["agent"], agent.as_str());
        let level = line["level"].as_str().unwrap();
        assert!(
            level == "warmup" || levels.iter().any(|l| l == level),
            "{level} not in {levels:?}"
        );
        assert!(line["cycle_started_unix_ns"].as_i64().unwrap() > 0);
        // Derived figures (floats: equal to the last digit JSON keeps).
        match (line["tokens_per_s"].as_f64(), rec.tokens_per_s()) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-9 * b, "{a} {b}"),
            (a, b) => assert_eq!(a, b),
        }
    }
    assert!(lines.iter().any(|l| l["level"] == "warmup"));
    // Without --tokens, everything but the timeline.
    let short: serde_json::Value =
        serde_json::from_str(export(&run, &[]).lines().next().unwrap()).unwrap();
    assert!(short.get("timeline").is_none() && short.get("end_ns").is_some());

    // CSV: one row per request, every JSON field a column with the same value.
    let csv_text = export(&run, &["--format", "csv", "--tokens"]);
    let mut r = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), stored.len());
    for (row, (line, (_, rec))) in rows.iter().zip(lines.iter().zip(&stored)) {
        let cell = |name: &str| {
            row.get(header.iter().position(|h| h == name).unwrap())
                .unwrap()
        };
        for (k, v) in line.as_object().unwrap() {
            match v {
                serde_json::Value::Object(inner) => {
                    for (ik, iv) in inner {
                        same_cell(cell(&format!("{k}_{ik}")), iv, &format!("{k}_{ik}"));
                    }
                }
                serde_json::Value::Array(_) => {}
                _ => same_cell(cell(k), v, k),
            }
        }
        let offsets: Vec<u64> = cell("timeline_offset_ns")
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let tokens: Vec<u32> = cell("timeline_tokens")
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let want: Vec<(u64, u32)> = rec
            .timeline
            .iter()
            .map(|c| (c.offset_ns, c.tokens))
            .collect();
        assert_eq!(offsets.into_iter().zip(tokens).collect::<Vec<_>>(), want);
    }
}

/// The CSV cell holds the JSON scalar: the same text, or for a float the same number (reading
/// JSON back may round its last digit).
fn same_cell(cell: &str, v: &serde_json::Value, name: &str) {
    match v.as_f64().filter(|_| v.is_f64()) {
        Some(x) => {
            let c: f64 = cell
                .parse()
                .unwrap_or_else(|e| panic!("{name}: {cell:?}: {e}"));
            assert!(
                (c - x).abs() <= 1e-12 * x.abs().max(1.0),
                "{name}: {cell} vs {x}"
            );
        }
        None => assert_eq!(cell, text(v), "{name}"),
    }
}

/// A JSON scalar as a CSV cell holds it.
fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn export_of_a_folder_without_records_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokengun(&["export", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("records.pb") && err.contains("run folder"),
        "{err}"
    );
}

/// One strictly parsed sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// A strict reader of the Prometheus text format (0.0.4) as tokengun writes it: every sample's
/// family has `# HELP` and `# TYPE` lines first, names and labels are well formed, values are
/// numbers, and a histogram's buckets rise to its `+Inf` bucket, which equals its `_count`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut typed: std::collections::HashMap<String, String> = Default::default();
    let mut samples = Vec::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(name_ok(name), "{line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("{line}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let l = l.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let labels = l
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                        assert!(name_ok(k), "{line}");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (n, labels)
            }
            None => (series, Vec::new()),
        };
        assert!(name_ok(name), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            typed.contains_key(family),
            "{name} has no # TYPE line before it"
        );
        samples.push((name.to_string(), labels, value));
    }
    // Histograms: buckets rise, +Inf = _count.
    for (family, _) in typed.iter().filter(|(_, k)| *k == "histogram") {
        let bucket = format!("{family}_bucket");
        let mut by_level: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        for (n, l, v) in &samples {
            if *n == bucket {
                let level = l.iter().find(|(k, _)| k == "level").unwrap().1.clone();
                by_level.entry(level).or_default().push(*v);
            }
        }
        for (level, counts) in by_level {
            assert!(
                counts.windows(2).all(|w| w[0] <= w[1]),
                "{family} {level}: {counts:?}"
            );
            let count = samples
                .iter()
                .find(|(n, l, _)| {
                    *n == format!("{family}_count") && l.iter().any(|(_, v)| *v == level)
                })
                .unwrap()
                .2;
            assert_eq!(counts.last().copied(), Some(count), "{family} {level}");
        }
    }
    samples
}

/// GET http://addr/path over a plain TCP connection: (status line, body).
fn http_get(addr: &str, path: &str, auth: Option<&str>) -> (String, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(c, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name && label.is_none_or(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|s| s.2)
}

#[test]
#[allow(clippy::disallowed_methods)] // a plain thread reading the child's stdout, no runtime here
fn metrics_are_scraped_over_http_while_a_run_goes_on() {
    use std::io::BufRead;
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--sim",
            "--no-tui",
            "--no-report",
            "--shape",
            "closed",
            "--levels",
            "2",
            "--duration",
            "4s",
            "--sim-ttft",
            "20ms",
            "--sim-token-delay",
            "5ms",
            "--sim-tokens",
            "40",
            "--metrics-listen",
            "127.0.0.1:0",
            "--out",
        ])
        .arg(out.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let addr = loop {
        let l = rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
        if let Some(url) = l.strip_prefix("metrics: http://") {
            break url.trim_end_matches("/metrics").to_string();
        }
    };
    // Scrape until the level has finished requests and some in flight (bounded: 8 s).
    let end = std::time::Instant::now() + std::time::Duration::from_secs(8);
    let (during, body) = loop {
        let (status, body) = http_get(&addr, "/metrics", None);
        assert!(status.contains("200"), "{status}");
        let s = parse_exposition(&body);
        let finished = value(
            &s,
            "tokengun_requests_finished_total",
            Some(("outcome", "completed")),
        );
        let in_flight = value(&s, "tokengun_requests_in_flight", None);
        if finished.is_some_and(|f| f > 0.0) && in_flight.is_some_and(|n| n > 0.0) {
            break (s, body);
        }
        assert!(
            std::time::Instant::now() < end,
            "no running figures: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(
        value(&during, "tokengun_level_info", Some(("level", "2"))),
        Some(1.0)
    );
    assert!(value(&during, "tokengun_ttft_seconds_count", Some(("level", "2"))).unwrap() > 0.0);
    assert!(value(&during, "tokengun_itl_seconds_count", Some(("level", "2"))).unwrap() > 0.0);
    // The in-process agent, by its loopback address.
    assert_eq!(value(&during, "tokengun_agent_connected", None), Some(1.0));
    assert!(value(&during, "tokengun_agent_last_record_age_seconds", None).unwrap() < 5.0);
    assert!(value(&during, "tokengun_output_tokens_total", None).unwrap() >= 40.0);
    let started = value(&during, "tokengun_requests_started_total", None).unwrap();
    assert!(started >= value(&during, "tokengun_requests_finished_total", None).unwrap());
    assert!(http_get(&addr, "/other", None).0.contains("404"));
    // The example Grafana dashboard asks only for series tokengun serves.
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/tokengun-dashboard.json"),
    )
    .unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut asked = 0;
    for (at, _) in dashboard.match_indices("tokengun_") {
        let name: String = dashboard[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            body.contains(&format!("\n{name}")) || body.contains(&format!("# TYPE {name} ")),
            "the dashboard asks for {name}"
        );
        asked += 1;
    }
    assert!(asked >= 10, "{asked}");
    // After the run the endpoint is gone with the process.
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
}

#[test]
fn metrics_beyond_loopback_need_a_token() {
    let out = tokengun(&["run", "--sim", "--metrics-listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--metrics-token-file") && err.contains("--metrics-insecure-no-auth"),
        "{err}"
    );
}

#[test]
fn an_agent_serves_its_own_metrics() {
    use std::io::BufRead;
    let spool = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut agent = Command::new(agent_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            &metrics,
            "--spool-dir",
        ])
        .arg(spool.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(agent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    let before = parse_exposition(&http_get(&metrics, "/metrics", None).1);
    assert_eq!(
        value(&before, "tokengun_requests_started_total", None),
        Some(0.0)
    );
    let (run, _keep) = run_sim(&["--agent", &addr, "--levels", "3", "--max-tokens", "5"]);
    assert_eq!(read_cycles(&run).unwrap()[0].completed, 3);
    let after = parse_exposition(&http_get(&metrics, "/metrics", None).1);
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(
        value(
            &after,
            "tokengun_requests_finished_total",
            Some(("outcome", "completed"))
        ),
        Some(3.0)
    );
    assert_eq!(
        value(&after, "tokengun_output_tokens_total", None),
        Some(15.0)
    );
    let cycle = after
        .iter()
        .find(|(n, _, _)| n == "tokengun_ttft_seconds_count")
        .unwrap();
    assert!(
        cycle.1[0].1.starts_with("cycle-") && cycle.2 == 3.0,
        "{cycle:?}"
    );
}

/// What bash's completion offers for the words typed so far, from the generated script.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let program = format!(
        "source {}; COMP_WORDS=({line}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; _tokengun tokengun \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words.len() - 1
    );
    let out = Command::new("bash")
        .args(["-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn completions_come_from_the_command_line_itself() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = tokengun(&["completions", shell]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("export") && text.contains("metrics-listen"),
            "{shell}"
        );
        std::fs::write(dir.path().join(shell), text).unwrap();
    }
    if Command::new("bash").arg("--version").output().is_ok() {
        let script = dir.path().join("bash");
        let subs = bash_completes(&script, &["tokengun", "ex"]);
        assert_eq!(subs, ["export"], "{subs:?}");
        let flags = bash_completes(&script, &["tokengun", "run", "--metrics-l"]);
        assert_eq!(flags, ["--metrics-listen"], "{flags:?}");
    }
    assert_eq!(tokengun(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn the_man_pages_cover_every_command() {
    let page = tokengun(&["man"]);
    assert!(page.status.success());
    let text = String::from_utf8(page.stdout).unwrap();
    assert!(
        text.contains(".TH tokengun 1") && text.contains("export"),
        "{text:.300}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = tokengun(&["man", "--out", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for cmd in [
        "run",
        "sim",
        "report",
        "compare",
        "agents",
        "resume",
        "export",
        "completions",
        "man",
    ] {
        let p = dir.path().join(format!("tokengun-{cmd}.1"));
        let page = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            page.contains(&format!(".TH tokengun-{cmd} 1")),
            "{page:.200}"
        );
    }
    let run = std::fs::read_to_string(dir.path().join("tokengun-run.1")).unwrap();
    assert!(
        run.contains("metrics\\-listen"),
        "the run page documents its flags"
    );
}

#[test]
#[allow(clippy::disallowed_methods)] // a plain thread reading the child's stdout, no runtime here
fn a_metrics_token_is_required_when_one_is_set() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-metrics-token-0123";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--sim",
            "--no-tui",
            "--no-report",
            "--shape",
            "closed",
            "--levels",
            "1",
            "--duration",
            "2s",
            "--metrics-listen",
            "127.0.0.1:0",
            "--metrics-token-file",
        ])
        .arg(&token_file)
        .arg("--out")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let l = lines.next().unwrap().unwrap();
        if let Some(url) = l.strip_prefix("metrics: http://") {
            break url.trim_end_matches("/metrics").to_string();
        }
    };
    let none = http_get(&addr, "/metrics", None);
    let wrong = http_get(&addr, "/metrics", Some("s3cret-metrics-token-0124"));
    let right = http_get(&addr, "/metrics", Some(token));
    std::thread::spawn(move || lines.for_each(drop));
    assert!(child.wait().unwrap().success());
    assert!(
        none.0.contains("401") && wrong.0.contains("401"),
        "{none:?} {wrong:?}"
    );
    assert!(right.0.contains("200"), "{right:?}");
    parse_exposition(&right.1);
}
