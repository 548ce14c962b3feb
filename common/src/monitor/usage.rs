//! Server-process figures over a window: the server's and its runners' processes summed per
//! tick, then mean and peak CPU, peak memory, threads and open files.

use super::{FOLD_POINTS, ProcessReading, ProcessRole};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Server-process figures over a cycle (server and runner processes summed per instant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ServerUsage {
    pub cpu_pct_mean: Option<f64>,
    pub cpu_pct_peak: Option<f64>,
    pub rss_peak_bytes: Option<u64>,
    pub threads_peak: Option<u64>,
    pub open_fds_peak: Option<u64>,
}

/// Accumulates server-process readings of one window, summing processes sampled at one instant.
#[derive(Debug, Default)]
pub struct ServerUsageAcc {
    /// t_ns -> the processes of that tick, summed.
    ticks: BTreeMap<u64, TickSum>,
    /// The folded beginning of a running window: (anchor, its figures so far).
    folded: Option<(u64, TickFold)>,
}

/// Ticks of a window summed up by [`ServerUsageAcc::fold`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct TickFold {
    ticks: usize,
    cpu_n: usize,
    cpu_sum: f64,
    cpu_peak: Option<f64>,
    rss_peak: Option<u64>,
    threads_peak: Option<u64>,
    fds_peak: Option<u64>,
}

/// The larger of two optional figures (either alone when the other is absent).
pub fn max_opt<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y > x { y } else { x }),
        (x, y) => x.or(y),
    }
}

/// (cpu %, rss bytes, threads, open fds) summed over the processes of one tick.
type TickSum = (Option<f64>, Option<u64>, Option<u64>, Option<u64>);

fn add_opt<T: std::ops::Add<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}

impl TickFold {
    fn add(&mut self, t: &TickSum) {
        self.ticks += 1;
        if let Some(c) = t.0 {
            self.cpu_n += 1;
            self.cpu_sum += c;
        }
        self.cpu_peak = max_opt(self.cpu_peak, t.0);
        self.rss_peak = max_opt(self.rss_peak, t.1);
        self.threads_peak = max_opt(self.threads_peak, t.2);
        self.fds_peak = max_opt(self.fds_peak, t.3);
    }
}

impl ServerUsageAcc {
    /// Adds a reading (machine rows are ignored).
    pub fn add(&mut self, r: &ProcessReading) {
        if r.role == ProcessRole::Machine {
            return;
        }
        let e = self.ticks.entry(r.t_ns).or_default();
        e.0 = add_opt(e.0, r.cpu_pct);
        e.1 = add_opt(e.1, r.rss_bytes);
        e.2 = add_opt(e.2, r.threads);
        e.3 = add_opt(e.3, r.open_fds);
    }

    /// Figures over the readings inside `[from_ns, to_ns]`; None when there were none. A window
    /// folded from `from_ns` (see [`ServerUsageAcc::fold`]) counts its folded ticks too.
    pub fn summary(&self, from_ns: u64, to_ns: u64) -> Option<ServerUsage> {
        let mut f = self
            .folded
            .filter(|(anchor, _)| *anchor == from_ns)
            .map_or_else(TickFold::default, |(_, f)| f);
        for (_, t) in self.ticks.range(from_ns..=to_ns) {
            f.add(t);
        }
        if f.ticks == 0 {
            return None;
        }
        Some(ServerUsage {
            cpu_pct_mean: (f.cpu_n > 0).then(|| f.cpu_sum / f.cpu_n as f64),
            cpu_pct_peak: f.cpu_peak,
            rss_peak_bytes: f.rss_peak,
            threads_peak: f.threads_peak,
            open_fds_peak: f.fds_peak,
        })
    }

    /// Sums up the ticks of the window that began at `anchor_ns` from before `before_ns`, so a
    /// window of many hours holds few ticks; [`ServerUsageAcc::summary`] from the anchor counts
    /// them. Does nothing with at most [`FOLD_POINTS`] ticks, or for another anchor than the one
    /// already folded. [`ServerUsageAcc::forget_before`] ends the window.
    pub fn fold(&mut self, anchor_ns: u64, before_ns: u64) {
        if self.ticks.len() <= FOLD_POINTS
            || self.folded.is_some_and(|(a, _)| a != anchor_ns)
            || before_ns <= anchor_ns
        {
            return;
        }
        let mut f = self.folded.map_or_else(TickFold::default, |(_, f)| f);
        let keep = self.ticks.split_off(&before_ns);
        let older = std::mem::replace(&mut self.ticks, keep);
        for (t, tick) in older {
            if t >= anchor_ns {
                f.add(&tick);
            }
        }
        self.folded = Some((anchor_ns, f));
    }

