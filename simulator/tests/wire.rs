//! The simulator on the wire, read with a raw TCP client: Ollama's shapes, texts and timing.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use tokengun_simulator::{SimConfig, SimHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one HTTP/1.1 request and returns (time to the first response byte, whole response text).
async fn exchange(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (Duration, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let t0 = Instant::now();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await.unwrap();
    let ttfb = t0.elapsed();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    let mut all = first.to_vec();
    all.extend(rest);
    (ttfb, String::from_utf8(all).unwrap())
}

fn sim(ttft_ms: u64, tokens: u32) -> SimConfig {
    SimConfig::fixed(
        Duration::from_millis(ttft_ms),
        Duration::from_millis(1),
        tokens,
        1,
    )
}

#[tokio::test]
async fn no_header_before_the_first_token_then_ndjson_with_ollamas_final_fields() {
    let h = SimHandle::start("127.0.0.1:0", sim(300, 5)).await.unwrap();
    let (ttfb, text) = exchange(
        h.addr(),
        "POST",
        "/api/generate",
        r#"{"model":"deepseek-r1:7b","prompt":"What is time?"}"#,
    )
    .await;
    assert!(
        ttfb >= Duration::from_millis(300),
        "headers came after {ttfb:?}, before the first token"
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("content-type: application/x-ndjson"),
        "{text}"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "5 tokens and the final line: {text}");
    assert!(
        lines[..5]
            .iter()
            .all(|l| l["done"] == false && l["response"] != "")
    );
    let last = &lines[5];
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["eval_count"], 5);
    for field in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_duration",
    ] {
        assert!(
            last[field].as_u64().is_some_and(|v| v > 0),
            "{field} in {last}"
        );
    }
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn stream_false_num_predict_and_errors() {
    let h = SimHandle::start("127.0.0.1:0", sim(10, 8)).await.unwrap();
    let (_, text) = exchange(
        h.addr(),
        "POST",
        "/api/generate",
        r#"{"model":"deepseek-r1:7b","prompt":"x","stream":false,"options":{"num_predict":3}}"#,
    )
    .await;
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["eval_count"], 3);
    assert_eq!(v["done_reason"], "length");
    assert_eq!(v["response"], "Time is the");

    let (_, text) = exchange(
        h.addr(),
        "POST",
        "/api/generate",
        r#"{"model":"llama9","prompt":"x"}"#,
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    assert!(
        text.ends_with(r#"{"error":"model 'llama9' not found"}"#),
        "{text}"
    );

    let (_, text) = exchange(h.addr(), "GET", "/api/tags", "").await;
    assert!(text.contains(r#""name":"deepseek-r1:7b""#), "{text}");
    let (_, text) = exchange(h.addr(), "GET", "/api/version", "").await;
    assert!(text.contains(r#""version":"#), "{text}");
    h.stop(Duration::from_secs(1)).await;
}
