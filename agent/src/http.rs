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
pub async fn get_small(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> Result<Bytes, GetError> {
    let uri: hyper::Uri = url.parse().map_err(|_| GetError::BadUrl(url.to_string()))?;
    let fut = async {
        let resp = client.get(uri).await.map_err(|e| GetError::Unreachable {
            url: url.to_string(),
            reason: root_cause(&e),
        })?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_SMALL_BODY)
            .collect()
            .await
            .map_err(|e| GetError::Unreachable {
                url: url.to_string(),
                reason: e.to_string(),
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(GetError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body)
                    .trim()
                    .chars()
                    .take(300)
                    .collect(),
            });
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| GetError::Timeout {
            url: url.to_string(),
            timeout,
        })?
}
