//! The agent's monitor sources as the controller and the run folder name them
//! (`run.json`'s `monitor.sources[].source`), and what the process source watches
//! (`--watch-process`): checked by the controller before a run, used by the agent's sampler.

use regex::Regex;

/// Apple Silicon power through `powermetrics` (macOS, root).
pub const SOURCE_POWERMETRICS: &str = "powermetrics";
/// Apple Silicon power through IOReport's counters (macOS, no root).
pub const SOURCE_IOREPORT: &str = "ioreport";
/// NVIDIA GPUs through NVML (Linux).
pub const SOURCE_NVML: &str = "nvml";
/// AMD GPUs through hwmon in sysfs (Linux).
pub const SOURCE_AMDGPU: &str = "amdgpu";
/// CPU package and DRAM energy through RAPL powercap in sysfs (Linux).
pub const SOURCE_RAPL: &str = "rapl";
/// The server's processes and the machine (CPU, memory, threads, open files).
pub const SOURCE_PROCESS: &str = "process";

/// `--power`: which Apple Silicon power source to use (other platforms' sources are used when
/// found, except under `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerChoice {
    /// IOReport, else powermetrics when running as root, else none (saying why).
    #[default]
    Auto,
    Ioreport,
    /// powermetrics as root, or through `sudo -n`.
    Powermetrics,
    /// No power source at all.
    None,
}

/// A `--power` value that is none of the choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--power {0:?} is not a choice: use auto, ioreport, powermetrics or none")]
pub struct PowerChoiceError(pub String);

/// Whether a power source is tried under a [`PowerChoice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Try it; `sudo`: powermetrics may go through `sudo -n` when not root.
    Try { sudo: bool },
    /// Not tried, and why (the source's detail in the probe and run.json).
    Skip(String),
}

