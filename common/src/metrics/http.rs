//! The `--metrics-listen` endpoint: `GET /metrics` answers [`Metrics::render`], anything else
//! 404. Loopback is served as is; any other address needs a bearer token (the agent's gRPC port
//! rule: authenticate, or say `--insecure-no-auth` explicitly).
//!
//! One request per connection, a bounded request head (8 KiB) read within 10 s: a scraper
//! cannot hold the server, and nothing here can slow the load.

use super::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head read.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// A connection that has not sent its head by then is closed.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A token shorter than this is refused (as the agent's `--token-file`).
pub const MIN_TOKEN_CHARS: usize = 16;

/// Who may scrape.
#[derive(Debug, Clone)]
pub enum Access {
    /// Anyone who reaches the address (loopback, or `--insecure-no-auth` said so).
    Open,
    /// Requests must carry `Authorization: Bearer <token>`.
    Token(Vec<u8>),
}

/// The endpoint could not be set up.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    #[error(
        "--metrics-listen {0} is not loopback: pass a bearer token (--metrics-token-file FILE, at least 16 characters; Prometheus sends it with `authorization: {{credentials_file: FILE}}`) or --metrics-insecure-no-auth"
    )]
    Unauthenticated(SocketAddr),
    #[error("the metrics token is shorter than {MIN_TOKEN_CHARS} characters: use a longer one")]
    ShortToken,
    #[error("--metrics-insecure-no-auth contradicts a metrics token: drop one or the other")]
    Contradiction,
}

impl Access {
    /// The access rule for `listen`: loopback is open; elsewhere a token, or an explicit
    /// `insecure` (never both).
    pub fn for_listen(
        listen: SocketAddr,
        token: Option<&str>,
        insecure: bool,
    ) -> Result<Self, MetricsError> {
        let token = token.map(str::trim);
        if let Some(t) = token {
            if t.chars().count() < MIN_TOKEN_CHARS {
                return Err(MetricsError::ShortToken);
            }
            if insecure {
                return Err(MetricsError::Contradiction);
            }
            return Ok(Access::Token(t.as_bytes().to_vec()));
        }
        if listen.ip().is_loopback() || insecure {
            return Ok(Access::Open);
        }
        Err(MetricsError::Unauthenticated(listen))
    }

    fn allows(&self, head: &str) -> bool {
        let Access::Token(want) = self else {
            return true;
        };
        head.lines().any(|l| {
            let Some((name, value)) = l.split_once(':') else {
                return false;
            };
            let Some(given) = value.trim().strip_prefix("Bearer ") else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("authorization") && same(given.trim().as_bytes(), want)
        })
    }
}

/// Constant-time for a given length: a wrong guess learns nothing from timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves `metrics` on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    access: Access,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((conn, _)) = accepted else { continue };
                let (m, a) = (metrics.clone(), access.clone());
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(HEAD_TIMEOUT, answer(conn, &m, &a)).await;
                });
            }
        }
    }
}

/// Reads one request head and answers it.
async fn answer(mut conn: TcpStream, metrics: &Metrics, access: &Access) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_HEAD_BYTES {
            return reply(&mut conn, "431 Request Header Fields Too Large", "", "").await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if !access.allows(&head) {
        return reply(
            &mut conn,
            "401 Unauthorized",
            "WWW-Authenticate: Bearer\r\n",
            "a bearer token is required\n",
        )
        .await;
    }
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = metrics.render();
            reply(
                &mut conn,
                "200 OK",
                "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n",
                &body,
            )
            .await
        }
        ("GET", _) => reply(&mut conn, "404 Not Found", "", "try /metrics\n").await,
        _ => reply(&mut conn, "405 Method Not Allowed", "Allow: GET\r\n", "").await,
    }
}

async fn reply(
    conn: &mut TcpStream,
    status: &str,
    headers: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_goes_without_a_token() {
        let lo: SocketAddr = "127.0.0.1:9464".parse().unwrap_or_else(|_| unreachable!());
        let any: SocketAddr = "0.0.0.0:9464".parse().unwrap_or_else(|_| unreachable!());
        assert!(matches!(
            Access::for_listen(lo, None, false),
            Ok(Access::Open)
        ));
        assert_eq!(
            Access::for_listen(any, None, false).err(),
            Some(MetricsError::Unauthenticated(any))
        );
        assert!(matches!(
            Access::for_listen(any, None, true),
            Ok(Access::Open)
        ));
        assert_eq!(
            Access::for_listen(any, Some("short"), false).err(),
            Some(MetricsError::ShortToken)
        );
        let t = "0123456789abcdef0123";
        assert_eq!(
            Access::for_listen(any, Some(t), true).err(),
            Some(MetricsError::Contradiction)
        );
        let a = Access::for_listen(any, Some(t), false).unwrap_or(Access::Open);
        assert!(a.allows(&format!(
            "GET /metrics HTTP/1.1\r\nauthorization: Bearer {t}\r\n"
        )));
        assert!(
            !a.allows("GET /metrics HTTP/1.1\r\nAuthorization: Bearer 0123456789abcdef0124\r\n")
        );
        assert!(!a.allows("GET /metrics HTTP/1.1\r\n"));
    }
}
