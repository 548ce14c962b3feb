//! The controller's link to one agent: a tonic client with timeouts and errors that say what to do.

// The credentials are the plan's (plan::AgentAuth); how to read them is the link's.
pub use crate::plan::AgentAuth;
use std::path::Path;
use std::time::Duration;
use tokengun_common::{Api, CyclePlan, Record};
use tokengun_proto::{self as pb, agent_client::AgentClient, convert};
use tokio::sync::mpsc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How long a unary call may take before the agent counts as not answering.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Preflight probes the target from the agent, so it gets longer.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(30);

/// Talking to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("invalid agent address {0:?}: use HOST:PORT, e.g. 127.0.0.1:7411")]
    Address(String),
    #[error(
        "agent at {addr} did not answer ({reason}); is `tokengun-agent serve` running there and reachable?"
    )]
    Unreachable { addr: String, reason: String },
    #[error(
        "agent at {addr}: {call} did not answer within {timeout:?}; is `tokengun-agent serve` running there (and is that its gRPC port)?"
    )]
    Timeout {
        addr: String,
        call: &'static str,
        timeout: Duration,
    },
    #[error("agent at {addr}: {message}")]
    Refused {
        addr: String,
        code: tonic::Code,
        message: String,
    },
    #[error("agent at {addr} sent a record it could not have meant: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("agent at {addr} refused this controller: {message}")]
    Unauthenticated { addr: String, message: String },
    #[error("agent at {addr}: TLS failed: {explanation} ({reason})")]
    Tls {
        addr: String,
        explanation: String,
        reason: String,
    },
    #[error("{0}")]
    Credentials(String),
}

/// Reading the run's agent credentials: the bearer token and the TLS settings.
impl AgentAuth {
    /// The bearer token, from `token_file` or the environment.
    fn token(&self) -> Result<Option<MetadataValue<Ascii>>, LinkError> {
        let (text, from) = match &self.token_file {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|e| {
                    LinkError::Credentials(format!(
                        "cannot read --agent-token-file {}: {e}",
                        path.display()
                    ))
                })?,
                format!("--agent-token-file {}", path.display()),
            ),
            None => match std::env::var(tokengun_common::credentials::TOKEN_ENV) {
                Ok(v) if !v.is_empty() => (v, tokengun_common::credentials::TOKEN_ENV.to_string()),
                _ => return Ok(None),
            },
        };
        let value = format!("Bearer {}", text.trim());
        value.parse().map(Some).map_err(|_| {
            LinkError::Credentials(format!(
                "the token in {from} holds characters a header cannot carry; use printable ASCII"
            ))
        })
    }

    /// The TLS settings, when a CA is given (files read and parsed here, so a bad one is named).
    fn tls(&self, host: &str) -> Result<Option<ClientTlsConfig>, LinkError> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let pem = |flag: &'static str, path: &Path, key: bool| -> Result<Vec<u8>, LinkError> {
            let checked = if key {
                tokengun_common::credentials::read_key(flag, path).map(drop)
            } else {
                tokengun_common::credentials::read_certs(flag, path).map(drop)
            };
            checked.map_err(|e| LinkError::Credentials(e.to_string()))?;
            std::fs::read(path).map_err(|e| {
                LinkError::Credentials(format!("cannot read {flag} {}: {e}", path.display()))
            })
        };
        let mut cfg = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(pem("--agent-ca", ca, false)?))
            .domain_name(host.trim_start_matches('[').trim_end_matches(']'));
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            cfg = cfg.identity(Identity::from_pem(
                pem("--agent-cert", cert, false)?,
                pem("--agent-key", key, true)?,
            ));
        }
        Ok(Some(cfg))
    }
}

