//! Replays real llama-server captures (bytes and receive timing, agent/tests/fixtures/llama-server)
//! from a local socket and checks that tokengun's records reproduce what they contain: the
//! tokens, the usage, the server's timings, and TTFT at the instant the first token was sent.
//! No server build needed: this runs in every CI run.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokengun_common::Api;
use tokengun_tests::{breakdown_sum, f, read_csv, read_run_json, run, run_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/fixtures/llama-server")
}

/// A capture: the response bytes cut as they were received, each piece with its instant (ms
/// after the request was sent).
struct Capture {
    pieces: Vec<(f64, Vec<u8>)>,
}

fn load(name: &str, timing: &serde_json::Value) -> Capture {
    let raw = std::fs::read(fixtures().join(format!("{name}.http"))).unwrap();
    let mut pieces = Vec::new();
    let mut at = 0;
    for step in timing[name]["recv_ms_and_bytes"].as_array().unwrap() {
        let (ms, n) = (
            step[0].as_f64().unwrap(),
            step[1].as_u64().unwrap() as usize,
        );
        pieces.push((ms, raw[at..at + n].to_vec()));
        at += n;
    }
    assert_eq!(at, raw.len(), "{name}: the timing covers every byte");
    Capture { pieces }
}

/// Reads one request (head and Content-Length body); its method and path, None at EOF.
async fn read_request(s: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    let mut first = head.lines().next()?.split_whitespace();
    Some((first.next()?.to_string(), first.next()?.to_string()))
}

