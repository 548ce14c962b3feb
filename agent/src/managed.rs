//! A server process a plan owns (`[server]`): started by this agent only if its command is on
//! the agent's `--allow-server-command` list, checked healthy with a timeout (the error carries
//! its last output lines), stopped with SIGTERM then SIGKILL after a grace period, and killed
//! if the agent itself goes away. One at a time.

use crate::http::{HttpClient, get_small};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Output lines kept from the server (its last ones are what an error shows).
pub const LOG_TAIL_LINES: usize = 40;
/// Between health polls.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Why a server could not be started or checked.
#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    #[error(
        "this agent does not start {command:?}: it is not on its --allow-server-command list ({allowed}); start the agent with --allow-server-command {command}"
    )]
    NotAllowed { command: String, allowed: String },
    #[error(
        "this agent does not let a plan set {name} for a server (it could make the allowed command run other code); set it in the agent's own environment"
    )]
    EnvNotAllowed { name: String },
    #[error("cannot start {command:?}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{command} exited ({status}) before it answered {health_url}; its last output:\n{tail}"
    )]
    Exited {
        command: String,
        status: String,
        health_url: String,
        tail: String,
    },
    #[error(
        "{command} did not answer {health_url} within {timeout_s:.0} s (stopped: {how}); its last output:\n{tail}"
    )]
    NeverHealthy {
        command: String,
        health_url: String,
        timeout_s: f64,
        how: String,
        tail: String,
    },
}

/// What to start.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub health_url: String,
    pub health_timeout: Duration,
}

/// A started server.
pub struct Started {
    pub pid: u32,
    pub ready: Duration,
    pub health_body: String,
}

/// The last lines a process wrote (stdout and stderr interleaved as they came).
#[derive(Clone, Default)]
pub struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    fn push(&self, line: String) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == LOG_TAIL_LINES {
            q.pop_front();
        }
        q.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn text(&self) -> String {
        let l = self.lines();
        if l.is_empty() {
            "  (nothing)".into()
        } else {
            l.iter()
                .map(|x| format!("  {x}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    }

    fn follow(&self, from: impl AsyncRead + Unpin + Send + 'static) {
        let tail = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(from).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tail.push(l);
            }
        });
    }
}

/// Environment variables a plan may not set: they change which code the allowed command runs.
fn env_refused(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    n == "PATH" || n.starts_with("LD_") || n.starts_with("DYLD_")
}

/// A running managed server: its process, the spec it was started with, its output.
struct Running {
    child: Child,
    spec: ServerSpec,
    tail: LogTail,
    pid: u32,
}

/// The agent's managed server, if one runs.
pub struct Managed {
    allowed: Vec<String>,
    running: Option<Running>,
}

impl Managed {
    /// Servers whose command is one of `allowed` (compared as given, and as resolved paths).
    pub fn new(allowed: Vec<String>) -> Self {
        Self {
            allowed,
            running: None,
        }
    }

    fn allows(&self, command: &str) -> bool {
        let canon = |s: &str| std::fs::canonicalize(s).ok();
        self.allowed
            .iter()
            .any(|a| a == command || (canon(a).is_some() && canon(a) == canon(command)))
    }

    /// Starts `spec` (stopping a running one first) and waits until its health URL answers.
    pub async fn start(
        &mut self,
        spec: &ServerSpec,
        client: &HttpClient,
    ) -> Result<Started, ManagedError> {
        if !self.allows(&spec.command) {
            return Err(ManagedError::NotAllowed {
                command: spec.command.clone(),
                allowed: if self.allowed.is_empty() {
                    "empty".into()
                } else {
                    self.allowed.join(", ")
                },
            });
        }
        if let Some(name) = spec.env.iter().map(|(k, _)| k).find(|k| env_refused(k)) {
            return Err(ManagedError::EnvNotAllowed { name: name.clone() });
        }
        // The same server already running (a resumed run): kept, not restarted mid-cycle.
        if let Some(r) = self.running.as_mut() {
            if r.spec == *spec && matches!(r.child.try_wait(), Ok(None)) {
                let body = get_small(client, &spec.health_url, POLL_EVERY * 10).await;
                if let Ok(body) = body {
                    return Ok(Started {
                        pid: r.pid,
                        ready: Duration::ZERO,
                        health_body: String::from_utf8_lossy(&body).chars().take(300).collect(),
                    });
                }
            }
        }
        self.stop(Duration::from_secs(10)).await;
        let t0 = Instant::now();
        let mut child = Command::new(&spec.command)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ManagedError::Spawn {
                command: spec.command.clone(),
                source,
            })?;
        let tail = LogTail::default();
        if let Some(o) = child.stdout.take() {
            tail.follow(o);
        }
        if let Some(e) = child.stderr.take() {
            tail.follow(e);
        }
        let pid = child.id().unwrap_or(0);
        let deadline = t0 + spec.health_timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // Let the readers take its last words.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(ManagedError::Exited {
                    command: spec.command.clone(),
                    status: status.to_string(),
                    health_url: spec.health_url.clone(),
                    tail: tail.text(),
                });
            }
            if let Ok(body) = get_small(client, &spec.health_url, POLL_EVERY * 10).await {
                let text = String::from_utf8_lossy(&body);
                let health_body: String = text.chars().take(300).collect();
                self.running = Some(Running {
                    child,
                    spec: spec.clone(),
                    tail,
                    pid,
                });
                return Ok(Started {
                    pid,
                    ready: t0.elapsed(),
                    health_body,
                });
            }
            if Instant::now() >= deadline {
                let how = stop_child(&mut child, Duration::from_secs(5)).await;
                return Err(ManagedError::NeverHealthy {
                    command: spec.command.clone(),
                    health_url: spec.health_url.clone(),
                    timeout_s: spec.health_timeout.as_secs_f64(),
                    how,
                    tail: tail.text(),
                });
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Stops the running server, if any: how it went, and its last output lines.
    pub async fn stop(&mut self, grace: Duration) -> (String, Vec<String>) {
        match self.running.take() {
            None => ("none running".into(), Vec::new()),
            Some(mut r) => {
                let how = stop_child(&mut r.child, grace).await;
                (how, r.tail.lines())
            }
        }
    }
}

