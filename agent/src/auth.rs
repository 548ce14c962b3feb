//! Who may drive this agent: TLS (rustls, ring provider) with client certificates, and/or a bearer
//! token. Checked on every gRPC call; each refusal is logged and answered with a status saying what
//! the controller lacks.
//!
//! Connections are accepted here, not by tonic, so that every one can be classified and refused
//! clearly: a first byte of 0x16 is a TLS handshake; anything else on a TLS agent is a plaintext
//! controller, served only to be told (as a gRPC status) that this agent requires TLS. A client
//! certificate's chain is checked against `--tls-client-ca` right after the handshake (the
//! handshake itself checks only that the client holds the certificate's key) and the verdict is
//! enforced by the interceptor before any call runs, so that a controller with no certificate, or
//! one from another CA, gets a status naming what to pass rather than a bare TLS alert (which TLS
//! 1.3 delivers after the client thinks the handshake is over, as a broken pipe).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokengun_common::credentials::{CredentialError, TOKEN_ENV, read_certs, read_file, read_key};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::server::TlsStream;
use tonic::{Request, Status};

/// Shortest token accepted: shorter ones can be guessed.
pub const MIN_TOKEN_BYTES: usize = 16;
/// How long a connection may take to send its first byte and finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the agent's credentials come from (its flags).
#[derive(Debug, Clone, Default)]
pub struct AuthFiles {
    /// The agent's certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// The agent's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) whose certificates controllers must present; requires `tls_cert`.
    pub tls_client_ca: Option<PathBuf>,
    /// File holding the bearer token controllers must send.
    pub token_file: Option<PathBuf>,
}

/// The agent's credentials could not be loaded, or do not protect it.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error(
        "--tls-cert and --tls-key go together: give both (the agent's certificate and its key)"
    )]
    Pair,
    #[error(
        "--tls-client-ca needs --tls-cert and --tls-key: the agent must present its own certificate"
    )]
    ClientCaWithoutTls,
    #[error("the TLS settings were refused: {0}")]
    Tls(String),
    #[error(
        "the bearer token from {from} is {len} bytes; use at least {MIN_TOKEN_BYTES} random characters (e.g. `openssl rand -hex 32`)"
    )]
    ShortToken { from: String, len: usize },
    #[error(
        "refusing to listen on {listen} without authentication: anyone who reaches it could aim load through it. \
         Give --tls-client-ca (mutual TLS, with --tls-cert/--tls-key) and/or --token-file, listen on 127.0.0.1, \
         or pass --insecure-no-auth on a network you trust"
    )]
    Unauthenticated { listen: SocketAddr },
}

/// A bearer token; never printed.
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token from text (surrounding whitespace, such as a file's last newline, is dropped);
    /// `from` names where it came from for errors.
    pub fn new(text: &str, from: &str) -> Result<Self, AuthError> {
        let t = text.trim();
        if t.len() < MIN_TOKEN_BYTES {
            return Err(AuthError::ShortToken {
                from: from.to_string(),
                len: t.len(),
            });
        }
        Ok(Self(t.as_bytes().to_vec()))
    }

    /// Compares in constant time (for a given length): a wrong guess learns nothing from timing.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == presented.len() && bool::from(self.0.as_slice().ct_eq(presented))
    }
}

/// The ring crypto provider every TLS config of tokengun uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the agent requires of a controller.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Checks client certificate chains against `--tls-client-ca`.
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    client_certs_required: bool,
    token: Option<Arc<Token>>,
}

impl Auth {
    /// No authentication (loopback agents, or `--insecure-no-auth`).
    pub fn none() -> Self {
        Self::default()
    }

