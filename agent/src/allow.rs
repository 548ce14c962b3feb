//! Which targets an agent will fire at: loopback by default, checked after DNS resolution.

use std::net::IpAddr;
use tokengun_common::plan::parse_target;

/// The agent's target policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPolicy {
    /// Anything the controller names (the in-process agent: the user is the controller).
    Any,
    /// Loopback addresses, plus these hosts or IP addresses (as written by the operator).
    LoopbackAnd(Vec<String>),
}

/// A target was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllowError {
    #[error("{0}")]
    BadUrl(String),
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error(
        "target {url} resolves to {ip}, which is not on this agent's allow-list (loopback only by default); \
         start the agent with --allow-target {host} to permit it"
    )]
    NotAllowed {
        url: String,
        host: String,
        ip: IpAddr,
    },
}

/// Checks `url` against `policy`, resolving its host name.
pub async fn check_target(policy: &TargetPolicy, url: &str) -> Result<(), AllowError> {
    let (host, port) = parse_target(url).map_err(|e| AllowError::BadUrl(e.to_string()))?;
    let TargetPolicy::LoopbackAnd(extra) = policy else {
        return Ok(());
    };
    if extra.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
        return Ok(());
    }
    let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| AllowError::Resolve {
            host: host.clone(),
            reason: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(AllowError::Resolve {
            host,
            reason: "no addresses".into(),
        });
    }
    for a in addrs {
        let ip = a.ip();
        let listed = extra
            .iter()
            .any(|h| h.parse::<IpAddr>().is_ok_and(|x| x == ip));
        if !ip.is_loopback() && !listed {
            return Err(AllowError::NotAllowed {
                url: url.to_string(),
                host,
                ip,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_only_by_default() {
        let p = TargetPolicy::LoopbackAnd(vec![]);
        assert!(check_target(&p, "http://127.0.0.1:11434").await.is_ok());
        assert!(check_target(&p, "http://[::1]:11434").await.is_ok());
        assert!(check_target(&p, "http://localhost:11434").await.is_ok());
        let e = check_target(&p, "http://192.0.2.7:11434")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--allow-target 192.0.2.7"), "{e}");
        let p = TargetPolicy::LoopbackAnd(vec!["192.0.2.7".into()]);
        assert!(check_target(&p, "http://192.0.2.7:11434").await.is_ok());
        assert!(
            check_target(&TargetPolicy::Any, "http://192.0.2.8")
                .await
                .is_ok()
        );
    }
}
