//! Helpers the controller's binary tests share: run `tokengun`, find `tokengun-agent`, a free
//! port, the one-line error every refusal must be.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_tokengun");

/// `tokengun ARGS`, waited for.
pub fn tokengun(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// A loopback port free just now (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `tokengun-agent` binary beside `tokengun` (built with cargo if a narrower command left it
/// out).
pub fn agent_bin() -> PathBuf {
    let path =
        Path::new(BIN).with_file_name(format!("tokengun-agent{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "tokengun-agent", "--bin", "tokengun-agent"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot build tokengun-agent");
    }
    path
}

/// The error must be one line, start with `error:`, and contain every `needle`.
pub fn assert_one_line_error(out: &Output, code: i32, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} missing from: {err}");
    }
}