    /// Loads the credentials the flags name; `env_token` is the value of [`TOKEN_ENV`], used when
    /// no token file is given.
    pub fn load(files: &AuthFiles, env_token: Option<String>) -> Result<Self, AuthError> {
        let (tls, client_verifier) = match (&files.tls_cert, &files.tls_key) {
            (Some(cert), Some(key)) => {
                let (cfg, verifier) = server_config(cert, key, files.tls_client_ca.as_deref())?;
                (Some(Arc::new(cfg)), verifier)
            }
            (None, None) if files.tls_client_ca.is_some() => {
                return Err(AuthError::ClientCaWithoutTls);
            }
            (None, None) => (None, None),
            _ => return Err(AuthError::Pair),
        };
        let token = match (&files.token_file, env_token) {
            (Some(path), _) => {
                let bytes = read_file("--token-file", path)?;
                let text = String::from_utf8_lossy(&bytes);
                Some(Arc::new(Token::new(&text, &path.display().to_string())?))
            }
            (None, Some(v)) => Some(Arc::new(Token::new(&v, TOKEN_ENV)?)),
            (None, None) => None,
        };
        Ok(Self {
            tls,
            client_verifier,
            client_certs_required: files.tls_client_ca.is_some(),
            token,
        })
    }

    /// Whether a controller must prove who it is (a client certificate or a token).
    pub fn authenticates(&self) -> bool {
        self.client_certs_required || self.token.is_some()
    }

    /// Whether connections must be TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// What is required, for the start-up log line.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match (&self.tls, self.client_certs_required) {
            (Some(_), true) => parts.push("mutual TLS (client certificates required)"),
            (Some(_), false) => parts.push("TLS (no client certificates)"),
            (None, _) => parts.push("plaintext"),
        }
        if self.token.is_some() {
            parts.push("bearer token");
        }
        if !self.authenticates() {
            parts.push("no authentication");
        }
        parts.join(" + ")
    }

    /// The interceptor that checks every call.
    pub fn interceptor(&self) -> AuthInterceptor {
        AuthInterceptor {
            tls_required: self.tls.is_some(),
            client_certs_required: self.client_certs_required,
            token: self.token.clone(),
        }
    }
}

/// Asks for a client certificate and checks that the client holds its key, but leaves the
/// chain's verdict to [`classify`] and the interceptor (see the module's note).
#[derive(Debug)]
struct DeferredClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

type ServerSetup = (rustls::ServerConfig, Option<Arc<dyn ClientCertVerifier>>);

fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerSetup, AuthError> {
    let chain = read_certs("--tls-cert", cert)?;
    let key = read_key("--tls-key", key)?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| AuthError::Tls(e.to_string()))?;
    let mut chain_verifier = None;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs("--tls-client-ca", ca)? {
                roots.add(c).map_err(|e| CredentialError::Pem {
                    flag: "--tls-client-ca",
                    path: ca.to_path_buf(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| AuthError::Tls(e.to_string()))?;
            chain_verifier = Some(verifier.clone());
            builder.with_client_cert_verifier(Arc::new(DeferredClientVerifier { inner: verifier }))
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| AuthError::Tls(format!("--tls-cert and --tls-key do not make a pair: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok((cfg, chain_verifier))
}

/// What a TLS client's certificate proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// None was presented.
    Absent,
    /// It chains to `--tls-client-ca` (or no client CA is configured).
    Verified,
    /// It does not; why.
    Rejected(String),
}

/// How a connection reached the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Plain,
    Tls(ClientCert),
}

/// Attached to every request: who is on the other end.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub transport: Transport,
}

/// An accepted connection, plaintext or TLS.
pub enum Conn {
    Plain(TcpStream, SocketAddr),
    Tls(Box<TlsStream<TcpStream>>, SocketAddr, ClientCert),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match self {
            Conn::Plain(_, peer) => ConnInfo {
                peer: *peer,
                transport: Transport::Plain,
            },
            Conn::Tls(_, peer, cert) => ConnInfo {
                peer: *peer,
                transport: Transport::Tls(cert.clone()),
            },
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections on `listener` and hands them (TLS ones once their handshake succeeded) to
/// the gRPC server through the returned channel; ends when the receiver is dropped.
pub fn accept(listener: TcpListener, auth: &Auth) -> mpsc::Receiver<std::io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = auth.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let verifier = auth.client_verifier.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: say so, keep serving.
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let Some(acceptor) = acceptor.clone() else {
                if tx.send(Ok(Conn::Plain(tcp, peer))).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            let verifier = verifier.clone();
            // Handshakes run beside the accept loop: a slow client holds up no one else.
            tokio::spawn(async move {
                if let Some(conn) = classify(tcp, peer, acceptor, verifier).await {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    rx
}

/// Reads whether the client starts a TLS handshake; completes it, or passes a plaintext
/// connection through to be refused by the interceptor.
async fn classify(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> Option<Conn> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(1)) => return Some(Conn::Plain(tcp, peer)),
        _ => return None,
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => {
            let presented = s.get_ref().1.peer_certificates().unwrap_or_default();
            let cert = match (presented.split_first(), verifier) {
                (None, _) => ClientCert::Absent,
                (Some(_), None) => ClientCert::Verified,
                (Some((end_entity, intermediates)), Some(v)) => {
                    match v.verify_client_cert(end_entity, intermediates, UnixTime::now()) {
                        Ok(_) => ClientCert::Verified,
                        Err(e) => {
                            tracing::warn!(%peer, "refused a client certificate: {e}");
                            ClientCert::Rejected(e.to_string())
                        }
                    }
                }
            };
            Some(Conn::Tls(Box::new(s), peer, cert))
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, "refused a TLS connection: {e}");
            None
        }
        Err(_) => {
            tracing::warn!(%peer, "refused a TLS connection: no handshake within {HANDSHAKE_TIMEOUT:?}");
            None
        }
    }
}

/// Checks every call against the agent's [`Auth`].
#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    tls_required: bool,
    client_certs_required: bool,
    token: Option<Arc<Token>>,
}

impl AuthInterceptor {
    fn refuse(peer: Option<SocketAddr>, message: &str) -> Status {
        let peer = peer.map_or_else(|| "?".into(), |p| p.to_string());
        tracing::warn!(%peer, "refused a controller: {message}");
        Status::unauthenticated(message)
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let info = req.extensions().get::<ConnInfo>().cloned();
        let peer = info.as_ref().map(|i| i.peer);
        let transport = info.map_or(Transport::Plain, |i| i.transport);
        if self.tls_required && transport == Transport::Plain {
            return Err(Self::refuse(
                peer,
                "this agent accepts only TLS connections and this one was plaintext: \
                 pass --agent-ca (the CA that signed the agent's certificate) so tokengun connects with https",
            ));
        }
        if self.client_certs_required {
            match &transport {
                Transport::Tls(ClientCert::Verified) => {}
                Transport::Tls(ClientCert::Rejected(why)) => {
                    return Err(Self::refuse(
                        peer,
                        &format!(
                            "this controller's client certificate is not signed by the agent's --tls-client-ca ({why}): \
                             pass an --agent-cert made by that CA"
                        ),
                    ));
                }
                _ => {
                    return Err(Self::refuse(
                        peer,
                        "this agent requires a client certificate signed by its --tls-client-ca and none was presented: \
                         pass --agent-cert and --agent-key",
                    ));
                }
            }
        }
        if let Some(token) = &self.token {
            let presented = req
                .metadata()
                .get("authorization")
                .map(|v| v.as_bytes())
                .and_then(|v| v.strip_prefix(b"Bearer "));
            match presented {
                None => {
                    return Err(Self::refuse(
                        peer,
                        "this agent requires a bearer token and none was sent: \
                         pass --agent-token-file (or set TOKENGUN_AGENT_TOKEN)",
                    ));
                }
                Some(t) if !token.matches(t) => {
                    return Err(Self::refuse(
                        peer,
                        "the bearer token was not accepted: --agent-token-file must hold the same \
                         token as the agent's --token-file",
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_refuse_short_ones() {
        let t = Token::new("0123456789abcdef\n", "test").unwrap();
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdeX"));
        assert!(!t.matches(b"0123456789abcde"));
        assert!(!t.matches(b""));
        assert!(matches!(
            Token::new("short", "test"),
            Err(AuthError::ShortToken { len: 5, .. })
        ));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }

    #[test]
    fn half_a_tls_pair_is_refused() {
        let files = AuthFiles {
            tls_cert: Some("a.pem".into()),
            ..AuthFiles::default()
        };
        assert!(matches!(Auth::load(&files, None), Err(AuthError::Pair)));
        let files = AuthFiles {
            tls_client_ca: Some("ca.pem".into()),
            ..AuthFiles::default()
        };
        assert!(matches!(
            Auth::load(&files, None),
            Err(AuthError::ClientCaWithoutTls)
        ));
    }
}
