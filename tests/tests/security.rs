//! Security refusals, each with a real `tokengun-agent` process on a real socket and the real
//! controller link: mutual TLS, bearer tokens, listening beyond loopback, the target allow-list
//! (checked on the resolved address), redirects, the agent's own caps, the protocol handshake,
//! and systemd readiness. Certificates are made at test time with `rcgen`.
#![allow(clippy::unwrap_used)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokengun::link::{AgentAuth, AgentLink, LinkError};
use tokengun_tests::{SimConfig, SimHandle, open_config, run, run_config, workspace_bin};

const CONNECT: Duration = Duration::from_secs(10);
const TOKEN: &str = "s3cret-token-for-the-tests-0123456789";

/// A CA and the certificates it signed, as PEM files in a folder.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA named `name`, an agent certificate for `localhost`/127.0.0.1 and a controller's.
    fn new(root: &Path, name: &str) -> Self {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: Vec<String>, eku: ExtendedKeyUsagePurpose, stem: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.extended_key_usages = vec![eku];
            let cert = p.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{stem}-key.pem")), key.serialize_pem()).unwrap();
        };
        leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "agent",
        );
        leaf(
            vec!["controller".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "controller",
        );
        Self { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }

    /// The agent's flags for mutual TLS with this CA.
    fn agent_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path("agent.pem"),
            "--tls-key".into(),
            self.path("agent-key.pem"),
            "--tls-client-ca".into(),
            self.path("ca.pem"),
        ]
    }

    /// The controller's credentials: trust `self`'s CA, present `client`'s certificate.
    fn controller(&self, client: Option<&Pki>) -> AgentAuth {
        AgentAuth {
            ca: Some(self.dir.join("ca.pem")),
            cert: client.map(|c| c.dir.join("controller.pem")),
            key: client.map(|c| c.dir.join("controller-key.pem")),
            token_file: None,
        }
    }
}

/// A `tokengun-agent serve` process; killed on drop.
struct AgentProc {
    child: Child,
    addr: String,
    _spool: tempfile::TempDir,
}

impl AgentProc {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(workspace_bin("tokengun-agent"));
        cmd.arg("serve");
        // A free port unless the test names one: tests run side by side.
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        // Each agent its own record spool (one agent per spool folder).
        let spool = tempfile::tempdir().unwrap();
        cmd.arg("--spool-dir").arg(spool.path());
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .env_remove("TOKENGUN_AGENT_TOKEN")
            .env_remove("NOTIFY_SOCKET");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        assert!(
            line.contains("listening on"),
            "agent did not start: {line:?}"
        );
        Self {
            child,
            addr,
            _spool: spool,
        }
    }

    /// An address to dial: the bound port on 127.0.0.1 (the agent may listen on 0.0.0.0).
    fn loopback(&self) -> String {
        let port = self.addr.rsplit(':').next().unwrap();
        format!("127.0.0.1:{port}")
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn hello(addr: &str, auth: &AgentAuth) -> Result<(), LinkError> {
    let link = AgentLink::connect_with(addr, CONNECT, auth).await?;
    link.hello(false).await.map(drop)
}

fn mtls_agent(pki: &Pki) -> AgentProc {
    let args = pki.agent_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    AgentProc::spawn(&args, &[])
}

fn expect_refusal(r: Result<(), LinkError>, needles: &[&str]) {
    let e = r.expect_err("the agent should have refused").to_string();
    for n in needles {
        assert!(e.contains(n), "{n:?} not in: {e}");
    }
}

#[tokio::test]
async fn mtls_agent_accepts_a_client_with_a_certificate_from_its_ca() {
    let root = tempfile::tempdir().unwrap();
    let lab = Pki::new(root.path(), "lab");
    let agent = mtls_agent(&lab);
    hello(&agent.addr, &lab.controller(Some(&lab)))
        .await
        .unwrap();
    // By name, too: the certificate names localhost.
    let port = agent.addr.rsplit(':').next().unwrap();
    hello(&format!("localhost:{port}"), &lab.controller(Some(&lab)))
        .await
        .unwrap();
}

#[tokio::test]
async fn mtls_agent_refuses_plaintext() {
    let root = tempfile::tempdir().unwrap();
    let lab = Pki::new(root.path(), "lab");
    let agent = mtls_agent(&lab);
    let r = hello(&agent.addr, &AgentAuth::default()).await;
    expect_refusal(r, &["refused this controller", "only TLS", "--agent-ca"]);
}

#[tokio::test]
async fn mtls_agent_refuses_a_client_without_a_certificate() {
    let root = tempfile::tempdir().unwrap();
    let lab = Pki::new(root.path(), "lab");
    let agent = mtls_agent(&lab);
    let r = hello(&agent.addr, &lab.controller(None)).await;
    expect_refusal(r, &["none was presented", "--agent-cert and --agent-key"]);
}

#[tokio::test]
async fn mtls_agent_refuses_a_certificate_from_another_ca() {
    let root = tempfile::tempdir().unwrap();
    let lab = Pki::new(root.path(), "lab");
    let other = Pki::new(root.path(), "other");
    let agent = mtls_agent(&lab);
    let r = hello(&agent.addr, &lab.controller(Some(&other))).await;
    expect_refusal(r, &["not signed by the agent's --tls-client-ca"]);
}

#[tokio::test]
async fn controller_refuses_an_agent_certificate_from_another_ca() {
    let root = tempfile::tempdir().unwrap();
    let lab = Pki::new(root.path(), "lab");
    let other = Pki::new(root.path(), "other");
    let agent = mtls_agent(&lab);
    let r = hello(&agent.addr, &other.controller(Some(&lab))).await;
    expect_refusal(r, &["TLS failed", "not signed by --agent-ca"]);
}

#[tokio::test]
async fn tls_controller_against_a_plaintext_agent_is_told_so() {
    let agent = AgentProc::spawn(&["--listen", "127.0.0.1:0"], &[]);
    let root = tempfile::tempdir().unwrap();
    let lab = Pki::new(root.path(), "lab");
    let r = hello(&agent.addr, &lab.controller(Some(&lab))).await;
    expect_refusal(r, &["does not speak TLS"]);
}

fn token_agent(dir: &Path) -> AgentProc {
    let file = dir.join("agent-token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    AgentProc::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            file.to_str().unwrap(),
        ],
        &[],
    )
}