/// SIGTERM, then SIGKILL once `grace` has passed; says which ended it.
async fn stop_child(child: &mut Child, grace: Duration) -> String {
    if let Ok(Some(status)) = child.try_wait() {
        return format!("had already exited ({status})");
    }
    if terminate(child) {
        if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
            return format!("exited on SIGTERM ({status})");
        }
    }
    let _ = child.kill().await;
    format!("killed (SIGKILL) after {:.0} s", grace.as_secs_f64())
}

/// Sends SIGTERM; false where it could not be sent (then the caller kills).
#[cfg(unix)]
fn terminate(child: &Child) -> bool {
    let Some(pid) = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok()
}

#[cfg(not(unix))]
fn terminate(_child: &Child) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_client() -> HttpClient {
        crate::http::client(
            Duration::from_secs(1),
            Arc::new(crate::allow::TargetPolicy::Any),
        )
    }

    fn spec(command: &str, args: &[&str]) -> ServerSpec {
        ServerSpec {
            command: command.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("TOKENGUN_TEST".into(), "yes".into())],
            health_url: "http://127.0.0.1:1/never".into(),
            health_timeout: Duration::from_millis(600),
        }
    }

    #[tokio::test]
    async fn a_command_off_the_list_is_refused_and_named() {
        let mut m = Managed::new(vec!["/usr/bin/ollama".into()]);
        let e = m
            .start(&spec("sh", &["-c", "true"]), &test_client())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--allow-server-command sh"), "{e}");
        // Nor may a plan change which code an allowed command runs.
        let mut m = Managed::new(vec!["sh".into()]);
        let mut s = spec("sh", &["-c", "true"]);
        s.env = vec![("LD_PRELOAD".into(), "/tmp/x.so".into())];
        let e = m.start(&s, &test_client()).await.err().unwrap().to_string();
        assert!(e.contains("LD_PRELOAD"), "{e}");
    }

    #[tokio::test]
    async fn a_server_that_exits_or_never_answers_is_reported_with_its_last_output() {
        let client = test_client();
        let mut m = Managed::new(vec!["sh".into()]);
        let e = m
            .start(
                &spec(
                    "sh",
                    &[
                        "-c",
                        "echo loading; echo \"bad flag $TOKENGUN_TEST\" >&2; exit 3",
                    ],
                ),
                &client,
            )
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("exited") && e.contains("bad flag yes"), "{e}");
        // Alive but never healthy: stopped (SIGTERM) after the timeout, its output shown.
        let e = m
            .start(
                &spec("sh", &["-c", "echo still starting; exec sleep 30"]),
                &client,
            )
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("did not answer") && e.contains("still starting"),
            "{e}"
        );
        assert!(e.contains("SIGTERM"), "{e}");
    }

    #[tokio::test]
    async fn the_same_server_already_running_is_kept_and_another_replaces_it() {
        // Something answers the health URL; the process itself only has to stay alive.
        let sim = tokengun_simulator::SimHandle::start(
            "127.0.0.1:0",
            tokengun_simulator::SimConfig::default(),
        )
        .await
        .unwrap();
        let client = test_client();
        let mut m = Managed::new(vec!["sleep".into()]);
        let mut s = spec("sleep", &["30"]);
        s.health_url = format!("{}/api/version", sim.url());
        let first = m.start(&s, &client).await.unwrap();
        let again = m.start(&s, &client).await.unwrap();
        assert_eq!(first.pid, again.pid, "a resumed run keeps its server");
        assert_eq!(again.ready, Duration::ZERO);
        s.args = vec!["31".into()];
        let other = m.start(&s, &client).await.unwrap();
        assert_ne!(other.pid, first.pid, "another setting is another process");
        let (how, _) = m.stop(Duration::from_secs(5)).await;
        assert!(how.contains("SIGTERM"), "{how}");
        sim.stop(Duration::from_secs(1)).await;
    }
}
