//! The agent's monitor sources as the controller and the run folder name them
//! (`run.json`'s `monitor.sources[].source`), and what the process source watches
//! (`--watch-process`): checked by the controller before a run, used by the agent's sampler.

use regex::Regex;

/// Apple Silicon power through `powermetrics` (macOS).
pub const SOURCE_POWERMETRICS: &str = "powermetrics";
/// NVIDIA GPUs through NVML (Linux).
pub const SOURCE_NVML: &str = "nvml";
/// AMD GPUs through hwmon in sysfs (Linux).
pub const SOURCE_AMDGPU: &str = "amdgpu";
/// CPU package and DRAM energy through RAPL powercap in sysfs (Linux).
pub const SOURCE_RAPL: &str = "rapl";
/// The server's processes and the machine (CPU, memory, threads, open files).
pub const SOURCE_PROCESS: &str = "process";

/// What the process source watches.
#[derive(Debug, Clone)]
pub enum Watch {
    /// Processes whose name (or executable's file name) matches, as `pgrep PATTERN` would.
    Pattern(Regex),
    /// One process, e.g. the one found listening on the target's port.
    Pid(u32),
}

/// A `--watch-process` value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("--watch-process {0:?}: pid:N needs a number")]
    Pid(String),
    #[error("--watch-process needs a name or pattern, e.g. ollama")]
    Empty,
    #[error(
        "--watch-process {pattern:?} is not a valid pattern ({reason}); give a process name, e.g. ollama"
    )]
    Pattern { pattern: String, reason: String },
}

impl Watch {
    /// A `--watch-process` value: `pid:N`, else a regular expression (a plain name matches as a
    /// substring, like pgrep).
    pub fn parse(s: &str) -> Result<Self, WatchError> {
        if let Some(pid) = s.strip_prefix("pid:") {
            return pid
                .parse()
                .map(Watch::Pid)
                .map_err(|_| WatchError::Pid(s.to_string()));
        }
        if s.trim().is_empty() {
            return Err(WatchError::Empty);
        }
        Regex::new(s)
            .map(Watch::Pattern)
            .map_err(|e| WatchError::Pattern {
                pattern: s.to_string(),
                // regex's message spans lines (pattern, caret, reason): one line here.
                reason: e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            })
    }

    /// What it watches, in words (`processes matching "ollama"`, `pid 42`).
    pub fn describe(&self) -> String {
        match self {
            Watch::Pattern(r) => format!("processes matching {:?}", r.as_str()),
            Watch::Pid(p) => format!("pid {p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_patterns_and_their_errors() {
        assert!(matches!(Watch::parse("pid:42"), Ok(Watch::Pid(42))));
        assert_eq!(Watch::parse("pid:42").unwrap().describe(), "pid 42");
        assert_eq!(
            Watch::parse("ollama").unwrap().describe(),
            "processes matching \"ollama\""
        );
        assert_eq!(
            Watch::parse("pid:x").unwrap_err().to_string(),
            "--watch-process \"pid:x\": pid:N needs a number"
        );
        assert_eq!(
            Watch::parse("  ").unwrap_err().to_string(),
            "--watch-process needs a name or pattern, e.g. ollama"
        );
        let e = Watch::parse("(").unwrap_err().to_string();
        assert!(
            e.starts_with("--watch-process \"(\" is not a valid pattern (")
                && e.ends_with("); give a process name, e.g. ollama")
                && !e.contains('\n'),
            "{e}"
        );
    }
}