fn token_auth(dir: &Path, token: &str) -> AgentAuth {
    let file = dir.join("controller-token");
    std::fs::write(&file, token).unwrap();
    AgentAuth {
        token_file: Some(file),
        ..AgentAuth::default()
    }
}

#[tokio::test]
async fn token_agent_refuses_a_missing_token() {
    let dir = tempfile::tempdir().unwrap();
    let agent = token_agent(dir.path());
    let r = hello(&agent.addr, &AgentAuth::default()).await;
    expect_refusal(r, &["requires a bearer token", "--agent-token-file"]);
}

#[tokio::test]
async fn token_agent_refuses_a_wrong_token() {
    let dir = tempfile::tempdir().unwrap();
    let agent = token_agent(dir.path());
    let wrong = TOKEN.replace('s', "z");
    let r = hello(&agent.addr, &token_auth(dir.path(), &wrong)).await;
    expect_refusal(r, &["token was not accepted"]);
    // A prefix of the right token is not the right token.
    let r = hello(&agent.addr, &token_auth(dir.path(), &TOKEN[..20])).await;
    expect_refusal(r, &["token was not accepted"]);
}

#[tokio::test]
async fn token_agent_accepts_the_right_token() {
    let dir = tempfile::tempdir().unwrap();
    let agent = token_agent(dir.path());
    hello(&agent.addr, &token_auth(dir.path(), TOKEN))
        .await
        .unwrap();
}

#[tokio::test]
async fn token_from_the_environment_on_a_tls_agent_listening_on_all_addresses() {
    let root = tempfile::tempdir().unwrap();
    let lab = Pki::new(root.path(), "lab");
    let agent = AgentProc::spawn(
        &[
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            &lab.path("agent.pem"),
            "--tls-key",
            &lab.path("agent-key.pem"),
        ],
        &[("TOKENGUN_AGENT_TOKEN", TOKEN)],
    );
    let mut auth = lab.controller(None);
    auth.token_file = token_auth(root.path(), TOKEN).token_file;
    hello(&agent.loopback(), &auth).await.unwrap();
    auth.token_file = None;
    expect_refusal(
        hello(&agent.loopback(), &auth).await,
        &["requires a bearer token"],
    );
}

