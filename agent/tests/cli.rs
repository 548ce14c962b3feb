//! The `tokengun-agent` binary: refuses unsafe listening, serves on loopback and says where.

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
