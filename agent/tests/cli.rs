//! The `tokengun-agent` binary: refuses unsafe listening, serves on loopback and says where.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tokengun-agent");

#[test]
fn refuses_a_public_listen_address_without_authentication() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--insecure-no-auth") && err.contains("--token-file"),
        "{err}"
    );
}

#[test]
fn serves_on_loopback_and_prints_the_bound_address() {
    let spool = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--spool-dir"])
        .arg(spool.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    let addr = line.trim().rsplit(' ').next().unwrap();
    let addr: std::net::SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{line}");
}

/// Two ports free just now on loopback (bound and released: another process could take one in
/// between, which the agent would report as a bind error naming the port).
fn free_ports() -> [u16; 2] {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    [
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    ]
}

#[test]
fn two_agents_on_one_host_need_only_their_listen_addresses() {
    let home = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let mut children: Vec<std::process::Child> = ports
        .iter()
        .map(|p| {
            Command::new(BIN)
                .args(["serve", "--listen", &format!("127.0.0.1:{p}")])
                .env("HOME", home.path())
                .env_remove("XDG_STATE_HOME")
                .env_remove("STATE_DIRECTORY")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let lines: Vec<String> = children
        .iter_mut()
        .map(|c| {
            let mut line = String::new();
            BufReader::new(c.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            line
        })
        .collect();
    // Both are serving at once (each printed its address) before either is stopped.
    let errs: Vec<String> = children.iter_mut().map(stop).collect();
    for (p, line) in ports.iter().zip(&lines) {
        assert!(
            line.contains(&format!("listening on 127.0.0.1:{p}")),
            "agent on port {p} did not start: {line:?}; stderr: {errs:?}"
        );
        let spool = home
            .path()
            .join(format!(".local/state/tokengun-agent/127.0.0.1-{p}"));
        assert!(spool.join("agent-id").is_file(), "{}", spool.display());
    }
}

/// Kills the child and returns what it wrote to stderr.
fn stop(c: &mut std::process::Child) -> String {
    let _ = c.kill();
    let _ = c.wait();
    let mut err = String::new();
    if let Some(mut e) = c.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    err
}

#[test]
fn probe_json_says_which_power_source_and_why() {
    let out = Command::new(BIN)
        .args([
            "probe",
            "--json",
            "--power",
            "none",
            "--target",
            "http://10.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["power_choice"], "none");
    assert_eq!(doc["power"], "power: none (--power none)");
    let sources = doc["sources"].as_array().unwrap();
    assert_eq!(sources[0]["source"], "process");
    for s in &sources[1..] {
        assert_eq!(s["available"], false, "{s}");
        assert_eq!(s["detail"], "not used (--power none)", "{s}");
    }
    assert!(
        !doc["macos_type_checked_only"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // auto, off a Mac: the Apple sources say which platform they need; one line sums up.
    #[cfg(not(target_os = "macos"))]
    {
        let out = Command::new(BIN)
            .args(["probe", "--json", "--target", "http://10.0.0.1:1"])
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for (i, name) in [(1, "ioreport"), (2, "powermetrics")] {
            assert_eq!(doc["sources"][i]["source"], name);
            assert_eq!(doc["sources"][i]["detail"], "macOS only");
        }
        let line = doc["power"].as_str().unwrap();
        assert!(
            line.contains("(--power auto)") && !line.contains('\n'),
            "{line}"
        );
    }
}

#[test]
fn power_choices_other_than_the_four_are_refused() {
    for sub in [&["probe"][..], &["serve", "--listen", "127.0.0.1:0"][..]] {
        let out = Command::new(BIN)
            .args(sub)
            .args(["--power", "smc"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("use auto, ioreport, powermetrics or none"),
            "{err}"
        );
    }
}
