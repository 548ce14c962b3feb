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

fn generate_body(prompt: &str) -> String {
    format!(r#"{{"model":"deepseek-r1:7b","prompt":"{prompt}"}}"#)
}

#[tokio::test]
async fn a_later_prefill_does_not_delay_an_earlier_first_token() {
    let mut cfg = SimConfig::fixed(Duration::ZERO, Duration::from_millis(1), 3, 4);
    cfg.engine.prefill_stalls = true;
    cfg.engine.prefill_per_token = Duration::from_millis(1);
    let h = SimHandle::start("127.0.0.1:0", cfg).await.unwrap();
    let addr = h.addr();
    // 400 characters: about 100 prompt tokens, 100 ms of prefill each.
    let (pa, pb) = ("a".repeat(400), "b".repeat(400));
    let body_a = generate_body(&pa);
    let a = exchange(addr, "POST", "/api/generate", &body_a);
    let b = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        exchange(addr, "POST", "/api/generate", &generate_body(&pb)).await
    };
    let ((ta, _), (tb, _)) = tokio::join!(a, b);
    assert!(
        ta >= Duration::from_millis(100) && ta < Duration::from_millis(160),
        "A's own prefill: {ta:?}"
    );
    // B's prefill runs after A's, as one engine runs one step at a time.
    assert!(
        tb >= Duration::from_millis(160),
        "B waits for A's prefill, then its own: {tb:?}"
    );
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_model_loads_cold_and_again_after_keep_alive() {
    let mut cfg = SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(1), 3, 1);
    cfg.engine.load_time = Duration::from_millis(200);
    cfg.engine.keep_alive = Duration::from_millis(300);
    let h = SimHandle::start("127.0.0.1:0", cfg).await.unwrap();
    let load = |text: &str| -> u64 {
        let last = text.lines().rfind(|l| l.starts_with('{')).unwrap();
        serde_json::from_str::<serde_json::Value>(last).unwrap()["load_duration"]
            .as_u64()
            .unwrap()
    };
    let (t1, r1) = exchange(h.addr(), "POST", "/api/generate", &generate_body("x")).await;
    assert!(
        t1 >= Duration::from_millis(200) && load(&r1) >= 200_000_000,
        "cold: {t1:?}"
    );
    let (t2, r2) = exchange(h.addr(), "POST", "/api/generate", &generate_body("x")).await;
    assert!(
        t2 < Duration::from_millis(100) && load(&r2) < 50_000_000,
        "warm: {t2:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (t3, _) = exchange(h.addr(), "POST", "/api/generate", &generate_body("x")).await;
    assert!(
        t3 >= Duration::from_millis(200),
        "reloaded after keep-alive: {t3:?}"
    );
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_client_that_gives_up_leaves_the_queue() {
    let cfg = SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(10), 50, 1);
    let h = SimHandle::start("127.0.0.1:0", cfg).await.unwrap();
    let addr = h.addr();
    let body_a = generate_body("a");
    let a = exchange(addr, "POST", "/api/generate", &body_a);
    let b = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        // B queues behind A, then hangs up.
        let _ = tokio::time::timeout(
            Duration::from_millis(50),
            exchange(addr, "POST", "/api/generate", &generate_body("b")),
        )
        .await;
    };
    let c = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        exchange(addr, "POST", "/api/generate", &generate_body("c")).await
    };
    let (_, (), (tc, _)) = tokio::join!(a, b, c);
    // A holds the slot ~0.5 s; C gets it next. Had B's place been kept, C would wait ~0.5 s more.
    assert!(tc < Duration::from_millis(700), "C waited {tc:?}");
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_slow_first_byte_fault() {
    let mut cfg = SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(1), 3, 1);
    cfg.faults.slow_first_every = 2;
    cfg.faults.slow_first_by = Duration::from_millis(300);
    let h = SimHandle::start("127.0.0.1:0", cfg).await.unwrap();
    let (t1, _) = exchange(h.addr(), "POST", "/api/generate", &generate_body("x")).await;
    let (t2, _) = exchange(h.addr(), "POST", "/api/generate", &generate_body("x")).await;
    assert!(
        t1 < Duration::from_millis(200) && t2 >= Duration::from_millis(300),
        "{t1:?} {t2:?}"
    );
    h.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_truth_is_served_on_the_machines_monotonic_clock_only_when_recorded() {
    let h = SimHandle::start(
        "127.0.0.1:0",
        SimConfig {
            record_truth: true,
            ..sim(20, 3)
        },
    )
    .await
    .unwrap();
    let before = tokengun_simulator::monotonic_ns(std::time::Instant::now());
    let (_, text) = exchange(
        h.addr(),
        "POST",
        "/api/generate",
        r#"{"model":"deepseek-r1:7b","prompt":"What is time?"}"#,
    )
    .await;
    assert!(text.contains("\"done\":true"), "{text}");
    let after = tokengun_simulator::monotonic_ns(std::time::Instant::now());
    let (_, text) = exchange(h.addr(), "GET", "/tokengun/truth", "").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let export: tokengun_simulator::TruthExport = serde_json::from_str(body).unwrap();
    assert_eq!(export.requests.len(), 1, "{body}");
    let t = &export.requests[0];
    assert_eq!(t.token_ns.len(), 3);
    // The request's instants, mapped onto the monotonic clock, fall inside the exchange, and the
    // first token is 20 ms after arrival as configured.
    let arrived = export.epoch_monotonic_ns + t.arrived_ns;
    let last = export.epoch_monotonic_ns + t.token_ns[2];
    assert!(
        before <= arrived && last <= after,
        "{before} <= {arrived} .. {last} <= {after}"
    );
    let ttft_ms = (t.token_ns[0] - t.arrived_ns) as f64 / 1e6;
    assert!((20.0..40.0).contains(&ttft_ms), "server TTFT {ttft_ms} ms");
    // The same mapping in this process agrees with the simulator's own epoch.
    let here = tokengun_simulator::monotonic_ns(h.epoch().into_std());
    assert!(
        here.abs_diff(export.epoch_monotonic_ns) < 1_000_000,
        "epoch {here} here, {} served",
        export.epoch_monotonic_ns
    );
    h.stop(Duration::from_secs(1)).await;

    // Without recording there is nothing to serve.
    let h = SimHandle::start("127.0.0.1:0", sim(1, 1)).await.unwrap();
    let (_, text) = exchange(h.addr(), "GET", "/tokengun/truth", "").await;
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    h.stop(Duration::from_secs(1)).await;
}
