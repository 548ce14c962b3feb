//! Whether tokengun itself may have limited a cycle: its agents' CPU, their event-loop delay and
//! the schedule's start lag, judged against fixed limits.

use super::CycleSummary;

/// A cycle whose p99 send lag (intended start -> dispatched) exceeds this fell behind its schedule:
/// its figures describe tokengun's limits as much as the server's, and it is marked invalid.
pub const SEND_LAG_LIMIT_S: f64 = 0.010;
/// Above this share of its cores (CPU seconds / wall seconds / cores), the agent's process was
/// busy enough to be the bottleneck.
pub const AGENT_CPU_LIMIT_SHARE: f64 = 0.9;
/// Above this p99 event-loop delay (ms) the agent's runtime woke its tasks late.
pub const LOOP_DELAY_LIMIT_MS: f64 = 10.0;

/// Why tokengun itself may have limited a cycle: `ok`, or the reasons joined by `; `. `checks`
/// are the agents' own measures; `schedule_valid` the start-lag verdict.
pub fn self_check_verdict(
    checks: &[crate::record::AgentSelfCheck],
    schedule_valid: bool,
    send_lag_p99_s: Option<f64>,
) -> String {
    let mut why = Vec::new();
    for c in checks {
        let share = c.cpu_share().unwrap_or(0.0);
        if share > AGENT_CPU_LIMIT_SHARE {
            why.push(format!(
                "agent CPU at {:.0}% of its {} core(s)",
                share * 100.0,
                c.cores
            ));
        }
        if let Some(d) = c.loop_delay_p99_ms.filter(|d| *d > LOOP_DELAY_LIMIT_MS) {
            why.push(format!(
                "event-loop delay p99 {d:.1} ms (over {LOOP_DELAY_LIMIT_MS} ms)"
            ));
        }
    }
    if !schedule_valid {
        why.push(format!(
            "start lag p99 {:.1} ms (over {} ms)",
            send_lag_p99_s.unwrap_or(0.0) * 1e3,
            SEND_LAG_LIMIT_S * 1e3
        ));
    }
    if why.is_empty() {
        "ok".into()
    } else {
        why.dedup();
        why.join("; ")
    }
}

impl CycleSummary {
    /// Adds the agents' measures of their own cost and judges whether tokengun was the
    /// bottleneck (see [`self_check_verdict`]).
    pub fn apply_self_checks(&mut self, checks: &[crate::record::AgentSelfCheck]) {
        let max = |v: Option<f64>, x: Option<f64>| match (v, x) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.agent_cpu_s = None;
        self.agent_cpu_pct = None;
        self.loop_delay_p99_ms = None;
        self.loop_delay_max_ms = None;
        for c in checks {
            self.agent_cpu_s = Some(self.agent_cpu_s.unwrap_or(0.0) + c.cpu_s);
            let pct = c.cpu_share().map(|s| s * 100.0);
            self.agent_cpu_pct = max(self.agent_cpu_pct, pct);
            self.loop_delay_p99_ms = max(self.loop_delay_p99_ms, c.loop_delay_p99_ms);
            self.loop_delay_max_ms = max(self.loop_delay_max_ms, c.loop_delay_max_ms);
        }
        self.self_check = self_check_verdict(checks, self.schedule_valid, self.send_lag_p99_s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Slo;
    use crate::stats::test_util::{done, info};

    #[test]
    fn self_check_flags_a_busy_agent_a_late_loop_and_a_late_schedule() {
        use crate::record::AgentSelfCheck;
        let calm = AgentSelfCheck {
            cpu_s: 0.5,
            wall_s: 10.0,
            cores: 2,
            loop_delay_p99_ms: Some(1.2),
            loop_delay_max_ms: Some(4.0),
        };
        let mut s =
            CycleSummary::from_records(&info(1), &[done(1, 0, 100, 3, 10)], &Slo::default(), false);
        assert_eq!(s.self_check, "ok");
        s.apply_self_checks(&[calm]);
        assert_eq!(s.self_check, "ok");
        assert_eq!(s.agent_cpu_s, Some(0.5));
        assert!((s.agent_cpu_pct.unwrap() - 2.5).abs() < 1e-9);
        assert_eq!(
            (s.loop_delay_p99_ms, s.loop_delay_max_ms),
            (Some(1.2), Some(4.0))
        );
        // 18.2 CPU s over 10 s on 2 cores: 91% > 90%.
        let busy = AgentSelfCheck {
            cpu_s: 18.2,
            ..calm
        };
        s.apply_self_checks(&[calm, busy]);
        assert_eq!(s.self_check, "agent CPU at 91% of its 2 core(s)");
        assert_eq!(s.agent_cpu_s, Some(18.7));
        // 17.9 s is 89.5%: not flagged.
        assert_eq!(
            self_check_verdict(
                &[AgentSelfCheck {
                    cpu_s: 17.9,
                    ..calm
                }],
                true,
                None
            ),
            "ok"
        );
        let late = AgentSelfCheck {
            loop_delay_p99_ms: Some(10.5),
            ..calm
        };
        assert_eq!(
            self_check_verdict(&[late], true, None),
            "event-loop delay p99 10.5 ms (over 10 ms)"
        );
        assert_eq!(
            self_check_verdict(&[late, busy], false, Some(0.015)),
            "event-loop delay p99 10.5 ms (over 10 ms); agent CPU at 91% of its 2 core(s); start lag p99 15.0 ms (over 10 ms)"
        );
        let mut r = done(1, 0, 100, 3, 10);
        r.dispatched_ns = 50_000_000;
        r.sent_ns = 50_000_000;
        let s = CycleSummary::from_records(&info(1), &[r], &Slo::default(), false);
        assert!(
            s.self_check.starts_with("start lag p99 5"),
            "{}",
            s.self_check
        );
    }
}
