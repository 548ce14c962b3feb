//! The agent's check on itself during a cycle: its process's CPU time and its runtime's
//! event-loop delay (how late a 10 ms timer wakes), so a cycle where tokengun was the bottleneck
//! can be flagged.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The loop-delay probe's sleep.
pub const LOOP_PROBE_EVERY: Duration = Duration::from_millis(10);

/// CPU seconds (user + system) this process has used so far; None where it cannot be read.
pub fn process_cpu_s() -> Option<f64> {
    let pid = sysinfo::get_current_pid().ok()?;
    let mut sys = System::new().ok()?;
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        false,
        ProcessRefreshKind::nothing().with_cpu(),
    );
    let ms = sys
        .process(Pid::from_u32(pid.as_u32()))?
        .accumulated_cpu_time();
    Some(ms as f64 / 1e3)
}

/// Cores this process may run on (its runtime's worker threads by default).
pub fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// What the probe measured over a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoopDelay {
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: usize,
}

/// p99 and max of oversleeps in µs.
pub fn loop_delay(oversleep_us: &mut [u32]) -> Option<LoopDelay> {
    if oversleep_us.is_empty() {
        return None;
    }
    oversleep_us.sort_unstable();
    let n = oversleep_us.len();
    let rank = ((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1;
    Some(LoopDelay {
        p99_ms: f64::from(oversleep_us[rank]) / 1e3,
        max_ms: f64::from(oversleep_us[n - 1]) / 1e3,
        samples: n,
    })
}

/// A task on the current runtime that sleeps [`LOOP_PROBE_EVERY`] again and again and keeps how
/// late each wake-up came (the runtime's event-loop delay).
pub struct LoopProbe {
    stop: CancellationToken,
    samples: Arc<Mutex<Vec<u32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LoopProbe {
    /// Starts probing.
    pub fn start() -> Self {
        let stop = CancellationToken::new();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (stop.clone(), samples.clone());
        let task = tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let due = Instant::now() + LOOP_PROBE_EVERY;
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = s.cancelled() => break,
                }
                let late = Instant::now().saturating_duration_since(due);
                mine.push(u32::try_from(late.as_micros()).unwrap_or(u32::MAX));
            }
            if let Ok(mut o) = out.lock() {
                *o = mine;
            }
        });
        Self {
            stop,
            samples,
            task,
        }
    }

    /// Stops probing; the p99 and max over its run (None: not one wake-up was measured).
    pub async fn finish(self) -> Option<LoopDelay> {
        self.stop.cancel();
        let _ = self.task.await;
        let mut v = self
            .samples
            .lock()
            .ok()
            .map(|mut g| std::mem::take(&mut *g))?;
        loop_delay(&mut v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_the_oversleeps() {
        let mut v: Vec<u32> = (1..=100).map(|i| i * 100).collect();
        let d = loop_delay(&mut v).unwrap();
        assert_eq!((d.p99_ms, d.max_ms, d.samples), (9.9, 10.0, 100));
        assert_eq!(loop_delay(&mut []), None);
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let a = process_cpu_s().unwrap();
        // Spin until 50 ms of CPU show (however loaded the machine), at most 20 s.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        let mut b = a;
        while b - a < 0.05 && t.elapsed() < Duration::from_secs(20) {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            b = process_cpu_s().unwrap();
        }
        assert!(b - a >= 0.05, "{a} -> {b} s of CPU after 20 s of spinning");
    }

    #[tokio::test]
    async fn the_probe_measures_a_blocked_loop() {
        let p = LoopProbe::start();
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Block the only thread of this runtime for 50 ms: the probe wakes that late.
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(50) {}
        tokio::time::sleep(Duration::from_millis(30)).await;
        let d = p.finish().await.unwrap();
        assert!(d.max_ms >= 30.0, "{d:?}");
        assert!(d.samples >= 3, "{d:?}");
    }
}
