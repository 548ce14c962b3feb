//! Seeded, reproducible schedules: open-loop arrival instants and per-request prompt choice.

use crate::plan::Arrival;
use std::time::Duration;

/// SplitMix64: tiny, fast, and identical on every platform, so a seed means the same schedule
/// everywhere (no dependence on a crate's generator changing between versions).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Open-loop arrival offsets from the cycle origin: the first at 0, then gaps of 1/rate
/// (constant) or exponential with mean 1/rate (Poisson), until `duration`. Lazy, so a long run
/// at a high rate costs no memory.
#[derive(Debug, Clone)]
pub struct Arrivals {
    rng: SplitMix64,
    arrival: Arrival,
    mean_gap_s: f64,
    next_s: f64,
    end_s: f64,
}

impl Arrivals {
    /// The schedule for one cycle.
    pub fn new(arrival: Arrival, rate_per_s: f64, duration: Duration, seed: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            arrival,
            mean_gap_s: if rate_per_s > 0.0 {
                1.0 / rate_per_s
            } else {
                f64::INFINITY
            },
            next_s: 0.0,
            end_s: duration.as_secs_f64(),
        }
    }
}

impl Iterator for Arrivals {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // NaN (a zero rate) ends the schedule too.
        if self.next_s.partial_cmp(&self.end_s) != Some(std::cmp::Ordering::Less) {
            return None;
        }
        let at = Duration::from_secs_f64(self.next_s);
        let gap = match self.arrival {
            Arrival::Constant => self.mean_gap_s,
            // Inverse transform of the exponential CDF; 1 - u is in (0, 1], so ln is finite.
            Arrival::Poisson => -(1.0 - self.rng.next_f64()).ln() * self.mean_gap_s,
        };
        self.next_s += gap;
        Some(at)
    }
}

/// Which of `n` prompts request `request_id` uses: a pure function of the seed and the id, so it
/// depends neither on timing nor on where the level sits in the sweep; the same seed gives the
/// same prompts in the same order at every level.
pub fn prompt_index(seed: u64, request_id: u32, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let mut g = SplitMix64::new(seed ^ u64::from(request_id).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    (g.next_u64() % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_arrivals_are_evenly_spaced() {
        let a: Vec<Duration> =
            Arrivals::new(Arrival::Constant, 4.0, Duration::from_secs(1), 7).collect();
        assert_eq!(
            a,
            vec![
                Duration::ZERO,
                Duration::from_millis(250),
                Duration::from_millis(500),
                Duration::from_millis(750)
            ]
        );
    }

    #[test]
    fn poisson_arrivals_hit_the_rate_and_repeat_with_the_seed() {
        let rate = 200.0;
        let secs = 100.0;
        let a: Vec<Duration> =
            Arrivals::new(Arrival::Poisson, rate, Duration::from_secs_f64(secs), 42).collect();
        let achieved = a.len() as f64 / secs;
        // 20000 arrivals: the count's standard deviation is about 141, so 3% is over 4 sigma.
        assert!(
            (achieved - rate).abs() / rate < 0.03,
            "achieved {achieved}/s"
        );
        let again: Vec<Duration> =
            Arrivals::new(Arrival::Poisson, rate, Duration::from_secs_f64(secs), 42).collect();
        assert_eq!(a, again, "same seed, same schedule");
        let other: Vec<Duration> =
            Arrivals::new(Arrival::Poisson, rate, Duration::from_secs_f64(secs), 43).collect();
        assert_ne!(a, other);
        // Exponential gaps: about 1/e of them exceed the mean.
        let mean = 1.0 / rate;
        let long = a
            .windows(2)
            .filter(|w| (w[1] - w[0]).as_secs_f64() > mean)
            .count() as f64;
        let frac = long / (a.len() - 1) as f64;
        assert!(
            (frac - (-1.0f64).exp()).abs() < 0.02,
            "fraction of long gaps {frac}"
        );
    }

    #[test]
    fn prompt_choice_is_seeded_and_spread() {
        let picks: Vec<usize> = (1..=1000).map(|r| prompt_index(9, r, 10)).collect();
        let again: Vec<usize> = (1..=1000).map(|r| prompt_index(9, r, 10)).collect();
        assert_eq!(picks, again);
        for k in 0..10 {
            let n = picks.iter().filter(|&&p| p == k).count();
            assert!(
                (60..=140).contains(&n),
                "prompt {k} chosen {n} times of 1000"
            );
        }
        assert_eq!(prompt_index(9, 1, 1), 0);
    }
}
