//! The agent's HTTP/1.1 client (hyper): one shared connection pool, plus small JSON GET helpers.

use crate::allow::{CheckedConnector, TargetPolicy};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use tokengun_common::transport::root_cause;

/// The pooled client every request of an agent goes through; it connects only to addresses on the
/// agent's allow-list and never follows redirects.
pub type HttpClient = Client<CheckedConnector, Full<Bytes>>;

/// Largest error or probe body read into memory.
pub const MAX_SMALL_BODY: usize = 1024 * 1024;

/// Builds the client: allow-list checked on every connection, no Nagle delay (token chunks are
/// tiny), a connect timeout, keep-alive pool.
pub fn client(connect_timeout: Duration, targets: Arc<TargetPolicy>) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(CheckedConnector::new(targets, connect_timeout))
}

/// A probe GET failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} did not answer within {0:?}", timeout)]
    Timeout { url: String, timeout: Duration },
    #[error("invalid URL {0}")]
    BadUrl(String),
}

/// GETs `url` and returns the body (at most [`MAX_SMALL_BODY`] bytes) of a 2xx reply.
///
/// The GET is idempotent, so a connection the server closed under it (no keep-alive: uvicorn and
/// others under load close after each response, and a pooled connection can die while it is
/// reused) is retried once on a fresh connection, within the same `timeout`. A refused connect
/// is not retried. Load requests never come through here: a retried POST would count twice.
pub async fn get_small(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> Result<Bytes, GetError> {
    let uri: hyper::Uri = url.parse().map_err(|_| GetError::BadUrl(url.to_string()))?;
    let fut = async {
        match get_once(client, uri.clone(), url).await {
            Err((_, Retry::Yes)) => get_once(client, uri, url).await.map_err(|(e, _)| e),
            other => other.map_err(|(e, _)| e),
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| GetError::Timeout {
            url: url.to_string(),
            timeout,
        })?
}

/// Whether a failed GET may be sent again.
enum Retry {
    Yes,
    No,
}

/// One GET: the body of a 2xx reply, or the error and whether it is worth one more try.
async fn get_once(
    client: &HttpClient,
    uri: hyper::Uri,
    url: &str,
) -> Result<Bytes, (GetError, Retry)> {
    let unreachable = |reason: String| GetError::Unreachable {
        url: url.to_string(),
        reason,
    };
    let resp = client.get(uri).await.map_err(|e| {
        // A connect that failed says the same the second time; a connection that closed
        // before or during the reply may be a reused one the server had dropped.
        let retry = if e.is_connect() {
            Retry::No
        } else {
            Retry::Yes
        };
        (unreachable(root_cause(&e)), retry)
    })?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_SMALL_BODY)
        .collect()
        .await
        .map_err(|e| {
            // A body over the limit is the same body the second time.
            let retry = if e.is::<http_body_util::LengthLimitError>() {
                Retry::No
            } else {
                Retry::Yes
            };
            (unreachable(e.to_string()), retry)
        })?
        .to_bytes();
    if !status.is_success() {
        return Err((
            GetError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body)
                    .trim()
                    .chars()
                    .take(300)
                    .collect(),
            },
            Retry::No,
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allow::TargetPolicy;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one request head off `s`.
    async fn read_head(s: &mut tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut b = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).await.unwrap();
            assert!(n > 0, "client closed before its request was complete");
            buf.extend_from_slice(&b[..n]);
        }
    }

    #[tokio::test]
    async fn a_get_whose_connection_closes_under_it_is_retried_once() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/tags", l.local_addr().unwrap());
        let server = tokio::spawn(async move {
            // The first connection reads the request and closes without a word ...
            let (mut a, _) = l.accept().await.unwrap();
            read_head(&mut a).await;
            drop(a);
            // ... the second answers.
            let (mut b, _) = l.accept().await.unwrap();
            read_head(&mut b).await;
            b.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                .await
                .unwrap();
            // A third would mean a second retry.
            tokio::time::timeout(Duration::from_millis(300), l.accept())
                .await
                .is_ok()
        });
        let client = client(Duration::from_secs(2), Arc::new(TargetPolicy::default()));
        let body = get_small(&client, &url, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(&body[..], b"{}");
        drop(client);
        assert!(!server.await.unwrap(), "one retry, not more");
    }

    #[tokio::test]
    async fn a_refused_connect_or_an_http_error_is_not_retried() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let client = client(Duration::from_secs(2), Arc::new(TargetPolicy::default()));
        let e = get_small(&client, &format!("http://{addr}/x"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, GetError::Unreachable { .. }), "{e}");

        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", l.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut a, _) = l.accept().await.unwrap();
            read_head(&mut a).await;
            a.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope")
                .await
                .unwrap();
            // No second request, on this connection or another.
            let again = tokio::time::timeout(Duration::from_millis(300), async {
                let mut b = [0u8; 1];
                matches!(a.read(&mut b).await, Ok(n) if n > 0)
            });
            let other = tokio::time::timeout(Duration::from_millis(300), l.accept());
            (again.await.unwrap_or(false), other.await.is_ok())
        });
        let e = get_small(&client, &url, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, GetError::Status { status: 404, .. }), "{e}");
        assert_eq!(server.await.unwrap(), (false, false));
    }
}
