//! The run's matrix: several models, several server instances (targets) and server settings,
//! compiled into [`Group`]s — one sweep of every level each — before anything is sent.
//!
//! Order: setting (a server restart, the costliest change) → model (so one model's levels are
//! never interleaved with another's cold load) → instance count. A plan with one of each is one
//! group whose label and folder segment are empty: its run folder is the study's layout.

use serde::{Deserialize, Serialize};
use std::time::Duration;
pub use tokengun_common::TargetPolicy;

/// One server setting: the environment and arguments that differ from the base command's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    /// `OLLAMA_NUM_PARALLEL=4` (`NAME=value` pairs joined by `, `).
    pub label: String,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
}

/// A server the plan owns: started by the agent next to it for each setting, checked healthy,
/// stopped after the setting's sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagedServer {
    /// The program, as the agent's `--allow-server-command` must list it.
    pub command: String,
    /// Environment every setting gets.
    pub env: Vec<(String, String)>,
    /// Every combination of the plan's swept values; one at least.
    pub settings: Vec<Setting>,
    /// How long the server gets to answer the target's health check.
    pub health_timeout: Duration,
    /// After SIGTERM, how long before SIGKILL.
    pub stop_grace: Duration,
}

/// The dimensions of a run beyond its levels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// Models swept, in order (one at least once compiled).
    pub models: Vec<String>,
    /// Server instances the load is spread over.
    pub targets: Vec<String>,
    pub policy: TargetPolicy,
    /// Instance counts swept (the first N targets); empty = all targets at once.
    pub instances: Vec<u32>,
    pub server: Option<ManagedServer>,
    /// Ollama: unload a model (`keep_alive: 0`) before the next one loads.
    pub unload_between_models: bool,
}

/// One sweep of every level: a model on some instances under one setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub model: String,
    pub targets: Vec<String>,
    /// Index into the managed server's settings.
    pub setting: Option<usize>,
    /// What tells it apart from the others, for people (`llama3.2:1b · 2 instances`); empty
    /// when the run has one group.
    pub label: String,
    /// The folder segment below the model's folder (`2-instances_OLLAMA_NUM_PARALLEL-4`); empty
    /// when nothing but the model varies.
    pub variant: String,
    /// The setting's label (`OLLAMA_NUM_PARALLEL=4`), empty without a managed server.
    pub setting_label: String,
}

impl Matrix {
    /// The instance counts swept (all targets when none are given).
    pub fn instance_counts(&self) -> Vec<u32> {
        if self.instances.is_empty() {
            vec![u32::try_from(self.targets.len()).unwrap_or(u32::MAX)]
        } else {
            self.instances.clone()
        }
    }

    /// Every group, in run order.
    pub fn groups(&self) -> Vec<Group> {
        let settings: Vec<Option<usize>> = match &self.server {
            Some(s) if !s.settings.is_empty() => (0..s.settings.len()).map(Some).collect(),
            _ => vec![None],
        };
        let counts = self.instance_counts();
        let many_models = self.models.len() > 1;
        let many_counts = counts.len() > 1 || self.instances.iter().any(|&n| n > 1);
        let many_settings = settings.len() > 1;
        let mut out = Vec::new();
        for &setting in &settings {
            let setting_label = setting
                .and_then(|i| self.server.as_ref().map(|s| s.settings[i].label.clone()))
                .unwrap_or_default();
            for model in &self.models {
                for &n in &counts {
                    let targets: Vec<String> =
                        self.targets.iter().take(n as usize).cloned().collect();
                    let mut label = Vec::new();
                    let mut variant = Vec::new();
                    if many_models {
                        label.push(model.clone());
                    }
                    if many_counts {
                        let word = if n == 1 { "instance" } else { "instances" };
                        label.push(format!("{n} {word}"));
                        variant.push(format!("{n}-{word}"));
                    }
                    if many_settings {
                        label.push(setting_label.clone());
                        variant.push(segment(&setting_label));
                    }
                    out.push(Group {
                        model: model.clone(),
                        targets,
                        setting,
                        label: label.join(" · "),
                        variant: variant.join("_"),
                        setting_label: setting_label.clone(),
                    });
                }
            }
        }
        out
    }
}

