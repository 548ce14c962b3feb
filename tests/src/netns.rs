//! Several hosts on one Linux machine: network namespaces joined to the root namespace by veth
//! pairs, real processes inside them, links cut and restored; everything removed on drop.
//!
//! Each namespace gets its own /24 under 10.77.0.0/16: the root side is `10.77.<o>.1`, the
//! namespace side `10.77.<o>.2`, where the octet `<o>` is claimed host-wide by creating the root
//! side veth `tgv<o>` (the kernel refuses a second one, so tests running side by side, in this
//! process or another, never share a subnet). The namespace is `tg<pid>-<o>`. A fallback
//! `unreachable 10.77.<o>.0/24` route (metric [`FALLBACK_METRIC`]) keeps traffic for a cut link
//! from leaving through the default route: while the link is down nothing reaches the namespace
//! and new connections fail at once with "No route to host"; established TCP connections stall
//! and resume when the link comes back (as after an unplugged cable), unless an endpoint gave
//! up on them first. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's `ip`.

use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Metric of the per-subnet fallback route used while a link is down.
pub const FALLBACK_METRIC: u32 = 4242;
/// The agents' gRPC port inside each namespace.
pub const AGENT_PORT: u16 = 7411;
/// The simulator's port on each namespace's loopback (Ollama's).
pub const SIM_PORT: u16 = 11434;
/// How long a spawned agent or simulator may take to say it is listening.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Whether this test may build namespaces. `Some(())`: go on. `None`: not root or `ip netns`
/// unusable, the reason printed, the test should return (skip). Under `CI=true` it panics
/// instead: CI runs as root and these tests must run there.
pub fn require_root() -> Option<()> {
    match netns_usable() {
        Ok(()) => Some(()),
        Err(reason) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but the network-namespace tests cannot run: {reason}");
            }
            eprintln!("skipped: {reason} (these tests run as root; under CI=true they must run)");
            None
        }
    }
}

/// Ok when we are root and `ip netns` works here (probed by making and deleting a namespace).
fn netns_usable() -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("network namespaces are Linux only".into());
    }
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or("no Uid line in /proc/self/status")?;
    if euid != "0" {
        return Err(format!("not root (euid {euid})"));
    }
    let probe = format!("tgprobe{}-{}", std::process::id(), next_serial());
    ip(&["netns", "add", &probe]).map_err(|e| format!("`ip netns` is unusable here: {e}"))?;
    let up = ip(&["netns", "exec", &probe, "ip", "link", "set", "lo", "up"]);
    let _ = ip(&["netns", "del", &probe]);
    up.map_err(|e| format!("`ip netns exec` is unusable here: {e}"))
}

fn next_serial() -> u32 {
    static SERIAL: AtomicU32 = AtomicU32::new(0);
    SERIAL.fetch_add(1, Ordering::Relaxed)
}

/// Runs `ip ARGS`; Err carries the command and its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip` ({e}); install iproute2"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_stdout(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// One namespace and its link to the root namespace.
#[derive(Debug)]
pub struct Netns {
    /// `tg<pid>-<octet>`.
    pub name: String,
    /// The third octet of its subnet, 10.77.<octet>.0/24.
    pub octet: u8,
    /// The veth in the root namespace (`tgv<octet>`); `cut`/`restore` take it down/up.
    pub host_veth: String,
    /// Its peer inside the namespace (`tgp<octet>`).
    pub ns_veth: String,
    /// 10.77.<octet>.1, on `host_veth`.
    pub host_addr: Ipv4Addr,
    /// 10.77.<octet>.2, on `ns_veth`: what the root namespace dials.
    pub ns_addr: Ipv4Addr,
}

impl Netns {
    fn subnet(&self) -> String {
        format!("10.77.{}.0/24", self.octet)
    }

    /// `HOST:PORT` of the agent started here by [`Netns::spawn_agent`].
    pub fn agent_addr(&self) -> String {
        format!("{}:{AGENT_PORT}", self.ns_addr)
    }