/// Says what a TLS failure means, from the deepest error's text (rustls' wording).
fn explain_tls(reason: &str) -> Option<&'static str> {
    let r = reason.to_ascii_lowercase();
    let table: [(&str, &'static str); 7] = [
        (
            "notvalidforname",
            "the agent's certificate does not name the host dialled: make it for that name \
             (`tokengun-agent certs --agent HOST,IP`) or dial a name it has",
        ),
        (
            "unknownissuer",
            "the agent's certificate is not signed by --agent-ca: pass the CA that signed it",
        ),
        (
            "expired",
            "a certificate has expired: make new ones (`tokengun-agent certs`)",
        ),
        (
            "certificaterequired",
            "the agent requires a client certificate: pass --agent-cert and --agent-key",
        ),
        (
            "alert: unknownca",
            "the agent refused this controller's certificate: --agent-cert is not signed by the agent's --tls-client-ca",
        ),
        (
            "alert: badcertificate",
            "the agent refused this controller's certificate: --agent-cert is not signed by the agent's --tls-client-ca",
        ),
        (
            "invalidcontenttype",
            "the agent does not speak TLS (started without --tls-cert): drop --agent-ca, or give the agent a certificate",
        ),
    ];
    table
        .iter()
        .find(|(needle, _)| r.contains(needle))
        .map(|(_, text)| *text)
        .or_else(|| {
            (r.contains("corrupt message") || r.contains("invalid peer certificate"))
                .then_some("the agent and this controller disagree on TLS: check --agent-ca and the agent's --tls-cert")
        })
}

fn transport_error(addr: &str, reason: String) -> LinkError {
    match explain_tls(&reason) {
        Some(explanation) => LinkError::Tls {
            addr: addr.to_string(),
            explanation: explanation.to_string(),
            reason,
        },
        None => LinkError::Unreachable {
            addr: addr.to_string(),
            reason,
        },
    }
}

/// Adds the bearer token to every call.
#[derive(Debug, Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The gRPC client of one agent, with the token interceptor.
type Client = AgentClient<InterceptedService<Channel, BearerToken>>;

pub use tokengun_common::run_dir::AgentInfo;

/// The agent's monotonic clock read at a local instant (the lowest-delay probe); the error of
/// mapping another instant is at most half `rtt`.
#[derive(Debug, Clone, Copy)]
pub struct ClockMap {
    pub local: std::time::Instant,
    pub agent_ns: u64,
    pub rtt: Duration,
}

impl ClockMap {
    /// The agent's monotonic ns at local instant `t`.
    pub fn agent_ns_at(&self, t: std::time::Instant) -> u64 {
        if t >= self.local {
            self.agent_ns
                .saturating_add(u64::try_from((t - self.local).as_nanos()).unwrap_or(u64::MAX))
        } else {
            self.agent_ns
                .saturating_sub(u64::try_from((self.local - t).as_nanos()).unwrap_or(u64::MAX))
        }
    }

    /// The local instant at which the agent's clock reads `agent_ns`.
    pub fn local_at(&self, agent_ns: u64) -> std::time::Instant {
        if agent_ns >= self.agent_ns {
            self.local + Duration::from_nanos(agent_ns - self.agent_ns)
        } else {
            self.local
                .checked_sub(Duration::from_nanos(self.agent_ns - agent_ns))
                .unwrap_or(self.local)
        }
    }
}

/// What the agent found at the target.
#[derive(Debug, Clone)]
pub struct TargetInfo {
    pub server_version: Option<String>,
    pub models: Vec<String>,
    /// The API probed, or the one found when none was named.
    pub api: Api,
}

/// One connected agent.
#[derive(Clone)]
pub struct AgentLink {
    addr: String,
    client: Client,
}

