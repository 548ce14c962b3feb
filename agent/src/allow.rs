//! Which targets an agent will fire at: an allow-list of networks (loopback by default), checked on
//! the resolved address, which is then the only address connected to (no DNS rebinding).
//!
//! Every connection the agent's HTTP client opens goes through [`CheckedConnector`]: the host is
//! resolved once, every address it resolves to must be on the list, and the socket is opened to
//! one of those checked addresses. The client never follows redirects (hyper's client has no
//! redirect support; a 3xx is recorded as an HTTP error), so a target cannot send load elsewhere.

use crate::stamp::StampedStream;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokengun_common::plan::parse_target;
use tokio::net::TcpStream;

/// A network: an address and a prefix length (`10.0.0.0/8`, `192.0.2.7/32`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `127.0.0.0/8`.
    pub const LOOPBACK_V4: IpNet = IpNet {
        addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
        prefix: 8,
    };
    /// `::1/128`.
    pub const LOOPBACK_V6: IpNet = IpNet {
        addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
        prefix: 128,
    };

    /// One address as a network of its own.
    pub fn host(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        Self { addr: ip, prefix }
    }

    /// Parses `ADDR/PREFIX` or a bare address.
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The agent's target policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPolicy {
    /// Anything the controller names (the in-process agent: the user is the controller).
    Any,
    /// Only addresses inside these networks, checked after resolution.
    Only(Vec<IpNet>),
}

impl Default for TargetPolicy {
    /// Loopback only: `127.0.0.0/8` and `::1`.
    fn default() -> Self {
        Self::Only(vec![IpNet::LOOPBACK_V4, IpNet::LOOPBACK_V6])
    }
}

impl TargetPolicy {
    /// Builds the allow-list from `--allow-target` entries: `loopback`, a network (`10.0.0.0/8`),
    /// an address, or a host name (resolved now, once: its addresses at start are allowed). No
    /// entries: loopback only.
    pub async fn from_entries(entries: &[String]) -> Result<Self, AllowError> {
        if entries.is_empty() {
            return Ok(Self::default());
        }
        let mut nets = Vec::new();
        for e in entries {
            let e = e.trim();
            if e.eq_ignore_ascii_case("loopback") {
                nets.extend([IpNet::LOOPBACK_V4, IpNet::LOOPBACK_V6]);
            } else if let Some(n) = IpNet::parse(e) {
                nets.push(n);
            } else if e.contains('/') || e.is_empty() {
                return Err(AllowError::BadEntry(e.to_string()));
            } else {
                let addrs = resolve(e, 0).await?;
                nets.extend(addrs.iter().map(|a| IpNet::host(a.ip())));
            }
        }
        Ok(Self::Only(nets))
    }

    /// Whether `ip` may be fired at.
    pub fn allows(&self, ip: IpAddr) -> bool {
        match self {
            Self::Any => true,
            Self::Only(nets) => nets.iter().any(|n| n.contains(ip)),
        }
    }

    /// The list as written in messages (`127.0.0.0/8, ::1/128`).
    pub fn describe(&self) -> String {
        match self {
            Self::Any => "any address".into(),
            Self::Only(nets) if nets.is_empty() => "nothing".into(),
            Self::Only(nets) => nets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// A target was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllowError {
    #[error("{0}")]
    BadUrl(String),
    #[error(
        "--allow-target {0:?} is not an address, a network (10.0.0.0/8), a host name or `loopback`"
    )]
    BadEntry(String),
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error(
        "target {host} resolves to {ip}, which is not on this agent's allow-list ({allowed}); \
         restart the agent with --allow-target {ip} (or a network holding it) to permit it"
    )]
    NotAllowed {
        host: String,
        ip: IpAddr,
        allowed: String,
    },
}

/// Resolves `host` once (an IP literal is taken as it is).
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, AllowError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| AllowError::Resolve {
            host: host.to_string(),
            reason: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(AllowError::Resolve {
            host: host.to_string(),
            reason: "no addresses".into(),
        });
    }
    Ok(addrs)
}

/// Resolves `host` once and checks every address it resolves to; returns those addresses, the
/// only ones a connection may then be opened to.
pub async fn resolve_checked(
    policy: &TargetPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, AllowError> {
    let addrs = resolve(host, port).await?;
    if let Some(bad) = addrs.iter().find(|a| !policy.allows(a.ip())) {
        return Err(AllowError::NotAllowed {
            host: host.to_string(),
            ip: bad.ip().to_canonical(),
            allowed: policy.describe(),
        });
    }
    Ok(addrs)
}

/// Checks `url` against `policy`, resolving its host name (a refusal before any load is sent; the
/// connector checks again on every connection).
pub async fn check_target(policy: &TargetPolicy, url: &str) -> Result<(), AllowError> {
    let (host, port) = parse_target(url).map_err(|e| AllowError::BadUrl(e.to_string()))?;
    if *policy == TargetPolicy::Any {
        return Ok(());
    }
    resolve_checked(policy, &host, port).await.map(drop)
}

/// A connection toward a target could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Refused(#[from] AllowError),
    #[error("{0} is not an http:// URL with a host")]
    BadUri(String),
    #[error("connect to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {addr}: no connection within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
}