impl PowerChoice {
    /// The choices, as `--power` spells them.
    pub const ALL: [Self; 4] = [Self::Auto, Self::Ioreport, Self::Powermetrics, Self::None];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Ioreport => "ioreport",
            Self::Powermetrics => "powermetrics",
            Self::None => "none",
        }
    }

    /// A `--power` value (empty is no choice: None).
    pub fn parse(s: &str) -> Result<Option<Self>, PowerChoiceError> {
        if s.trim().is_empty() {
            return Ok(None);
        }
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s.trim())
            .map(Some)
            .ok_or_else(|| PowerChoiceError(s.to_string()))
    }

    /// Whether `source` is tried: `is_root` is the agent's, `ioreport_found` whether IOReport
    /// (tried first) works.
    pub fn admits(self, source: &str, is_root: bool, ioreport_found: bool) -> Admit {
        let skip = |why: String| Admit::Skip(why);
        match (self, source) {
            (Self::None, _) => skip("not used (--power none)".into()),
            (Self::Ioreport, SOURCE_POWERMETRICS) | (Self::Powermetrics, SOURCE_IOREPORT) => {
                skip(format!("not used (--power {})", self.as_str()))
            }
            (Self::Powermetrics, SOURCE_POWERMETRICS) => Admit::Try { sudo: true },
            (Self::Auto, SOURCE_POWERMETRICS) if ioreport_found => skip(
                "not used: IOReport reads the same counters without root (--power auto)".into(),
            ),
            (Self::Auto, SOURCE_POWERMETRICS) if !is_root => skip(
                "not tried: --power auto uses powermetrics only when the agent runs as root \
                 (--power powermetrics also tries sudo -n)"
                    .into(),
            ),
            _ => Admit::Try { sudo: false },
        }
    }

    /// The one line that says which power source a run uses and why, from each source's status
    /// `(source, available, detail)` in the order they were tried.
    pub fn summary(self, statuses: &[(&str, bool, &str)]) -> String {
        let used: Vec<&str> = statuses.iter().filter(|s| s.1).map(|s| s.0).collect();
        let io_failed = statuses
            .iter()
            .find(|s| s.0 == SOURCE_IOREPORT && !s.1 && !s.2.starts_with("not used"));
        match (used.as_slice(), io_failed) {
            ([], _) if self == Self::None => "power: none (--power none)".into(),
            ([], _) => {
                let why: Vec<String> = statuses
                    .iter()
                    .filter(|s| !s.2.is_empty())
                    .map(|s| format!("{}: {}", s.0, s.2))
                    .collect();
                format!(
                    "no power source (--power {}): {}",
                    self.as_str(),
                    why.join("; ")
                )
            }
            (u, Some(io)) if u.contains(&SOURCE_POWERMETRICS) => {
                format!("power: {}: using {}", io.2, u.join(", "))
            }
            (u, _) => format!("power: {} (--power {})", u.join(", "), self.as_str()),
        }
    }
}

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
    fn power_choice_tries_what_the_issue_says() {
        use PowerChoice as C;
        assert_eq!(C::parse("ioreport"), Ok(Some(C::Ioreport)));
        assert_eq!(C::parse(""), Ok(None));
        assert_eq!(
            C::parse("smc").unwrap_err().to_string(),
            "--power \"smc\" is not a choice: use auto, ioreport, powermetrics or none"
        );
        let t = |sudo| Admit::Try { sudo };
        // auto: IOReport first; powermetrics only when IOReport failed and the agent is root.
        assert_eq!(C::Auto.admits(SOURCE_IOREPORT, false, false), t(false));
        assert!(matches!(
            C::Auto.admits(SOURCE_POWERMETRICS, true, true),
            Admit::Skip(_)
        ));
        assert_eq!(C::Auto.admits(SOURCE_POWERMETRICS, true, false), t(false));
        assert!(
            matches!(C::Auto.admits(SOURCE_POWERMETRICS, false, false), Admit::Skip(w) if w.contains("root"))
        );
        // An explicit powermetrics may go through sudo -n; explicit choices leave the other out.
        assert_eq!(
            C::Powermetrics.admits(SOURCE_POWERMETRICS, false, false),
            t(true)
        );
        assert!(matches!(
            C::Powermetrics.admits(SOURCE_IOREPORT, false, false),
            Admit::Skip(_)
        ));
        assert!(matches!(
            C::Ioreport.admits(SOURCE_POWERMETRICS, true, false),
            Admit::Skip(_)
        ));
        // Other platforms' sources are not Apple's business, but none is none.
        assert_eq!(C::Ioreport.admits(SOURCE_NVML, false, false), t(false));
        assert!(matches!(
            C::None.admits(SOURCE_RAPL, true, false),
            Admit::Skip(_)
        ));
    }

    #[test]
    fn power_choice_says_why_in_one_line() {
        let dead = "IOReport GPU energy counter reads 0 on this machine";
        let s = PowerChoice::Auto.summary(&[
            (SOURCE_IOREPORT, false, dead),
            (SOURCE_POWERMETRICS, true, "Apple Silicon SoC"),
        ]);
        assert_eq!(s, format!("power: {dead}: using powermetrics"));
        let s = PowerChoice::Auto.summary(&[
            (SOURCE_IOREPORT, true, "Apple M2 Pro"),
            (
                SOURCE_POWERMETRICS,
                false,
                "not used: IOReport reads the same counters",
            ),
        ]);
        assert_eq!(s, "power: ioreport (--power auto)");
        let s = PowerChoice::Auto.summary(&[
            (SOURCE_IOREPORT, false, dead),
            (SOURCE_POWERMETRICS, false, "not tried: root"),
            (SOURCE_NVML, false, "Linux only"),
        ]);
        assert_eq!(
            s,
            format!(
                "no power source (--power auto): ioreport: {dead}; powermetrics: not tried: root; nvml: Linux only"
            )
        );
        assert!(!s.contains('\n'));
        assert_eq!(PowerChoice::None.summary(&[]), "power: none (--power none)");
    }

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
