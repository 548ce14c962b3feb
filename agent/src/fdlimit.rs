//! The agent's open-file limit (RLIMIT_NOFILE): raised to the hard limit at start, and checked
//! against each cycle's concurrency so a level the limit cannot hold is refused, not failed.

use std::sync::OnceLock;

/// File descriptors kept for everything but the streams: gRPC connections, monitor files, logs,
/// the runtime's own (each stream takes one socket).
pub const FD_HEADROOM: u64 = 64;

static LIMIT: OnceLock<Option<u64>> = OnceLock::new();

/// Raises the soft open-file limit to the hard one (once per process) and returns the soft limit
/// in force; None where the platform has no such limit or it cannot be read.
pub fn raise_nofile_limit() -> Option<u64> {
    *LIMIT.get_or_init(|| {
        if !rlimit::Resource::NOFILE.is_supported() {
            return None;
        }
        let before = rlimit::Resource::NOFILE.get().ok();
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(now) => {
                match before {
                    Some((soft, hard)) if soft < now => tracing::info!(
                        "open-file limit raised from {soft} to {now} (hard limit {hard})"
                    ),
                    _ => tracing::info!("open-file limit: {now}"),
                }
                Some(now)
            }
            Err(e) => {
                let soft = before.map(|(s, _)| s);
                tracing::warn!(
                    "cannot raise the open-file limit ({e}); it stays at {}",
                    soft.map_or("an unknown value".into(), |s| s.to_string())
                );
                soft
            }
        }
    })
}

/// Most concurrent streams an open-file limit of `limit` allows.
pub fn max_streams(limit: u64) -> u32 {
    u32::try_from(limit.saturating_sub(FD_HEADROOM)).unwrap_or(u32::MAX)
}

/// A cycle asks for more concurrent streams than the open-file limit allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{concurrency} concurrent requests need about {need} open files, above this agent's limit of {limit} \
     (RLIMIT_NOFILE, already raised to its hard limit): lower the level to at most {max}, or raise the \
     limit where the agent starts (`ulimit -n {need}` in its shell, `LimitNOFILE={need}` in its systemd unit)",
    need = u64::from(*concurrency) + FD_HEADROOM,
    max = max_streams(*limit)
)]
pub struct FdLimitError {
    pub concurrency: u32,
    pub limit: u64,
}

/// Checks that `concurrency` streams fit the open-file limit `limit` (None: no limit known).
pub fn check_concurrency(concurrency: u32, limit: Option<u64>) -> Result<(), FdLimitError> {
    match limit {
        Some(limit) if u64::from(concurrency) + FD_HEADROOM > limit => {
            Err(FdLimitError { concurrency, limit })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_is_checked_against_the_limit_with_headroom() {
        assert!(check_concurrency(960, Some(1024)).is_ok());
        let e = check_concurrency(961, Some(1024)).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("limit of 1024"), "{text}");
        assert!(text.contains("at most 960"), "{text}");
        assert!(text.contains("ulimit -n 1025"), "{text}");
        assert!(text.contains("LimitNOFILE=1025"), "{text}");
        assert!(check_concurrency(10_000, None).is_ok());
        assert_eq!(max_streams(20), 0);
    }

    #[test]
    fn raising_the_limit_leaves_it_at_least_where_it_was() {
        let before = rlimit::Resource::NOFILE.get().unwrap().0;
        let now = raise_nofile_limit().unwrap();
        assert!(now >= before, "{now} < {before}");
        assert_eq!(rlimit::Resource::NOFILE.get().unwrap().0, now);
    }
}