/// A folder name for `label`: path-safe, runs of `-` folded into one.
fn segment(label: &str) -> String {
    let mut out = String::new();
    for c in tokengun_common::path_safe(label).chars() {
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out
}

impl super::PlanFile {
    /// The matrix of this plan: models, targets and their policy, instance counts, the server.
    pub(super) fn matrix(&self, sim: bool) -> Result<Matrix, super::PlanFileError> {
        use super::file::field;
        let models = self.model_names();
        if let Some(m) = models.iter().find(|m| m.is_empty()) {
            return Err(field(
                "model",
                format!("{m:?} is empty: name the model as the server does"),
            ));
        }
        if let Some(dup) = models
            .iter()
            .enumerate()
            .find(|(i, m)| models[..*i].contains(m))
        {
            return Err(field("model", format!("{} is listed twice", dup.1)));
        }
        let targets = self.target_urls(sim)?;
        if sim && targets.len() > 1 {
            return Err(field(
                "target",
                "--sim serves one instance: run `tokengun sim --instances N` and pass its URLs",
            ));
        }
        let policy = match self.target_policy.as_deref() {
            None => TargetPolicy::RoundRobin,
            Some(p) => TargetPolicy::parse(p).ok_or_else(|| {
                field(
                    "target_policy",
                    format!("{p:?}: use round-robin, least-in-flight or pinned"),
                )
            })?,
        };
        let instances = self.instances.clone().unwrap_or_default();
        if let Some(n) = instances
            .iter()
            .find(|&&n| n == 0 || n as usize > targets.len())
        {
            return Err(field(
                "instances",
                format!(
                    "{n} instances, but {} target(s) are given: each count is from 1 to the number of targets",
                    targets.len()
                ),
            ));
        }
        let server = self
            .server
            .as_ref()
            .map(super::server::ServerTable::compile)
            .transpose()
            .map_err(|m| field("server", m))?;
        if server.is_some() && sim {
            return Err(field(
                "server",
                "a managed server and --sim both stand for the server: give one of them (the simulator can be the managed server: command = \"tokengun\", args = [\"sim\", ...])",
            ));
        }
        // `tokengun` as the command is this very program (its simulator), wherever it is installed.
        // (For tokengun run's own agent only: a remote agent resolves the name on its host.)
        let local = self.agents.as_ref().is_none_or(Vec::is_empty);
        let server = server.map(|mut s| {
            if s.command == "tokengun" && local {
                if let Ok(me) = std::env::current_exe() {
                    s.command = me.to_string_lossy().into_owned();
                }
            }
            s
        });
        Ok(Matrix {
            models,
            targets,
            policy,
            instances,
            server,
            unload_between_models: self.unload_between_models.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(models: &[&str], targets: usize, instances: &[u32]) -> Matrix {
        Matrix {
            models: models.iter().map(|s| s.to_string()).collect(),
            targets: (0..targets)
                .map(|i| format!("http://127.0.0.1:{}", 1000 + i))
                .collect(),
            instances: instances.to_vec(),
            ..Matrix::default()
        }
    }

    #[test]
    fn one_model_one_target_is_one_unlabelled_group() {
        let g = matrix(&["m"], 1, &[]).groups();
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].label.as_str(), g[0].variant.as_str()), ("", ""));
        assert_eq!(g[0].targets.len(), 1);
    }

    #[test]
    fn models_then_instance_counts_are_swept_model_major() {
        let g = matrix(&["a", "b"], 2, &[1, 2]).groups();
        let seen: Vec<(&str, usize, &str)> = g
            .iter()
            .map(|g| (g.model.as_str(), g.targets.len(), g.variant.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", 1, "1-instance"),
                ("a", 2, "2-instances"),
                ("b", 1, "1-instance"),
                ("b", 2, "2-instances")
            ]
        );
        assert_eq!(g[1].label, "a · 2 instances");
    }

    #[test]
    fn settings_are_the_outer_dimension_and_name_their_folders() {
        let setting = |n: u32| Setting {
            label: format!("OLLAMA_NUM_PARALLEL={n}, -np {n}"),
            env: vec![("OLLAMA_NUM_PARALLEL".into(), n.to_string())],
            args: vec![],
        };
        let m = Matrix {
            server: Some(ManagedServer {
                command: "ollama".into(),
                env: vec![],
                settings: vec![setting(1), setting(4)],
                health_timeout: Duration::from_secs(60),
                stop_grace: Duration::from_secs(10),
            }),
            ..matrix(&["a", "b"], 1, &[])
        };
        let g = m.groups();
        let seen: Vec<(&str, &str)> = g
            .iter()
            .map(|g| (g.model.as_str(), g.variant.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", "OLLAMA_NUM_PARALLEL-1-np-1"),
                ("b", "OLLAMA_NUM_PARALLEL-1-np-1"),
                ("a", "OLLAMA_NUM_PARALLEL-4-np-4"),
                ("b", "OLLAMA_NUM_PARALLEL-4-np-4")
            ]
        );
        assert_eq!(g[3].label, "b · OLLAMA_NUM_PARALLEL=4, -np 4");
    }
}
