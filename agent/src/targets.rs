//! A cycle's targets (server instances) and which one each request goes to: round-robin by
//! request id, least-in-flight (this agent's requests), or pinned to one.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tokengun_common::{CyclePlan, TargetPolicy};

/// A target that refused a connection this recently is passed over by least-in-flight while
/// another answers (a dead instance fails fast, so it would otherwise look the least busy).
pub const REFUSED_HOLD_NS: u64 = 1_000_000_000;

/// The targets of a cycle, with what the policy needs to choose among them.
pub struct Targets {
    uris: Vec<hyper::Uri>,
    policy: TargetPolicy,
    pinned: Option<usize>,
    /// Where round-robin starts (this agent's index among several).
    offset: usize,
    in_flight: Vec<AtomicU32>,
    /// When each last refused a connection, ns from the cycle origin + 1 (0 = never).
    refused_at_ns: Vec<AtomicU64>,
}

/// Counts a request in flight at its target while held.
pub struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Targets {
    /// The cycle's targets with `path` (the API's endpoint) appended; Err(url, reason) for one
    /// that is not a URL.
    pub fn new(plan: &CyclePlan, path: &str) -> Result<Self, (String, String)> {
        let mut uris = Vec::new();
        for t in plan.targets() {
            let url = format!("{}{path}", t.trim_end_matches('/'));
            let uri: hyper::Uri = url
                .parse()
                .map_err(|e: hyper::http::uri::InvalidUri| (url.clone(), e.to_string()))?;
            uris.push(uri);
        }
        let n = uris.len();
        Ok(Self {
            policy: plan.target_policy,
            pinned: plan
                .pinned_target
                .map(|k| k as usize)
                .filter(|&k| k < n && plan.target_policy == TargetPolicy::Pinned),
            offset: plan.target_offset as usize,
            in_flight: (0..n).map(|_| AtomicU32::new(0)).collect(),
            refused_at_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            uris,
        })
    }

    pub fn uri(&self, i: usize) -> &hyper::Uri {
        &self.uris[i.min(self.uris.len().saturating_sub(1))]
    }

    /// The target of request `request_id` (1-based) at `now_ns` from the cycle origin.
    pub fn choose(&self, request_id: u32, now_ns: u64) -> usize {
        let n = self.uris.len();
        if n <= 1 {
            return 0;
        }
        let start = (request_id.saturating_sub(1) as usize + self.offset) % n;
        match (self.policy, self.pinned) {
            (TargetPolicy::Pinned, Some(k)) => k,
            (TargetPolicy::LeastInFlight, _) => {
                let refused = |i: usize| {
                    let at = self.refused_at_ns[i].load(Ordering::Relaxed);
                    at > 0 && now_ns.saturating_add(1).saturating_sub(at) < REFUSED_HOLD_NS
                };
                let order = (0..n).map(|k| (start + k) % n);
                let pick = |skip_refused: bool| {
                    order
                        .clone()
                        .filter(|&i| !(skip_refused && refused(i)))
                        .min_by_key(|&i| self.in_flight[i].load(Ordering::Relaxed))
                };
                pick(true).or_else(|| pick(false)).unwrap_or(start)
            }
            _ => start,
        }
    }

    /// The target of every turn of conversation `conversation` (1-based): its own under
    /// `Pinned`, else round-robin by conversation, so a conversation never changes instance.
    pub fn choose_sticky(&self, conversation: u32) -> usize {
        match (self.policy, self.pinned) {
            (TargetPolicy::Pinned, Some(k)) => k,
            _ => (conversation.saturating_sub(1) as usize + self.offset) % self.uris.len().max(1),
        }
    }

    /// Counts a request in flight at target `i` until the guard drops.
    pub fn enter(&self, i: usize) -> InFlight<'_> {
        let c = &self.in_flight[i.min(self.in_flight.len().saturating_sub(1))];
        c.fetch_add(1, Ordering::Relaxed);
        InFlight(c)
    }

    /// Target `i` refused a connection at `now_ns`.
    pub fn refused(&self, i: usize, now_ns: u64) {
        if let Some(a) = self.refused_at_ns.get(i) {
            a.store(now_ns.saturating_add(1), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: usize, policy: TargetPolicy, pinned: Option<u32>) -> CyclePlan {
        let mut p: CyclePlan = serde_json::from_value(serde_json::json!({
            "cycle_id": 1, "shape": "burst", "concurrency": 1, "rate_per_s": 0.0,
            "arrival": "poisson", "duration": 0, "seed": 0,
            "target_url": "http://127.0.0.1:1", "api": "ollama-generate", "model": "m",
            "prompts": [], "request_timeout": 1000, "options": {"stop": []}, "extra_body_json": ""
        }))
        .unwrap();
        p.target_urls = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", i + 1))
            .collect();
        p.target_policy = policy;
        p.pinned_target = pinned;
        p
    }

    #[test]
    fn round_robin_follows_the_request_id() {
        let t = Targets::new(&plan(3, TargetPolicy::RoundRobin, None), "/api/generate").unwrap();
        let got: Vec<usize> = (1..=6).map(|id| t.choose(id, 0)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2]);
        assert_eq!(t.uri(2).to_string(), "http://127.0.0.1:3/api/generate");
    }

    #[test]
    fn a_conversation_keeps_its_instance_whatever_the_policy() {
        let t = Targets::new(&plan(3, TargetPolicy::LeastInFlight, None), "/x").unwrap();
        let _busy = t.enter(1);
        assert_eq!(t.choose_sticky(2), 1, "sticky, not least busy");
        assert_eq!(t.choose_sticky(4), 0);
        let p = Targets::new(&plan(3, TargetPolicy::Pinned, Some(2)), "/x").unwrap();
        assert_eq!(p.choose_sticky(1), 2);
    }

    #[test]
    fn each_agent_starts_its_round_robin_at_its_own_target() {
        let mut p = plan(3, TargetPolicy::RoundRobin, None);
        p.target_offset = 2;
        let t = Targets::new(&p, "/x").unwrap();
        let got: Vec<usize> = (1..=4).map(|id| t.choose(id, 0)).collect();
        assert_eq!(got, [2, 0, 1, 2]);
        assert_eq!(t.choose_sticky(1), 2);
    }

    #[test]
    fn pinned_sends_everything_to_its_target() {
        let t = Targets::new(&plan(3, TargetPolicy::Pinned, Some(2)), "/x").unwrap();
        assert!((1..=5).all(|id| t.choose(id, 0) == 2));
    }

    #[test]
    fn least_in_flight_avoids_busy_and_recently_refused_targets() {
        let t = Targets::new(&plan(3, TargetPolicy::LeastInFlight, None), "/x").unwrap();
        let _a = t.enter(0);
        let _b = t.enter(0);
        let _c = t.enter(1);
        assert_eq!(t.choose(1, 0), 2);
        // Target 2 refused a connection: it is passed over for a second, then tried again.
        t.refused(2, 5_000);
        assert_eq!(t.choose(1, 10_000), 1);
        assert_eq!(t.choose(1, 5_000 + REFUSED_HOLD_NS), 2);
        // Every target refused: the least busy is still used rather than none.
        t.refused(0, 20_000);
        t.refused(1, 20_000);
        t.refused(2, 20_000);
        assert_eq!(t.choose(1, 30_000), 2);
        drop(_c);
        assert_eq!(
            t.choose(2, 30_000),
            1,
            "fewest in flight; ties rotate with the id"
        );
    }
}
