//! The files in deploy/ checked by the tools their platforms use: `systemd-analyze verify` (the
//! unit), Python's plistlib (the launchd plist), kubernetes-validate's bundled schemas (the
//! manifests) and hadolint (the container file); and every `tokengun-agent`/`tokengun` flag they
//! pass is one the binaries know. `.ci/run` installs the checkers; outside CI a missing one skips
//! its test with a message, under CI=true it fails it.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use tokengun_tests::workspace_bin;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy(file: &str) -> PathBuf {
    repo().join("deploy").join(file)
}

/// The checker at `path` (or on PATH), or None after saying why it is skipped.
fn checker(name: &str, path: Option<PathBuf>) -> Option<PathBuf> {
    let found = match path {
        Some(p) => p.exists().then_some(p),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.exists())
        }),
    };
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is missing under CI: .ci/run installs it"
        );
        eprintln!("SKIPPED: {name} is not installed (bash .ci/run installs it)");
    }
    found
}

fn venv_tool(name: &str) -> Option<PathBuf> {
    checker(name, Some(repo().join(".venv-deploy/bin").join(name)))
}

/// Every `--flag` of `args` must be in `bin SUBCOMMAND --help`.
fn flags_are_known(bin: &str, subcommand: &str, args: &[String], file: &str) {
    let help = Command::new(workspace_bin(bin))
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for a in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{a} ")) || help.contains(&format!("{a}\n")),
            "{file} passes {a}, which `{bin} {subcommand}` does not know"
        );
    }
}

#[test]
fn systemd_unit_verifies_and_passes_known_flags() {
    let text = std::fs::read_to_string(deploy("systemd/tokengun-agent.service")).unwrap();
    let exec = text
        .replace("\\\n", " ")
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=").map(str::to_string))
        .unwrap();
    let args: Vec<String> = exec.split_whitespace().map(String::from).collect();
    assert_eq!(args[0], "/usr/local/bin/tokengun-agent");
    flags_are_known("tokengun-agent", "serve", &args[2..], "the systemd unit");
    assert!(text.contains("Type=notify"), "readiness notification");
    for gpu in ["/dev/nvidiactl", "char-drm", "/dev/kfd"] {
        assert!(text.contains(&format!("DeviceAllow={gpu}")), "{gpu}");
    }
    let Some(analyze) = checker("systemd-analyze", None) else {
        return;
    };
    // verify needs the ExecStart binary to exist: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("tokengun-agent.service");
    let agent = workspace_bin("tokengun-agent");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/tokengun-agent", agent.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .env("SYSTEMD_LOG_LEVEL", "info")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It exits 0 even for directives it ignores: any line about the unit is a finding.
    let findings: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("tokengun-agent.service"))
        .collect();
    assert!(
        out.status.success() && findings.is_empty(),
        "systemd-analyze verify: {said}"
    );
}

/// A launchd plist of deploy/ read by Python's plistlib (the parser launchd's format is
/// checked against): the document and its ProgramArguments; None without python3 (skipped).
fn plist(rel: &str) -> Option<(serde_json::Value, Vec<String>)> {
    let file = deploy(rel);
    let python = checker("python3", None)?;
    let out = Command::new(python)
        .args([
            "-c",
            "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plistlib on {rel}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plist: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let args: Vec<String> = plist["ProgramArguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(args[0].ends_with("/tokengun-agent") && args[1] == "serve");
    Some((plist, args))
}

#[test]
fn launchd_plist_parses_and_runs_the_agent_as_root() {
    let Some((plist, args)) = plist("launchd/dev.tokengun.agent.plist") else {
        return;
    };
    assert_eq!(plist["Label"], "dev.tokengun.agent");
    assert_eq!(plist["UserName"], "root", "powermetrics needs root");
    flags_are_known("tokengun-agent", "serve", &args[2..], "the launchd plist");
}

#[test]
fn launchd_user_agent_parses_and_runs_the_agent_without_root() {
    let Some((plist, args)) = plist("launchd/dev.tokengun.agent.user.plist") else {
        return;
    };
    assert_eq!(plist["Label"], "dev.tokengun.agent.user");
    // A LaunchAgent runs as the user who loads it: no UserName, and nothing under a root path.
    assert!(plist.get("UserName").is_none(), "{plist}");
    let power = args.iter().position(|a| a == "--power").unwrap();
    assert_eq!(
        args[power + 1],
        "auto",
        "IOReport first, no powermetrics without root"
    );
    for path in args.iter().filter(|a| a.starts_with('/')) {
        assert!(
            path.starts_with("/Users/"),
            "{path} is not the user's to write"
        );
    }
    flags_are_known(
        "tokengun-agent",
        "serve",
        &args[2..],
        "the launchd user plist",
    );
}

/// The `args:` lists of a manifest (block sequences of scalars).
fn yaml_args(text: &str) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if l.trim() == "args:" {
            let mut args = Vec::new();
            while let Some(next) = lines.peek() {
                let Some(item) = next.trim().strip_prefix("- ") else {
                    break;
                };
                args.push(item.trim_matches('"').to_string());
                lines.next();
            }
            all.push(args);
        }
    }
    all
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let files = [
        "k8s/agent-daemonset.yaml",
        "k8s/agent-sidecar.yaml",
        "k8s/controller-job.yaml",
    ];
    for f in files {
        let text = std::fs::read_to_string(deploy(f)).unwrap();
        let args = yaml_args(&text);
        assert!(!args.is_empty(), "{f} runs tokengun with args");
        for a in args {
            let (bin, sub) = match a[0].as_str() {
                "run" => ("tokengun", "run"),
                _ => ("tokengun-agent", a[0].as_str()),
            };
            flags_are_known(bin, sub, &a[1..], f);
        }
    }
    let Some(validate) = venv_tool("kubernetes-validate") else {
        return;
    };
    for f in files {
        // The oldest Kubernetes still commonly run; strict: unknown fields are errors.
        let out = Command::new(&validate)
            .args(["--strict", "--quiet", "--kubernetes-version", "1.30.0"])
            .arg(deploy(f))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn container_file_lints_clean() {
    let text = std::fs::read_to_string(deploy("Containerfile")).unwrap();
    assert!(
        text.matches("\nFROM ").count() + usize::from(text.starts_with("FROM ")) >= 2,
        "multi-stage"
    );
    assert!(text.contains("COPY --from=build"));
    assert!(text.contains("\nUSER "), "runs unprivileged");
    let Some(hadolint) = venv_tool("hadolint") else {
        return;
    };
    let out = Command::new(hadolint)
        .arg(deploy("Containerfile"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hadolint: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
