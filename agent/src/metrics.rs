//! The agent's `--metrics-listen`: a reader of the agent's own record log (the records it
//! streams to controllers) that keeps [`tokengun_common::metrics::Metrics`] up to date. It only
//! reads the log, like a controller's stream would: the load and its records never wait on it.
//! On an agent the `level` label is the cycle (`cycle-3`): the agent knows cycles, not levels.

use crate::log::RecordLog;
use std::sync::Arc;
use tokengun_common::RecordBody;
use tokengun_common::metrics::{Health, Metrics};
use tokio_util::sync::CancellationToken;

/// Records read per wake-up at most.
const BATCH: usize = 4096;

/// Follows `log` from its current end, feeding `metrics`, until `stop`.
pub(crate) async fn follow(log: Arc<RecordLog>, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut seen = log.counts().0;
    let mut wake = log.subscribe();
    loop {
        loop {
            let recs = log.after(seen, BATCH);
            let Some(last) = recs.last().map(|r| r.seq) else {
                break;
            };
            seen = last;
            for r in recs {
                take(&metrics, r.body);
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = wake.changed() => if changed.is_err() { return },
        }
    }
}

fn take(m: &Metrics, body: RecordBody) {
    match body {
        RecordBody::CycleStarted { cycle_id, .. } => {
            m.cycle_start();
            m.level(&format!("cycle-{cycle_id}"));
        }
        RecordBody::Progress(p) => m.progress(
            u64::from(p.completed) + u64::from(p.failed) + u64::from(p.in_flight),
            u64::from(p.in_flight),
            p.tokens,
        ),
        RecordBody::Request(r) => m.request_done(&r),
        RecordBody::CycleDone(d) => {
            let sc = d.self_check;
            m.level_health(Health {
                loop_delay_p99_ms: sc.and_then(|s| s.loop_delay_p99_ms),
                cpu_pct: sc.and_then(|s| s.cpu_share()).map(|s| s * 100.0),
                send_lag_p99_s: None,
                schedule_valid: None,
            });
        }
        RecordBody::Monitor(_) => {}
    }
}
