//! Benchmark: how many tokens per second the `firehose` profile streams on this machine.
//!
//! `cargo run --release -p tokengun-simulator --example firehose [SECONDS] [CLIENTS]`
//!
//! Clients are raw HTTP/1.0 connections (close-delimited bodies, no chunk framing), so every
//! `\n` read is one NDJSON line, one token, and the client costs as little as possible. Server and
//! clients share this machine's cores: the figure is a floor for the simulator alone.

use std::time::{Duration, Instant};
use tokengun_simulator::{SimConfig, SimHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map_or(Ok(5), |s| s.parse())?;
    let clients: usize = args.next().map_or(Ok(8), |s| s.parse())?;
    let cfg = SimConfig::profile("firehose").ok_or("no firehose profile")?;
    let sim = SimHandle::start("127.0.0.1:0", cfg).await?;
    let addr = sim.addr();
    let body = r#"{"model":"deepseek-r1:7b","prompt":"What is time?","stream":true}"#;
    let request = format!(
        "POST /api/generate HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let end = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lines, mut bytes, mut requests) = (0u64, 0u64, 0u64);
            let mut buf = vec![0u8; 256 * 1024];
            while Instant::now() < end {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                s.write_all(request.as_bytes()).await?;
                loop {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    bytes += n as u64;
                    lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                }
                requests += 1;
            }
            Ok::<_, std::io::Error>((lines, bytes, requests))
        }));
    }
    let (mut lines, mut bytes, mut requests) = (0, 0, 0);
    for t in tasks {
        let (l, b, r) = t.await??;
        lines += l;
        bytes += b;
        requests += r;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Each response is its header block (a few lines) plus 1000 token lines and one final line.
    let tokens = lines.saturating_sub(requests * 7);
    println!(
        "firehose: {clients} clients, {elapsed:.1} s: {requests} requests, ~{tokens} tokens, {:.0} tokens/s, {:.1} MB/s",
        tokens as f64 / elapsed,
        bytes as f64 / elapsed / 1e6
    );
    sim.stop(Duration::from_secs(1)).await;
    Ok(())
}