    /// Forgets readings older than `t_ns` and any folded window (memory stays bounded over long
    /// runs).
    pub fn forget_before(&mut self, t_ns: u64) {
        self.ticks = self.ticks.split_off(&t_ns);
        self.folded = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::test_util::{Lcg, S, close};

    #[test]
    fn folded_server_ticks_give_the_same_summary() {
        let mut rng = Lcg(11);
        let mut folded = ServerUsageAcc::default();
        let mut whole = ServerUsageAcc::default();
        let anchor = 10 * S;
        for i in 0..7_200u64 {
            let t = 3 * S + i * S / 2;
            for pid in [1u32, 2] {
                let p = ProcessReading {
                    t_ns: t,
                    role: ProcessRole::Server,
                    pid: Some(pid),
                    name: "srv".into(),
                    cpu_pct: (rng.next() % 10 != 0).then(|| (rng.next() % 400) as f64),
                    rss_bytes: Some(rng.next() % 1_000_000),
                    vsz_bytes: None,
                    threads: Some(rng.next() % 64),
                    open_fds: (i % 3 != 0).then(|| rng.next() % 500),
                    mem_total_bytes: None,
                    load_avg_1m: None,
                    cpu_count: None,
                    energy_j: None,
                    power_w: None,
                    pressure: Default::default(),
                };
                folded.add(&p);
                whole.add(&p);
            }
            if i % 120 == 0 {
                folded.fold(anchor, t.saturating_sub(600 * S));
            }
        }
        assert!(folded.ticks.len() < 2_500, "{}", folded.ticks.len());
        for end in [3_000 * S, 3_603 * S, 4_000 * S] {
            let (a, b) = (
                folded.summary(anchor, end).unwrap(),
                whole.summary(anchor, end).unwrap(),
            );
            assert!(close(a.cpu_pct_mean.unwrap(), b.cpu_pct_mean.unwrap()));
            assert_eq!(
                (
                    a.cpu_pct_peak,
                    a.rss_peak_bytes,
                    a.threads_peak,
                    a.open_fds_peak
                ),
                (
                    b.cpu_pct_peak,
                    b.rss_peak_bytes,
                    b.threads_peak,
                    b.open_fds_peak
                )
            );
        }
        folded.forget_before(3_000 * S);
        assert!(folded.folded.is_none());
    }

    #[test]
    fn server_usage_sums_processes_of_one_tick() {
        let mut acc = ServerUsageAcc::default();
        let p = |t, role, cpu, rss| ProcessReading {
            t_ns: t,
            role,
            pid: Some(1),
            name: "x".into(),
            cpu_pct: cpu,
            rss_bytes: rss,
            vsz_bytes: None,
            threads: Some(4),
            open_fds: None,
            mem_total_bytes: None,
            load_avg_1m: None,
            cpu_count: None,
            energy_j: None,
            power_w: None,
            pressure: Default::default(),
        };
        acc.add(&p(1, ProcessRole::Server, Some(10.0), Some(100)));
        acc.add(&p(1, ProcessRole::Runner, Some(90.0), Some(1000)));
        acc.add(&p(1, ProcessRole::Machine, Some(50.0), Some(9999)));
        acc.add(&p(2, ProcessRole::Server, Some(20.0), Some(100)));
        let s = acc.summary(0, 10).unwrap();
        assert_eq!(s.cpu_pct_peak, Some(100.0));
        assert_eq!(s.cpu_pct_mean, Some(60.0));
        assert_eq!(s.rss_peak_bytes, Some(1100));
        assert_eq!(s.threads_peak, Some(8));
        assert_eq!(s.open_fds_peak, None);
        assert!(acc.summary(3, 10).is_none());
    }
}