/// The HTTP client's connector: resolve once, check every address, connect only to a checked one.
#[derive(Debug, Clone)]
pub struct CheckedConnector {
    policy: Arc<TargetPolicy>,
    connect_timeout: Duration,
}

impl CheckedConnector {
    /// A connector enforcing `policy`.
    pub fn new(policy: Arc<TargetPolicy>, connect_timeout: Duration) -> Self {
        Self {
            policy,
            connect_timeout,
        }
    }

    async fn connect(self, uri: Uri) -> Result<TokioIo<StampedStream>, ConnectError> {
        let bad = || ConnectError::BadUri(uri.to_string());
        if uri.scheme_str() != Some("http") {
            return Err(bad());
        }
        let host = uri.host().ok_or_else(bad)?;
        let port = uri.port_u16().unwrap_or(80);
        let addrs = resolve_checked(&self.policy, host, port).await?;
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    // Token chunks are tiny: no Nagle delay.
                    let _ = stream.set_nodelay(true);
                    return Ok(TokioIo::new(StampedStream::new(stream)));
                }
                Ok(Err(source)) => last = Some(ConnectError::Io { addr, source }),
                Err(_) => {
                    last = Some(ConnectError::Timeout {
                        addr,
                        timeout: self.connect_timeout,
                    })
                }
            }
        }
        Err(last.unwrap_or_else(bad))
    }
}

impl tower_service::Service<Uri> for CheckedConnector {
    type Response = TokioIo<StampedStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_what_they_should() {
        let n = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.255.1.2".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let all = IpNet::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let one = IpNet::parse("192.0.2.7").unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6 = IpNet::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert_eq!(IpNet::parse("10.0.0.0/33"), None);
        assert_eq!(IpNet::parse("gpu1/8"), None);
    }

    /// The connector checks on its own, whatever was checked before: a request to an address off
    /// the list never opens a socket.
    #[tokio::test]
    async fn the_connector_refuses_before_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/version", listener.local_addr().unwrap());
        let policy = Arc::new(
            TargetPolicy::from_entries(&["10.0.0.0/8".into()])
                .await
                .unwrap(),
        );
        let client = crate::http::client(Duration::from_secs(2), policy);
        let e = crate::http::get_small(&client, &url, Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not on this agent's allow-list"), "{e}");
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was opened");
        // The same client with loopback allowed does connect.
        let policy = Arc::new(TargetPolicy::default());
        let client = crate::http::client(Duration::from_secs(2), policy);
        let fetch = tokio::spawn(async move {
            crate::http::get_small(&client, &url, Duration::from_secs(2)).await
        });
        let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
        assert!(
            matches!(accepted, Ok(Ok(_))),
            "no connection with loopback allowed"
        );
        fetch.abort();
    }

    #[tokio::test]
    async fn loopback_only_by_default() {
        let p = TargetPolicy::default();
        assert!(check_target(&p, "http://127.0.0.1:11434").await.is_ok());
        assert!(check_target(&p, "http://127.8.9.10:11434").await.is_ok());
        assert!(check_target(&p, "http://[::1]:11434").await.is_ok());
        // Not loopback on Linux, though it reaches local services there.
        assert!(check_target(&p, "http://0.0.0.0:11434").await.is_err());
        let e = check_target(&p, "http://192.0.2.7:11434")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--allow-target 192.0.2.7"), "{e}");
        let p = TargetPolicy::from_entries(&["192.0.2.0/24".into()])
            .await
            .unwrap();
        assert!(check_target(&p, "http://192.0.2.7:11434").await.is_ok());
        // Listing anything replaces the default: loopback must then be listed too.
        assert!(check_target(&p, "http://127.0.0.1:11434").await.is_err());
        let p = TargetPolicy::from_entries(&["192.0.2.7".into(), "loopback".into()])
            .await
            .unwrap();
        assert!(check_target(&p, "http://127.0.0.1:1").await.is_ok());
        assert!(
            check_target(&TargetPolicy::Any, "http://192.0.2.8")
                .await
                .is_ok()
        );
        assert!(matches!(
            TargetPolicy::from_entries(&["10.0.0.0/40".into()]).await,
            Err(AllowError::BadEntry(_))
        ));
    }
}
