//! Why a monitor source, or one of its figures, could not be had: the text users see in
//! `tokengun-agent probe`, in run.json's `monitor.sources[].detail` and in monitor notes.

use super::powermetrics::PmError;
use std::borrow::Cow;
use std::path::PathBuf;
use tokengun_common::sources::WatchError;

/// A monitor source failed, or is not there on this machine.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The source or figure cannot be had here, and why (e.g. `Linux only`, what root would give).
    #[error("{0}")]
    Unavailable(Cow<'static, str>),
    /// The source has nothing under its sysfs folder.
    #[error("no {what} under {}{hint}", dir.display())]
    NotFound {
        what: &'static str,
        dir: PathBuf,
        /// Said after the folder: why that may be (with its leading space), or nothing.
        hint: &'static str,
    },
    /// A file of the source could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The OS refused a read that names no file of ours.
    #[error("{0}")]
    Os(#[source] std::io::Error),
    /// What the OS said could not be read (`unreadable /proc stat`).
    #[error("unreadable {0}")]
    Parse(&'static str),
    /// A device, library or tool failed: what, and what it said.
    #[error("{what}: {reason}")]
    Device {
        what: Cow<'static, str>,
        reason: String,
    },
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Powermetrics(#[from] PmError),
    #[error("monitor start failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl MonitorError {
    /// Not there, for this static reason.
    pub fn unavailable(why: &'static str) -> Self {
        Self::Unavailable(Cow::Borrowed(why))
    }

    /// `what` failed, saying `reason`.
    pub fn device(what: impl Into<Cow<'static, str>>, reason: impl std::fmt::Display) -> Self {
        Self::Device {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_users_have_always_read() {
        assert_eq!(
            MonitorError::unavailable("Linux only").to_string(),
            "Linux only"
        );
        let e = MonitorError::NotFound {
            what: "RAPL package zones",
            dir: PathBuf::from("/sys/class/powercap"),
            hint: " (not an x86 machine)",
        };
        assert_eq!(
            e.to_string(),
            "no RAPL package zones under /sys/class/powercap (not an x86 machine)"
        );
        let e = MonitorError::Io {
            path: PathBuf::from("/x/energy_uj"),
            source: std::io::Error::other("boom"),
        };
        assert_eq!(e.to_string(), "/x/energy_uj: boom");
        assert_eq!(
            MonitorError::device("NVML gpu0", "Unknown Error").to_string(),
            "NVML gpu0: Unknown Error"
        );
        assert_eq!(
            MonitorError::Parse("/proc stat").to_string(),
            "unreadable /proc stat"
        );
    }
}
