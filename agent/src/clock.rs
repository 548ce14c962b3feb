//! The agent's monotonic clock: nanoseconds since the agent's epoch (its first use), shared by
//! cycle origins and monitor samples so the controller can line them up.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The instant every `*_mono_ns` value counts from.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Now, in ns since the epoch.
pub fn mono_ns() -> u64 {
    at(Instant::now())
}

/// `t` in ns since the epoch (0 for instants before it).
pub fn at(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}