/// Serves `routes` (path -> capture) on 127.0.0.1 with the captures' timing; anything else is a
/// 404 that closes the connection.
async fn replay(routes: HashMap<&'static str, Capture>) -> String {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port on 127.0.0.1");
    let url = format!("http://{}", l.local_addr().expect("its address"));
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let routes = routes.clone();
            tokio::spawn(async move {
                s.set_nodelay(true).ok();
                while let Some((_, path)) = read_request(&mut s).await {
                    let t0 = tokio::time::Instant::now();
                    let Some(c) = routes.get(path.as_str()) else {
                        let _ = s
                            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .await;
                        return;
                    };
                    for (ms, bytes) in &c.pieces {
                        tokio::time::sleep_until(t0 + Duration::from_secs_f64(ms / 1e3)).await;
                        if s.write_all(bytes).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    url
}

/// One capture replayed, and what its records must say.
struct Case {
    api: Api,
    capture: &'static str,
    /// The server's count, the stream's, and their agreement.
    tokens: &'static str,
    counted: &'static str,
    agreement: &'static str,
    prompt_tokens: &'static str,
    cached_tokens: &'static str,
    /// The server's `timings`, ms.
    prompt_ms: f64,
    predicted_ms: f64,
    /// When the first content event was received in the capture, ms after the request.
    first_token_ms: f64,
}

const CASES: [Case; 5] = [
    Case {
        api: Api::OpenaiCompletions,
        capture: "completions-stream-usage",
        tokens: "16",
        counted: "16",
        agreement: "exact",
        prompt_tokens: "4",
        cached_tokens: "0",
        prompt_ms: 19.095,
        predicted_ms: 139.192,
        first_token_ms: 25.12,
    },
    Case {
        api: Api::OpenaiChat,
        capture: "chat-stream-usage",
        tokens: "10",
        counted: "9",
        agreement: "end-token",
        prompt_tokens: "37",
        cached_tokens: "0",
        prompt_ms: 128.153,
        predicted_ms: 88.072,
        first_token_ms: 132.333,
    },
    // No usage: the count is timings.predicted_n; 36 of the prompt's tokens came from the cache.
    Case {
        api: Api::OpenaiChat,
        capture: "chat-stream-no-usage",
        tokens: "10",
        counted: "9",
        agreement: "end-token",
        prompt_tokens: "",
        cached_tokens: "36",
        prompt_ms: 8.968,
        predicted_ms: 79.709,
        first_token_ms: 16.008,
    },
    // Asked without stream_options, llama.cpp's completions still close with usage; 3 of the
    // prompt's 4 tokens were cached.
    Case {
        api: Api::OpenaiCompletions,
        capture: "completions-stream-no-usage",
        tokens: "16",
        counted: "16",
        agreement: "exact",
        prompt_tokens: "4",
        cached_tokens: "3",
        prompt_ms: 12.285,
        predicted_ms: 140.615,
        first_token_ms: 14.92,
    },
    // Stopped by max_tokens (finish "length"): no end token, so the counts are equal.
    Case {
        api: Api::OpenaiChat,
        capture: "chat-stream-usage-length",
        tokens: "16",
        counted: "16",
        agreement: "exact",
        prompt_tokens: "37",
        cached_tokens: "0",
        prompt_ms: 122.617,
        predicted_ms: 114.542,
        first_token_ms: 125.265,
    },
];

/// The one request_summary.csv row of a one-request run.
fn only_row(run_dir: &Path) -> HashMap<String, String> {
    let model_dir = std::fs::read_dir(run_dir.join("openai"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let rows = read_csv(&model_dir.join("test_results_1/request_summary.csv"));
    assert_eq!(rows.len(), 1);
    rows.into_iter().next().unwrap()
}

fn check(case: &Case, r: &HashMap<String, String>) {
    let name = case.capture;
    assert_eq!(r["TokenCount"], case.tokens, "{name}");
    assert_eq!(r["CountedTokens"], case.counted, "{name}");
    assert_eq!(r["TokenSource"], "server", "{name}");
    assert_eq!(r["TokenAgreement"], case.agreement, "{name}");
    assert_eq!(r["PromptTokens"], case.prompt_tokens, "{name}");
    assert_eq!(r["ServerCachedTokens"], case.cached_tokens, "{name}");
    assert!((f(r, "ServerPromptEvalDuration") - case.prompt_ms / 1e3).abs() < 1e-6);
    assert!((f(r, "ServerEvalDuration") - case.predicted_ms / 1e3).abs() < 1e-6);
    // TTFT is the first content event's instant, give or take the local socket and timers.
    let ttft_ms = f(r, "TTFT") * 1e3;
    assert!(
        ttft_ms >= case.first_token_ms - 1.0 && ttft_ms < case.first_token_ms + 40.0,
        "{name}: TTFT {ttft_ms} ms, the capture's first token at {} ms",
        case.first_token_ms
    );
    let parts = breakdown_sum(r);
    assert!((parts - f(r, "TotalDuration")).abs() < 1e-5, "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_llama_server_captures_reproduce_tokens_usage_and_timings() {
    let timing: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("recv-timing.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for case in &CASES {
        let path = match case.api {
            Api::OpenaiChat => "/v1/chat/completions",
            _ => "/v1/completions",
        };
        let url = replay(HashMap::from([
            ("/v1/models", load("models", &timing)),
            (path, load(case.capture, &timing)),
        ]))
        .await;
        let mut cfg = run_config(&url, "smollm2", &[1], dir.path());
        cfg.api = Some(case.api);
        cfg.run_id = Some(case.capture.into());
        let ran = run(cfg)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.capture));
        let c = &ran.cycles[0];
        assert_eq!((c.completed, c.failed), (1, 0), "{}", c.errors_by_kind);
        check(case, &only_row(&ran.run_dir));
        let a = c.server_account.expect("a server account");
        assert_eq!(a.token_mismatch, 0, "{}: {a:?}", case.capture);
        // The replayed server has no /metrics: said once in run.json, not an error.
        let doc = read_run_json(&ran.run_dir);
        let notes: Vec<&str> = doc["notes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n.as_str())
            .filter(|n| n.starts_with("server metrics: none"))
            .collect();
        assert_eq!(notes.len(), 1, "{:?}", doc["notes"]);
        assert!(notes[0].contains("/metrics answered HTTP 404"), "{notes:?}");
        assert!(!ran.run_dir.join("server_metrics.csv").exists());
    }
}
