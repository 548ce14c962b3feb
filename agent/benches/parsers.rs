//! Benchmark: stream-parsing throughput of the agent's per-API parsers, on one core.
//!
//! `cargo bench -p tokengun-agent --bench parsers`
//!
//! Feeds a realistic stream (Ollama NDJSON lines as Ollama writes them; OpenAI SSE events as
//! llama.cpp writes them) through the agent's stream parser in 16 KiB reads and counts tokens per second
//! of CPU. This is the parsing part of the agent's per-token cost only: no sockets, no HTTP.

use std::hint::black_box;
use std::time::Instant;
use tokengun_agent::bench::Parser;
use tokengun_common::Api;

const TOKENS: usize = 2_000_000;

fn ollama_stream() -> Vec<u8> {
    let mut s = Vec::new();
    for i in 0..TOKENS {
        s.extend_from_slice(
            format!(
                "{{\"model\":\"deepseek-r1:7b\",\"created_at\":\"2026-08-21T18:00:03.{:06}Z\",\"response\":\" word\",\"done\":false}}\n",
                i % 1_000_000
            )
            .as_bytes(),
        );
    }
    s.extend_from_slice(b"{\"model\":\"deepseek-r1:7b\",\"created_at\":\"2026-08-21T18:00:09.9Z\",\"response\":\"\",\"done\":true,\"done_reason\":\"stop\",\"eval_count\":2000000}\n");
    s
}

fn openai_stream() -> Vec<u8> {
    let mut s = Vec::new();
    for _ in 0..TOKENS {
        s.extend_from_slice(b"data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\" word\"}}],\"created\":1795804970,\"id\":\"chatcmpl-iwqduvbEvewW3rzEkZ6Dhiuuib11CpJ0\",\"model\":\"smollm2\",\"system_fingerprint\":\"b0-unknown\",\"object\":\"chat.completion.chunk\"}\n\n");
    }
    s.extend_from_slice(b"data: [DONE]\n\n");
    s
}

fn run(name: &str, api: Api, stream: &[u8]) {
    let mut best = f64::INFINITY;
    let mut tokens = 0u64;
    for _ in 0..3 {
        let mut p = Parser::new(api);
        tokens = 0;
        let t0 = Instant::now();
        for chunk in stream.chunks(16 * 1024) {
            match p.feed(black_box(chunk)) {
                Ok(n) => tokens += n,
                Err(e) => panic!("parse failed: {e}"),
            }
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
    assert_eq!(tokens, TOKENS as u64);
    println!(
        "{name}: {:.2} M tokens/s, {:.0} MB/s ({} bytes/token, best of 3)",
        tokens as f64 / best / 1e6,
        stream.len() as f64 / best / 1e6,
        stream.len() / TOKENS
    );
}

fn main() {
    run("ollama ndjson", Api::OllamaGenerate, &ollama_stream());
    run("openai sse   ", Api::OpenaiChat, &openai_stream());
}
