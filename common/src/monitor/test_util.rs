//! Readings and helpers shared by the monitor modules' tests.

use super::PowerReading;

/// One reading of `m` on `device` of the `test` source.
pub(super) fn r(t_ns: u64, device: &str, m: &str, value: f64) -> PowerReading {
    PowerReading {
        t_ns,
        source: "test".into(),
        device: device.into(),
        metric: m.into(),
        value,
    }
}

/// One second, ns.
pub(super) const S: u64 = 1_000_000_000;

/// A small deterministic generator for the folding tests.
pub(super) struct Lcg(pub(super) u64);
impl Lcg {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Equal within a relative 1e-9 (absolute below 1).
pub(super) fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}