    /// Starts `bin ARGS` inside this namespace (`ip netns exec`, which execs: the child's pid is
    /// the program's own). Killed when the returned handle drops, or with the fabric.
    pub fn spawn(&self, bin: &Path, args: &[&str]) -> NsProc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(bin).args(args);
        NsProc::start(cmd, format!("{} in {}", bin.display(), self.name))
    }

    /// `tokengun-agent serve` on 10.77.<o>.2:7411 with a bearer token, allowed to load only its
    /// namespace's loopback; returns it once it printed "listening on ADDR", and that ADDR.
    pub fn spawn_agent(&self, token_file: &Path, extra: &[&str]) -> (NsProc, String) {
        let listen = self.agent_addr();
        let token = token_file.to_string_lossy();
        // Each agent its own record spool (one agent per spool folder).
        let spool = self.spool_dir();
        let _ = std::fs::create_dir_all(&spool);
        let spool = spool.to_string_lossy().into_owned();
        let mut args = vec![
            "serve",
            "--listen",
            &listen,
            "--token-file",
            &token,
            "--allow-target",
            "loopback",
            "--spool-dir",
            &spool,
        ];
        args.extend_from_slice(extra);
        let p = self.spawn(&crate::workspace_bin("tokengun-agent"), &args);
        let line = p.wait_line("listening on", START_LIMIT);
        let addr = line
            .rsplit(' ')
            .next()
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        (p, addr)
    }

    /// `tokengun sim --listen 127.0.0.1:11434 ARGS` on this namespace's own loopback; returns it
    /// once it is serving, and its URL.
    pub fn spawn_sim(&self, extra: &[&str]) -> (NsProc, String) {
        let listen = format!("127.0.0.1:{SIM_PORT}");
        let mut args = vec!["sim", "--listen", &listen];
        args.extend_from_slice(extra);
        let p = self.spawn(&crate::workspace_bin("tokengun"), &args);
        let line = p.wait_line("serving on", START_LIMIT);
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        (p, url)
    }

    /// Takes the root side of the link down: nothing passes until [`Netns::restore`].
    pub fn cut(&self) {
        ip(&["link", "set", &self.host_veth, "down"]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Brings the link back up (its addresses and connected route come back with it).
    pub fn restore(&self) {
        ip(&["link", "set", &self.host_veth, "up"]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Pids of the processes living in this namespace.
    pub fn pids(&self) -> Vec<u32> {
        ip_stdout(&["netns", "pids", &self.name])
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Kills what runs inside (by pid), then removes the namespace, the veth and the route.
    /// The agent's record spool folder of this namespace (removed with it).
    pub fn spool_dir(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{}-spool", self.name))
    }

    fn teardown(&self) {
        let _ = std::fs::remove_dir_all(self.spool_dir());
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = ip(&["netns", "del", &self.name]);
        // Gone with the namespace, unless something kept it alive.
        let _ = ip(&["link", "del", &self.host_veth]);
        let metric = FALLBACK_METRIC.to_string();
        let _ = ip(&[
            "route",
            "del",
            "unreachable",
            &self.subnet(),
            "metric",
            &metric,
        ]);
    }
}

/// N namespaces, each linked to the root namespace; all removed on drop (also after a panic).
#[derive(Debug)]
pub struct Fabric {
    nets: Vec<Netns>,
}

impl Fabric {
    /// Builds `n` namespaces (call [`require_root`] first). Panics with the failing `ip` command.
    pub fn new(n: usize) -> Self {
        sweep_stale();
        let mut fabric = Self { nets: Vec::new() };
        for _ in 0..n {
            let net = claim_subnet();
            fabric.nets.push(net);
            let net = &fabric.nets[fabric.nets.len() - 1];
            if let Err(e) = build(net) {
                panic!("cannot build namespace {}: {e}", net.name);
            }
        }
        fabric
    }

    /// The k-th namespace (0-based).
    pub fn ns(&self, k: usize) -> &Netns {
        &self.nets[k]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Netns> {
        self.nets.iter()
    }

    pub fn len(&self) -> usize {
        self.nets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for net in &self.nets {
            net.teardown();
        }
    }
}

/// Claims a free 10.77.<o>.0/24 by creating the veth pair `tgv<o>`/`tgp<o>`.
fn claim_subnet() -> Netns {
    let pid = std::process::id();
    let start = (pid
        .wrapping_mul(37)
        .wrapping_add(next_serial().wrapping_mul(11)))
        % 254;
    let in_use = ip_stdout(&["-4", "-o", "addr", "show"]) + &ip_stdout(&["-4", "route", "show"]);
    for i in 0..254 {
        let octet = u8::try_from((start + i) % 254 + 1).unwrap_or(1);
        let prefix = format!(" 10.77.{octet}.");
        let route = format!("10.77.{octet}.0/24");
        if in_use.contains(&prefix) || in_use.contains(&route) {
            continue;
        }
        let (host_veth, ns_veth) = (format!("tgv{octet}"), format!("tgp{octet}"));
        let made = ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", &ns_veth,
        ]);
        if made.is_ok() {
            return Netns {
                name: format!("tg{pid}-{octet}"),
                octet,
                host_veth,
                ns_veth,
                host_addr: Ipv4Addr::new(10, 77, octet, 1),
                ns_addr: Ipv4Addr::new(10, 77, octet, 2),
            };
        }
    }
    panic!("no free subnet under 10.77.0.0/16 (every tgv1..tgv254 veth exists?)");
}

fn build(net: &Netns) -> Result<(), String> {
    let host_cidr = format!("{}/24", net.host_addr);
    let ns_cidr = format!("{}/24", net.ns_addr);
    let metric = FALLBACK_METRIC.to_string();
    let subnet = net.subnet();
    let inside = |args: &[&str]| {
        let mut all = vec!["netns", "exec", &net.name, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    };
    ip(&["netns", "add", &net.name])?;
    ip(&["link", "set", &net.ns_veth, "netns", &net.name])?;
    ip(&["addr", "add", &host_cidr, "dev", &net.host_veth])?;
    ip(&["route", "add", "unreachable", &subnet, "metric", &metric])?;
    ip(&["link", "set", &net.host_veth, "up"])?;
    inside(&["addr", "add", &ns_cidr, "dev", &net.ns_veth])?;
    inside(&["link", "set", &net.ns_veth, "up"])?;
    inside(&["link", "set", "lo", "up"])
}

/// Removes namespaces `tg<pid>-<o>` left by test processes that died without dropping their
/// fabric (SIGKILL), with their veth and route. Only names of this exact form with a dead pid.
fn sweep_stale() {
    for line in ip_stdout(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some((pid, octet)) = name
            .strip_prefix("tg")
            .and_then(|rest| rest.split_once('-'))
        else {
            continue;
        };
        let (Ok(pid), Ok(octet)) = (pid.parse::<u32>(), octet.parse::<u8>()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        Netns {
            name: name.to_string(),
            octet,
            host_veth: format!("tgv{octet}"),
            ns_veth: format!("tgp{octet}"),
            host_addr: Ipv4Addr::new(10, 77, octet, 1),
            ns_addr: Ipv4Addr::new(10, 77, octet, 2),
        }
        .teardown();
    }
}

/// A child process (in a namespace or not): stdout lines arrive on a channel, stderr is kept;
/// killed on drop.
pub struct NsProc {
    what: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout_seen: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl NsProc {
    fn start(mut cmd: Command, what: String) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("TOKENGUN_AGENT_TOKEN")
            .env_remove("NOTIFY_SOCKET");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout_seen = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let seen = Arc::clone(&stdout_seen);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(mut s) = seen.lock() {
                        s.push(line.clone());
                    }
                    let _ = tx.send(line);
                }
            });
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut err) = child.stderr.take() {
            let keep = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = keep.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        Self {
            what,
            child,
            lines,
            stdout_seen,
            stderr,
        }
    }

    /// Starts `bin ARGS` in the root namespace (e.g. the controller), with the same handling.
    pub fn spawn_root(bin: &Path, args: &[&str]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Self::start(cmd, bin.display().to_string())
    }

    /// Waits (bounded) for a stdout line containing `needle`; panics with stderr otherwise.
    pub fn wait_line(&self, needle: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(e) => panic!(
                    "{}: no stdout line containing {needle:?} within {limit:?} ({e}); stderr: {}",
                    self.what,
                    self.stderr()
                ),
            }
        }
    }

    /// Waits up to `limit` for the process to exit; None if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            // A bounded sleep that clippy allows: nobody sends on this channel.
            let (_tx, rx) = mpsc::channel::<()>();
            let _ = rx.recv_timeout(Duration::from_millis(20));
        }
    }

    /// The child's pid (inside a namespace: the program's own, `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Every stdout line it wrote so far.
    pub fn stdout(&self) -> String {
        self.stdout_seen
            .lock()
            .map(|s| s.join("\n"))
            .unwrap_or_default()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NsProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A bearer token file (the agents' and the controller's) in `dir`.
pub fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("agent-token");
    std::fs::write(&path, "netns-test-token-0123456789abcdef\n")
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}