impl AgentLink {
    /// Connects (TCP + HTTP/2) within `timeout`, without credentials.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, LinkError> {
        Self::connect_with(addr, timeout, &AgentAuth::default()).await
    }

    /// Connects (TCP, TLS when `auth` names a CA or the address is `https://`, HTTP/2) within
    /// `timeout`; every call carries `auth`'s token, if any.
    pub async fn connect_with(
        addr: &str,
        timeout: Duration,
        auth: &AgentAuth,
    ) -> Result<Self, LinkError> {
        auth.check().map_err(LinkError::Credentials)?;
        let trimmed = addr.trim();
        let tls_wanted = auth.ca.is_some();
        let uri = match (trimmed.split_once("://"), tls_wanted) {
            (Some(("https", _)), false) => {
                return Err(LinkError::Credentials(format!(
                    "agent {trimmed} is https://, but no --agent-ca names the CA that signed its certificate"
                )));
            }
            (Some(("http", _)), true) => {
                return Err(LinkError::Credentials(format!(
                    "agent {trimmed} is http://, but --agent-ca asks for TLS: write it as HOST:PORT or https://HOST:PORT"
                )));
            }
            (Some(_), _) => trimmed.to_string(),
            (None, true) => format!("https://{trimmed}"),
            (None, false) => format!("http://{trimmed}"),
        };
        let parsed: tonic::codegen::http::Uri = uri
            .parse()
            .map_err(|_| LinkError::Address(addr.to_string()))?;
        let host = parsed
            .host()
            .ok_or_else(|| LinkError::Address(addr.to_string()))?
            .to_string();
        let mut endpoint =
            Endpoint::from_shared(uri).map_err(|_| LinkError::Address(addr.to_string()))?;
        if let Some(tls) = auth.tls(&host)? {
            endpoint = endpoint.tls_config(tls).map_err(|e| {
                LinkError::Credentials(format!(
                    "the TLS settings for agent {trimmed} were refused: {}",
                    tokengun_common::transport::root_cause(&e)
                ))
            })?;
        }
        let token = BearerToken(auth.token()?);
        let endpoint = endpoint
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let channel = tokio::time::timeout(timeout, endpoint.connect())
            .await
            .map_err(|_| LinkError::Unreachable {
                addr: addr.to_string(),
                reason: format!("no connection within {timeout:?}"),
            })?
            .map_err(|e| transport_error(addr, tokengun_common::transport::root_cause(&e)))?;
        Ok(Self {
            addr: trimmed.to_string(),
            client: AgentClient::with_interceptor(channel, token)
                .max_decoding_message_size(tokengun_common::transport::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(tokengun_common::transport::MAX_MESSAGE_BYTES),
        })
    }

    /// The address as given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn link_error(&self, s: tonic::Status) -> LinkError {
        match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
                if s.message().contains("transport") || s.message().is_empty() =>
            {
                // The status's own text is "transport error"; its source says what broke.
                let reason = std::error::Error::source(&s)
                    .map(tokengun_common::transport::root_cause)
                    .unwrap_or_else(|| s.message().to_string());
                transport_error(&self.addr, reason)
            }
            tonic::Code::Unauthenticated => LinkError::Unauthenticated {
                addr: self.addr.clone(),
                message: s.message().to_string(),
            },
            code => LinkError::Refused {
                addr: self.addr.clone(),
                code,
                message: s.message().to_string(),
            },
        }
    }

    async fn call<T>(
        &self,
        call: &'static str,
        timeout: Duration,
        fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, LinkError> {
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(LinkError::Timeout {
                addr: self.addr.clone(),
                call,
                timeout,
            }),
            Ok(Err(s)) => Err(self.link_error(s)),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    /// Handshake: protocol version check and the agent's identity.
    pub async fn hello(&self, in_process: bool) -> Result<AgentInfo, LinkError> {
        let mut c = self.client.clone();
        let r = self
            .call(
                "Hello",
                CALL_TIMEOUT,
                c.hello(pb::HelloRequest {
                    protocol_version: tokengun_proto::PROTOCOL_VERSION,
                    controller_version: env!("CARGO_PKG_VERSION").into(),
                }),
            )
            .await?;
        if r.protocol_version != tokengun_proto::PROTOCOL_VERSION {
            return Err(LinkError::Refused {
                addr: self.addr.clone(),
                code: tonic::Code::FailedPrecondition,
                message: format!(
                    "protocol mismatch: agent speaks version {} (tokengun-agent {}), this controller speaks {}; \
                     install the same tokengun version on both",
                    r.protocol_version,
                    r.agent_version,
                    tokengun_proto::PROTOCOL_VERSION
                ),
            });
        }
        Ok(AgentInfo {
            address: self.addr.clone(),
            agent_id: r.agent_id,
            version: r.agent_version,
            hostname: r.hostname,
            capabilities: r.capabilities,
            max_concurrency: r.max_concurrency,
            in_process,
            label: String::new(),
            clock_uncertainty_ms: None,
            first_seq: 0,
        })
    }

    /// Asks the agent to probe the target (`api` None: find out which API it speaks).
    pub async fn preflight(
        &self,
        target_url: &str,
        api: Option<Api>,
    ) -> Result<TargetInfo, LinkError> {
        let mut c = self.client.clone();
        let r = self
            .call(
                "Preflight",
                PREFLIGHT_TIMEOUT,
                c.preflight(pb::PreflightRequest {
                    target_url: target_url.into(),
                    api: convert::api_to(api),
                }),
            )
            .await?;
        let api = convert::api_from_wire(r.api)
            .ok()
            .flatten()
            .ok_or_else(|| LinkError::Protocol {
                addr: self.addr.clone(),
                reason: format!("preflight named no API ({})", r.api),
            })?;
        Ok(TargetInfo {
            server_version: Some(r.server_version).filter(|v| !v.is_empty()),
            models: r.models,
            api,
        })
    }

    /// Arms one cycle.
    pub async fn prepare(&self, plan: &CyclePlan) -> Result<(), LinkError> {
        let mut c = self.client.clone();
        self.call(
            "Prepare",
            CALL_TIMEOUT,
            c.prepare(pb::PrepareRequest {
                plan: Some(plan.into()),
            }),
        )
        .await
        .map(drop)
    }

    /// Starts the prepared cycle at `start_at_mono_ns` of the agent's clock (0 = at once).
    pub async fn start(&self, cycle_id: u32, start_at_mono_ns: u64) -> Result<(), LinkError> {
        let mut c = self.client.clone();
        self.call(
            "Start",
            CALL_TIMEOUT,
            c.start(pb::StartRequest {
                cycle_id,
                start_at_mono_ns,
            }),
        )
        .await
        .map(drop)
    }

    /// One clock reading: (agent monotonic ns, round trip). The agent read its clock somewhere
    /// inside the round trip; NTP's estimate puts it in the middle.
    pub async fn clock_probe(&self) -> Result<(u64, Duration, std::time::Instant), LinkError> {
        let mut c = self.client.clone();
        let sent = std::time::Instant::now();
        let r = self
            .call(
                "ClockProbe",
                CALL_TIMEOUT,
                c.clock_probe(pb::ClockProbeRequest {}),
            )
            .await?;
        let rtt = sent.elapsed();
        Ok((r.agent_mono_ns, rtt, sent + rtt / 2))
    }

    /// The agent's clock against this process's: probes `n` times and keeps the sample with the
    /// lowest round trip. Returns a mapping from local instants to the agent's monotonic ns.
    pub async fn clock_offset(&self, n: usize) -> Result<ClockMap, LinkError> {
        let mut best: Option<(u64, Duration, std::time::Instant)> = None;
        for _ in 0..n.max(1) {
            let s = self.clock_probe().await?;
            if best.is_none_or(|b| s.1 < b.1) {
                best = Some(s);
            }
        }
        let (agent_ns, rtt, local) = best.ok_or_else(|| LinkError::Protocol {
            addr: self.addr.clone(),
            reason: "no clock sample".into(),
        })?;
        Ok(ClockMap {
            local,
            agent_ns,
            rtt,
        })
    }

    /// Aborts a cycle; true when it was running.
    pub async fn abort(&self, cycle_id: u32) -> Result<bool, LinkError> {
        let mut c = self.client.clone();
        self.call(
            "Abort",
            CALL_TIMEOUT,
            c.abort(pb::AbortRequest { cycle_id }),
        )
        .await
        .map(|r| r.was_running)
    }

    /// The agent's state: (`idle` | `prepared` | `running`, cycle id, last record seq).
    pub async fn status(&self) -> Result<(String, u32, u64), LinkError> {
        let mut c = self.client.clone();
        self.call("Status", CALL_TIMEOUT, c.status(pb::StatusRequest {}))
            .await
            .map(|r| (r.state, r.cycle_id, r.last_seq))
    }

    /// Has the agent start a server process and wait (`timeout` and a little more) until it
    /// answers its health URL.
    pub async fn start_server(
        &self,
        req: pb::StartServerRequest,
        timeout: Duration,
    ) -> Result<pb::StartServerReply, LinkError> {
        let mut c = self.client.clone();
        self.call(
            "StartServer",
            timeout + Duration::from_secs(15),
            c.start_server(req),
        )
        .await
    }

    /// Has the agent stop its server process (SIGTERM, SIGKILL after `grace`).
    pub async fn stop_server(&self, grace: Duration) -> Result<pb::StopServerReply, LinkError> {
        let mut c = self.client.clone();
        self.call(
            "StopServer",
            grace + Duration::from_secs(15),
            c.stop_server(pb::StopServerRequest {
                grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            }),
        )
        .await
    }

    /// What each monitor source finds on the agent's machine (samples nothing).
    pub async fn probe(&self, spec: pb::MonitorSpec) -> Result<pb::ProbeReply, LinkError> {
        let mut c = self.client.clone();
        self.call(
            "Probe",
            PREFLIGHT_TIMEOUT,
            c.probe(pb::ProbeRequest { spec: Some(spec) }),
        )
        .await
    }

    /// Starts the agent's monitors; their samples arrive on the results stream.
    pub async fn start_monitor(
        &self,
        spec: pb::MonitorSpec,
    ) -> Result<pb::StartMonitorReply, LinkError> {
        let mut c = self.client.clone();
        self.call(
            "StartMonitor",
            PREFLIGHT_TIMEOUT,
            c.start_monitor(pb::StartMonitorRequest { spec: Some(spec) }),
        )
        .await
    }

    /// Stops the agent's monitors; every monitor record has seq <= the returned one.
    pub async fn stop_monitor(&self) -> Result<u64, LinkError> {
        let mut c = self.client.clone();
        self.call(
            "StopMonitor",
            CALL_TIMEOUT,
            c.stop_monitor(pb::StopMonitorRequest {}),
        )
        .await
        .map(|r| r.last_seq)
    }

    /// Tells the agent everything up to `seq` is stored.
    pub async fn ack(&self, seq: u64) -> Result<(), LinkError> {
        let mut c = self.client.clone();
        self.call("Ack", CALL_TIMEOUT, c.ack(pb::AckRequest { seq }))
            .await
            .map(drop)
    }

    /// Opens the results stream after `after_seq` and forwards decoded records into the returned
    /// channel; the channel ends with `Err` if the stream breaks or carries an undecodable record.
    pub async fn results(
        &self,
        after_seq: u64,
    ) -> Result<mpsc::Receiver<Result<Record, LinkError>>, LinkError> {
        let mut c = self.client.clone();
        let mut stream = self
            .call(
                "Results",
                CALL_TIMEOUT,
                c.results(pb::ResultsRequest { after_seq }),
            )
            .await?;
        let (tx, rx) = mpsc::channel(4096);
        let link = self.clone();
        tokio::spawn(async move {
            loop {
                let item = match stream.message().await {
                    Ok(Some(batch)) => batch,
                    Ok(None) => {
                        let _ = tx
                            .send(Err(LinkError::Unreachable {
                                addr: link.addr.clone(),
                                reason: "the agent closed the results stream".into(),
                            }))
                            .await;
                        return;
                    }
                    Err(s) => {
                        let _ = tx.send(Err(link.link_error(s))).await;
                        return;
                    }
                };
                for wire in item.records {
                    let rec = Record::try_from(wire).map_err(|e| LinkError::Protocol {
                        addr: link.addr.clone(),
                        reason: e.to_string(),
                    });
                    let stop = rec.is_err();
                    if tx.send(rec).await.is_err() || stop {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}
