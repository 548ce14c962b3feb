//! The server a plan owns (`[server]`), driven through the first agent (the one next to it):
//! started for a setting and checked healthy, stopped between settings and at the end, with
//! exactly what ran recorded for the manifest.

use super::{Fleet, FleetError};
use crate::link::LinkError;
use crate::plan::{ManagedServer, RunConfig};
use tokengun_common::Api;
use tokengun_common::run_dir::ServerProcess;
use tokengun_proto as pb;

/// Where the agent checks that a started server answers: Ollama's `/api/version` for the
/// Ollama APIs, else `/v1/models` (Ollama, llama.cpp, vLLM, SGLang and TGI all serve it, and
/// llama.cpp answers 503 there while its model loads).
pub fn health_url(target: &str, api: Option<Api>) -> String {
    let base = target.trim_end_matches('/');
    match api {
        Some(a) if a.family() == "ollama" => format!("{base}/api/version"),
        _ => format!("{base}/v1/models"),
    }
}

/// Starts setting `index` of the plan's server on the first agent and waits until it answers.
pub async fn start_setting(
    up: &Fleet,
    cfg: &RunConfig,
    server: &ManagedServer,
    index: usize,
) -> Result<ServerProcess, FleetError> {
    let setting = &server.settings[index.min(server.settings.len().saturating_sub(1))];
    let mut env = server.env.clone();
    env.extend(setting.env.iter().cloned());
    let member = up.members.first().ok_or(FleetError::NoAgent)?;
    let reply = member
        .link
        .start_server(
            pb::StartServerRequest {
                command: server.command.clone(),
                args: setting.args.clone(),
                env: env.iter().cloned().collect(),
                health_url: health_url(&up.target, cfg.api),
                health_timeout_ms: u64::try_from(server.health_timeout.as_millis())
                    .unwrap_or(u64::MAX),
            },
            server.health_timeout,
        )
        .await
        .map_err(|e| match e {
            LinkError::Refused { message, .. } => FleetError::ServerStart {
                setting: setting.label.clone(),
                reason: message,
            },
            other => other.into(),
        })?;
    // One process may serve several targets (`tokengun sim --instances N`): each must answer.
    let deadline = tokio::time::Instant::now() + server.health_timeout;
    for t in cfg.matrix.targets.iter().skip(1) {
        while let Err(e) = member.link.preflight(t, cfg.api).await {
            if tokio::time::Instant::now() >= deadline {
                stop(up, server).await;
                return Err(FleetError::ServerStart {
                    setting: setting.label.clone(),
                    reason: format!("{t} did not answer after the server started: {e}"),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    let version = member
        .link
        .preflight(&up.target, cfg.api)
        .await
        .ok()
        .and_then(|i| i.server_version)
        .unwrap_or_default();
    Ok(ServerProcess {
        command: server.command.clone(),
        args: setting.args.clone(),
        env,
        pid: Some(reply.pid).filter(|p| *p > 0),
        version,
        ready_s: reply.ready_ms as f64 / 1e3,
        stopped: String::new(),
    })
}

/// Stops the plan's server on the first agent: how it went (SIGTERM, SIGKILL), or why the agent
/// could not be asked.
pub async fn stop(up: &Fleet, server: &ManagedServer) -> String {
    let Some(member) = up.members.first() else {
        return "no agent to stop it".into();
    };
    match member.link.stop_server(server.stop_grace).await {
        Ok(r) => r.how,
        Err(e) => format!("not stopped: {e}"),
    }
}

/// Stops the plan's server when the run could not go on (the error is what the user sees).
pub async fn stop_after_error(up: &Fleet, cfg: &RunConfig) {
    if let (Some(server), Some(_)) = (&cfg.matrix.server, &up.server) {
        let how = stop(up, server).await;
        tracing::info!("the plan's server stopped after an error: {how}");
    }
}
