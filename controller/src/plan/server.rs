//! A plan's `[server]` table: the server the plan starts, checks and stops for each setting.
//! A value of `env`, or an element of `args`, given as a list is swept: every combination is
//! one setting. The process may serve several targets (`tokengun sim --instances 2`); the
//! agent waits for the first target to answer, and every target is checked before the load.
//!
//! ```toml
//! [server]
//! command = "ollama"
//! args = ["serve"]
//! env = { OLLAMA_NUM_PARALLEL = [1, 2, 4, 8], OLLAMA_KEEP_ALIVE = "10m" }
//! ```

use super::matrix::{ManagedServer, Setting};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The most settings one plan may sweep.
pub const MAX_SETTINGS: usize = 64;

/// The `[server]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTable {
    /// The program, as the agent's `--allow-server-command` lists it.
    pub command: String,
    /// Each element a string, or a list of strings to sweep (`["-np", ["1", "4"]]`).
    #[serde(default)]
    pub args: Vec<Swept>,
    /// Each value a string or number, or a list of them to sweep.
    #[serde(default)]
    pub env: BTreeMap<String, Swept>,
    /// How long the server gets to answer after it starts, e.g. "60s" [default: 60s].
    pub health_timeout: Option<String>,
    /// After SIGTERM, how long before SIGKILL, e.g. "10s" [default: 10s].
    pub stop_grace: Option<String>,
}

/// One value, or several to sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Swept {
    One(Scalar),
    Many(Vec<Scalar>),
}

/// A string or a number, as TOML writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

impl Swept {
    fn values(&self) -> Vec<String> {
        match self {
            Swept::One(s) => vec![s.text()],
            Swept::Many(v) => v.iter().map(Scalar::text).collect(),
        }
    }
}

/// One swept dimension: an environment variable, or the argument at an index.
#[derive(Debug, Clone)]
enum Dim {
    Env(String),
    Arg(usize),
}

fn duration(name: &str, v: &Option<String>, default_s: u64) -> Result<Duration, String> {
    v.as_deref()
        .map_or(Ok(Duration::from_secs(default_s)), |s| {
            humantime::parse_duration(s)
                .map_err(|e| format!("[server] {name} {s:?} is not a duration ({e})"))
        })
}

/// Every combination of `dims`' values (the first dimension outermost).
fn combinations(dims: &[(Dim, Vec<String>)]) -> Result<Vec<Vec<String>>, String> {
    let mut combos: Vec<Vec<String>> = vec![Vec::new()];
    for (_, vals) in dims {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                vals.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push(v.clone());
                    c
                })
            })
            .collect();
        if combos.len() > MAX_SETTINGS {
            return Err(format!(
                "[server] sweeps more than {MAX_SETTINGS} settings: split the plan"
            ));
        }
    }
    Ok(combos)
}

impl ServerTable {
    /// The managed server with one setting per combination of the swept values (environment
    /// variables in name order, then arguments in order), each named by what it sets.
    pub fn compile(&self) -> Result<ManagedServer, String> {
        if self.command.trim().is_empty() {
            return Err(
                "[server] command is empty: give the program to start, e.g. \"ollama\"".into(),
            );
        }
        let mut base_env = Vec::new();
        let mut dims: Vec<(Dim, Vec<String>)> = Vec::new();
        for (k, v) in &self.env {
            match v.values() {
                vals if vals.is_empty() => {
                    return Err(format!(
                        "[server] env {k} is an empty list: give one value at least"
                    ));
                }
                vals if matches!(v, Swept::Many(_)) => dims.push((Dim::Env(k.clone()), vals)),
                mut vals => base_env.push((k.clone(), vals.remove(0))),
            }
        }
        let mut args: Vec<String> = Vec::new();
        for (i, a) in self.args.iter().enumerate() {
            let vals = a.values();
            let Some(first) = vals.first() else {
                return Err("[server] args has an empty list: give one value at least".into());
            };
            args.push(first.clone());
            if matches!(a, Swept::Many(_)) {
                dims.push((Dim::Arg(i), vals));
            }
        }
        let settings = combinations(&dims)?
            .into_iter()
            .map(|combo| setting(&dims, &combo, &args))
            .collect();
        Ok(ManagedServer {
            command: self.command.trim().to_string(),
            env: base_env,
            settings,
            health_timeout: duration("health_timeout", &self.health_timeout, 60)?,
            stop_grace: duration("stop_grace", &self.stop_grace, 10)?,
        })
    }
}