/// Runs `tokengun-agent serve ARGS` expecting it to refuse to start.
fn refused_start(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(workspace_bin("tokengun-agent"))
        .arg("serve")
        .args(args)
        .env_remove("TOKENGUN_AGENT_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn non_loopback_listen_without_auth_refuses_to_start() {
    let (code, stdout, stderr) = refused_start(&["--listen", "0.0.0.0:0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        !stdout.contains("listening"),
        "it listened before refusing: {stdout}"
    );
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");
    // TLS alone authenticates no one either.
    let root = tempfile::tempdir().unwrap();
    let lab = Pki::new(root.path(), "lab");
    let (code, _, stderr) = refused_start(&[
        "--listen",
        "0.0.0.0:0",
        "--tls-cert",
        &lab.path("agent.pem"),
        "--tls-key",
        &lab.path("agent-key.pem"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("refusing to listen"), "{stderr}");
    // The same listen address starts when told to go without authentication (old name too).
    for flag in ["--insecure-no-auth", "--insecure-listen"] {
        let agent = AgentProc::spawn(&["--listen", "0.0.0.0:0", flag], &[]);
        assert!(agent.addr.starts_with("0.0.0.0:"), "{}", agent.addr);
    }
}

#[test]
fn bad_credentials_are_refused_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "abc\n").unwrap();
    let (code, _, stderr) = refused_start(&["--token-file", short.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("at least 16"), "{stderr}");
    let (code, _, stderr) = refused_start(&["--tls-cert", "nowhere.pem"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let (code, _, stderr) =
        refused_start(&["--tls-cert", "nowhere.pem", "--tls-key", "nowhere-key.pem"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot read --tls-cert nowhere.pem"),
        "{stderr}"
    );
}

async fn sim() -> SimHandle {
    SimHandle::start(
        "127.0.0.1:0",
        SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(1), 5, 4),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_target_outside_the_allow_list_is_refused() {
    let agent = AgentProc::spawn(&[], &[]);
    let link = AgentLink::connect(&agent.addr, CONNECT).await.unwrap();
    // TEST-NET-1: refused before any packet is sent.
    let e = link
        .preflight("http://192.0.2.7:11434", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("192.0.2.7") && e.contains("allow-list"), "{e}");
    // Loopback is on the default list: the same agent reaches a local server.
    let sim = sim().await;
    link.preflight(&sim.url(), None).await.unwrap();
}

#[tokio::test]
async fn a_host_name_is_checked_on_the_address_it_resolves_to() {
    let sim = sim().await;
    let port = sim.url().rsplit(':').next().unwrap().to_string();
    let by_name = format!("http://localhost:{port}");
    // An agent whose list holds 10.0.0.0/8 only: `localhost` is a name, but it resolves to
    // loopback, which this agent does not allow.
    let agent = AgentProc::spawn(&["--allow-target", "10.0.0.0/8"], &[]);
    let link = AgentLink::connect(&agent.addr, CONNECT).await.unwrap();
    let e = link
        .preflight(&by_name, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("localhost resolves to") && e.contains("not on this agent's allow-list"),
        "{e}"
    );
    assert!(e.contains("10.0.0.0/8"), "the list is named: {e}");
    // The same name through an agent that allows loopback works: the refusal was the list's.
    let agent = AgentProc::spawn(
        &["--allow-target", "10.0.0.0/8", "--allow-target", "loopback"],
        &[],
    );
    let link = AgentLink::connect(&agent.addr, CONNECT).await.unwrap();
    link.preflight(&by_name, None).await.unwrap();
}

/// A server that answers every request with a redirect to `location`; counts its connections.
async fn redirector(location: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let location = location.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), hits)
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let sim = sim().await;
    // A second local listener stands for "elsewhere": it must see no connection.
    let (elsewhere, elsewhere_hits) = redirector("http://127.0.0.1:9/".into()).await;
    let (target, target_hits) = redirector(format!("{elsewhere}/api/version")).await;
    let agent = AgentProc::spawn(&[], &[]);
    let link = AgentLink::connect(&agent.addr, CONNECT).await.unwrap();
    let e = link
        .preflight(&target, Some(tokengun_common::Api::OllamaGenerate))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("302"), "{e}");
    assert!(target_hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(
        elsewhere_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the agent followed a redirect"
    );
    drop(sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_above_the_agents_cap_is_refused() {
    let sim = sim().await;
    let agent = AgentProc::spawn(&["--max-rate", "2"], &[]);
    let out = tempfile::tempdir().unwrap();
    let mut cfg = open_config(
        &sim.url(),
        "deepseek-r1:7b",
        &[5.0],
        Duration::from_secs(1),
        out.path(),
    );
    cfg.agents = vec![agent.addr.clone()];
    let e = run(cfg).await.unwrap_err().to_string();
    assert!(
        e.contains("rate 5 requests/s") && e.contains("--max-rate") && e.contains("2 requests/s"),
        "{e}"
    );
    // At the cap, it runs.
    let mut cfg = open_config(
        &sim.url(),
        "deepseek-r1:7b",
        &[2.0],
        Duration::from_millis(500),
        out.path(),
    );
    cfg.agents = vec![agent.addr.clone()];
    cfg.run_id = Some("at-cap".into());
    run(cfg).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duration_above_the_agents_cap_is_refused() {
    let sim = sim().await;
    let agent = AgentProc::spawn(&["--max-duration", "2s"], &[]);
    let out = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&sim.url(), "deepseek-r1:7b", &[1], out.path());
    cfg.shape = tokengun_common::LoadShape::Closed;
    cfg.duration = Duration::from_secs(5);
    cfg.agents = vec![agent.addr.clone()];
    let e = run(cfg).await.unwrap_err().to_string();
    assert!(e.contains("--max-duration") && e.contains("5s"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_above_the_agents_cap_is_refused() {
    let sim = sim().await;
    let agent = AgentProc::spawn(&["--max-concurrency", "4"], &[]);
    let out = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&sim.url(), "deepseek-r1:7b", &[8], out.path());
    cfg.agents = vec![agent.addr.clone()];
    let e = run(cfg).await.unwrap_err().to_string();
    assert!(
        e.contains("level 8") && e.contains("--max-concurrency"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_overrunning_the_agents_duration_cap_is_aborted() {
    // Each request would stream for 20 s; the agent allows a cycle 1 s.
    let sim = SimHandle::start(
        "127.0.0.1:0",
        SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(100), 200, 4),
    )
    .await
    .unwrap();
    let agent = AgentProc::spawn(&["--max-duration", "1s"], &[]);
    let out = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&sim.url(), "deepseek-r1:7b", &[2], out.path());
    cfg.agents = vec![agent.addr.clone()];
    let started = Instant::now();
    let result = run(cfg).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the cycle ran {took:?}, past the agent's cap"
    );
    // The aborted cycle's requests are recorded as aborted, not completed.
    let run_dir = match &result {
        Ok(r) => r.run_dir.clone(),
        Err(tokengun::run::RunError::Broken { run_dir, .. }) => run_dir.clone(),
        Err(e) => panic!("{e}"),
    };
    let rows = tokengun_tests::read_csv(
        &tokengun_tests::level_dir(&run_dir, "deepseek-r1-7b", 2).join("request_summary.csv"),
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.values().any(|v| v == "Aborted")),
        "{rows:?}"
    );
}

#[tokio::test]
async fn a_protocol_version_mismatch_names_both_versions() {
    let agent = AgentProc::spawn(&[], &[]);
    let mut client =
        tokengun_proto::agent_client::AgentClient::connect(format!("http://{}", agent.addr))
            .await
            .unwrap();
    let theirs = tokengun_proto::PROTOCOL_VERSION + 41;
    let s = client
        .hello(tokengun_proto::HelloRequest {
            protocol_version: theirs,
            controller_version: "9.9.9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::FailedPrecondition);
    let m = s.message();
    assert!(
        m.contains(&format!("controller speaks version {theirs}"))
            && m.contains(&format!(
                "this agent speaks {}",
                tokengun_proto::PROTOCOL_VERSION
            )),
        "{m}"
    );
    // The matching version is welcomed.
    let r = client
        .hello(tokengun_proto::HelloRequest {
            protocol_version: tokengun_proto::PROTOCOL_VERSION,
            controller_version: "x".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.protocol_version, tokengun_proto::PROTOCOL_VERSION);
}

#[test]
fn certificates_made_by_the_certs_subcommand_work_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("lab");
    let status = Command::new(workspace_bin("tokengun-agent"))
        .args(["certs", "--dir", certs.to_str().unwrap()])
        .args(["--agent", "localhost,127.0.0.1", "--controller", "ws"])
        .status()
        .unwrap();
    assert!(status.success());
    let p = |f: &str| certs.join(f).to_string_lossy().into_owned();
    let agent = AgentProc::spawn(
        &[
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            &p("localhost.pem"),
            "--tls-key",
            &p("localhost-key.pem"),
            "--tls-client-ca",
            &p("ca.pem"),
        ],
        &[],
    );
    let auth = AgentAuth {
        ca: Some(certs.join("ca.pem")),
        cert: Some(certs.join("ws.pem")),
        key: Some(certs.join("ws-key.pem")),
        token_file: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(hello(&agent.loopback(), &auth)).unwrap();
}

#[cfg(unix)]
#[test]
fn the_agent_tells_systemd_it_is_ready_once_it_listens() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let agent = AgentProc::spawn(&[], &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert!(msg.contains(&agent.addr), "{msg:?}");
    // Ready means listening.
    std::net::TcpStream::connect(&agent.addr).unwrap();
}
