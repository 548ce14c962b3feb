//! Preflight: what a target server speaks (recognised when the controller does not say), which
//! models it has and its version, each asked the way its [`Backend`](super::Backend) says.

use super::backend;
use crate::http::{GetError, HttpClient, get_small};
use serde::Deserialize;
use std::time::Duration;
use tokengun_common::Api;

/// How long one preflight GET may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a server recognised by no backend is taken to speak.
const UNRECOGNISED_API: Api = Api::OpenaiChat;

/// How preflight asks a server of one backend for its models and version.
#[derive(Debug)]
pub(crate) struct Preflight {
    /// What such a server is called in advice (`an Ollama server`).
    pub server: &'static str,
    /// Where its models are listed.
    pub models_path: &'static str,
    /// The model names in the reply at `models_path`.
    pub parse_models: fn(&[u8]) -> Result<Vec<String>, serde_json::Error>,
    /// The advice when `models_path` answers something else: (URL, base URL, what was wrong).
    pub mismatch: fn(&str, &str, &serde_json::Error) -> String,
    /// Where a `{"version": ...}` reply may be found, tried in order.
    pub version_paths: &'static [&'static str],
    /// A path that only a server of this backend answers with a `{"version": ...}`: how a
    /// server of unknown API is recognised (None: never recognised, only named).
    pub recognised_at: Option<&'static str>,
}

/// What preflight found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServerInfo {
    pub api: Api,
    pub models: Vec<String>,
    pub version: Option<String>,
}

/// Preflight could not tell what the target is.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PreflightError {
    /// Nothing answered (in time).
    #[error(transparent)]
    Unreachable(GetError),
    /// Something answered, but not as a server of the API in question does.
    #[error("{source} (is {base} {server}? pass --api to say which API it speaks)")]
    Refused {
        source: GetError,
        base: String,
        server: &'static str,
    },
    /// The model list was not what the API sends.
    #[error("{0}")]
    NotThisApi(String),
}

fn refused(e: GetError, base: &str, server: &'static str) -> PreflightError {
    match e {
        GetError::Unreachable { .. } | GetError::Timeout { .. } => PreflightError::Unreachable(e),
        source => PreflightError::Refused {
            source,
            base: base.to_string(),
            server,
        },
    }
}

/// The version in a `{"version": ...}` reply (Ollama's `/api/version`, vLLM's `/version`).
pub(crate) fn parse_version(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct V {
        version: String,
    }
    serde_json::from_slice::<V>(body).ok().map(|v| v.version)
}

async fn version_at(client: &HttpClient, base: &str, path: &str) -> Option<String> {
    get_small(client, &format!("{base}{path}"), PROBE_TIMEOUT)
        .await
        .ok()
        .and_then(|b| parse_version(&b))
}

/// The API of a server the controller did not name: the first backend (in [`Api::ALL`] order)
/// whose `recognised_at` answers with a version, else [`UNRECOGNISED_API`].
async fn recognise(client: &HttpClient, base: &str) -> Result<Api, PreflightError> {
    let mut tried: Vec<&str> = Vec::new();
    for api in Api::ALL {
        let Some(path) = backend(api).preflight().recognised_at else {
            continue;
        };
        if tried.contains(&path) {
            continue;
        }
        tried.push(path);
        match get_small(client, &format!("{base}{path}"), PROBE_TIMEOUT).await {
            Ok(b) if parse_version(&b).is_some() => return Ok(api),
            Err(e @ (GetError::Unreachable { .. } | GetError::Timeout { .. })) => {
                return Err(PreflightError::Unreachable(e));
            }
            _ => {}
        }
    }
    Ok(UNRECOGNISED_API)
}

/// Finds what the server at `base` speaks and has: its API (recognised when `api` is None),
/// model names and version.
pub(crate) async fn preflight(
    client: &HttpClient,
    base: &str,
    api: Option<Api>,
) -> Result<ServerInfo, PreflightError> {
    let api = match api {
        Some(a) => a,
        None => recognise(client, base).await?,
    };
    let p = backend(api).preflight();
    let url = format!("{base}{}", p.models_path);
    let body = get_small(client, &url, PROBE_TIMEOUT)
        .await
        .map_err(|e| refused(e, base, p.server))?;
    let models = (p.parse_models)(&body)
        .map_err(|e| PreflightError::NotThisApi((p.mismatch)(&url, base, &e)))?;
    let mut version = None;
    for path in p.version_paths {
        version = version_at(client, base, path).await;
        if version.is_some() {
            break;
        }
    }
    Ok(ServerInfo {
        api,
        models,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_advice() {
        assert_eq!(
            parse_version(br#"{"version":"0.32.15"}"#).as_deref(),
            Some("0.32.15")
        );
        assert_eq!(parse_version(b"{}"), None);
        let e = refused(
            GetError::Status {
                url: "http://h/api/tags".into(),
                status: 404,
                body: "nope".into(),
            },
            "http://h",
            "an Ollama server",
        );
        assert_eq!(
            e.to_string(),
            "http://h/api/tags answered HTTP 404: nope (is http://h an Ollama server? pass --api to say which API it speaks)"
        );
        let e = refused(
            GetError::BadUrl("x".into()),
            "http://h",
            "an OpenAI-compatible server",
        );
        assert!(matches!(e, PreflightError::Refused { .. }));
        let unreachable = GetError::Timeout {
            url: "u".into(),
            timeout: PROBE_TIMEOUT,
        };
        assert!(matches!(
            refused(unreachable, "b", "s"),
            PreflightError::Unreachable(_)
        ));
    }

    #[test]
    fn only_ollama_is_recognised_by_a_path_and_the_rest_falls_back() {
        let recognisable: Vec<Api> = Api::ALL
            .into_iter()
            .filter(|a| backend(*a).preflight().recognised_at.is_some())
            .collect();
        assert_eq!(recognisable, [Api::OllamaGenerate, Api::OllamaChat]);
        assert_eq!(UNRECOGNISED_API, Api::OpenaiChat);
    }
}