/// The setting of one combination: its environment, its arguments, and its name.
fn setting(dims: &[(Dim, Vec<String>)], combo: &[String], base_args: &[String]) -> Setting {
    let mut env = Vec::new();
    let mut args = base_args.to_vec();
    let mut label = Vec::new();
    for ((dim, _), v) in dims.iter().zip(combo) {
        match dim {
            Dim::Env(k) => {
                env.push((k.clone(), v.clone()));
                label.push(format!("{k}={v}"));
            }
            Dim::Arg(i) => {
                args[*i] = v.clone();
                // The flag before a swept value names it (`-np 4`).
                let name = i
                    .checked_sub(1)
                    .and_then(|p| base_args.get(p))
                    .filter(|p| p.starts_with('-'))
                    .cloned()
                    .unwrap_or_else(|| format!("arg{i}"));
                label.push(format!("{name} {v}"));
            }
        }
    }
    Setting {
        label: if label.is_empty() {
            "default".into()
        } else {
            label.join(", ")
        },
        env,
        args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_become_every_combination_named_by_what_differs() {
        let t: ServerTable = toml::from_str(
            r#"command = "llama-server"
args = ["-m", "x.gguf", "-np", ["1", "4"]]
env = { OLLAMA_NUM_PARALLEL = [1, 2], FIXED = "y" }"#,
        )
        .unwrap();
        let s = t.compile().unwrap();
        let labels: Vec<&str> = s.settings.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "OLLAMA_NUM_PARALLEL=1, -np 1",
                "OLLAMA_NUM_PARALLEL=1, -np 4",
                "OLLAMA_NUM_PARALLEL=2, -np 1",
                "OLLAMA_NUM_PARALLEL=2, -np 4"
            ]
        );
        assert_eq!(s.settings[1].args, ["-m", "x.gguf", "-np", "4"]);
        assert_eq!(
            s.settings[2].env,
            [("OLLAMA_NUM_PARALLEL".to_string(), "2".to_string())]
        );
        assert_eq!(s.env, [("FIXED".to_string(), "y".to_string())]);
        assert_eq!(s.health_timeout, Duration::from_secs(60));
    }

    #[test]
    fn nothing_swept_is_one_default_setting_and_bad_tables_are_named() {
        let t: ServerTable = toml::from_str("command = \"ollama\"\nargs = [\"serve\"]").unwrap();
        let s = t.compile().unwrap();
        assert_eq!(s.settings.len(), 1);
        assert_eq!(s.settings[0].label, "default");
        let empty: ServerTable = toml::from_str("command = \" \"").unwrap();
        assert!(empty.compile().unwrap_err().contains("command is empty"));
        let none: ServerTable = toml::from_str("command = \"x\"\nenv = { A = [] }").unwrap();
        assert!(
            none.compile()
                .unwrap_err()
                .contains("env A is an empty list")
        );
        let wide: ServerTable = toml::from_str(
            "command = \"x\"\nenv = { A = [1,2,3,4,5,6,7,8,9], B = [1,2,3,4,5,6,7,8,9] }",
        )
        .unwrap();
        assert!(wide.compile().unwrap_err().contains("more than 64"));
        let bad: ServerTable =
            toml::from_str("command = \"x\"\nhealth_timeout = \"soon\"").unwrap();
        assert!(bad.compile().unwrap_err().contains("health_timeout"));
    }
}
