//! Live metrics out (`--metrics-listen`): the console's events fed into
//! [`tokengun_common::metrics::Metrics`], served as Prometheus text while the run goes on.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokengun_common::metrics::http::{self, Access};
use tokengun_common::metrics::{Health, Metrics};
use tokengun_common::{CycleSummary, Progress, RequestRecord};
use tokio_util::sync::CancellationToken;

/// The metrics of this run and the agents' names (the console numbers them).
pub struct MetricsOut {
    m: Arc<Metrics>,
    agents: Vec<String>,
}

impl MetricsOut {
    pub fn new(m: Arc<Metrics>) -> Self {
        Self {
            m,
            agents: Vec::new(),
        }
    }

    fn name(&self, agent: usize) -> String {
        self.agents
            .get(agent)
            .cloned()
            .unwrap_or_else(|| format!("agent{}", agent + 1))
    }

    pub fn agents(&mut self, names: &[String]) {
        self.agents = names.to_vec();
        self.m.agents(names);
    }

    pub fn agent_lost(&self, agent: usize) {
        self.m.agent_connected(&self.name(agent), false);
    }

    pub fn record_from(&self, agent: usize, dropped: u64) {
        self.m.agent_record(&self.name(agent), dropped);
    }

    /// A cycle starts; `label` is its phase's (the level's, `warmup`, `load`; in a run of
    /// several groups prefixed by the group's).
    pub fn cycle_start(&self, label: &str) {
        self.m.cycle_start();
        self.m.level(label);
    }

    pub fn progress(&self, p: &Progress) {
        self.m.progress(
            u64::from(p.completed) + u64::from(p.failed) + u64::from(p.in_flight),
            u64::from(p.in_flight),
            p.tokens,
        );
    }

    pub fn request_done(&self, r: &RequestRecord) {
        self.m.request_done(r);
    }

    pub fn cycle_end(&self, s: &CycleSummary) {
        self.m.level_health(Health {
            loop_delay_p99_ms: s.loop_delay_p99_ms,
            cpu_pct: s.agent_cpu_pct,
            send_lag_p99_s: s.send_lag_p99_s,
            schedule_valid: Some(s.schedule_valid),
        });
    }
}

/// Binds `listen` (checked against the access rules first) and serves the metrics until `stop`
/// is cancelled; the metrics and the bound address.
pub async fn start(
    listen: SocketAddr,
    token_file: Option<&Path>,
    insecure: bool,
    stop: CancellationToken,
) -> Result<(Arc<Metrics>, SocketAddr), String> {
    let token = match token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read --metrics-token-file {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let access =
        Access::for_listen(listen, token.as_deref(), insecure).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        format!("cannot listen on --metrics-listen {listen}: {e} (pick another port)")
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("--metrics-listen {listen}: {e}"))?;
    let m = Arc::new(Metrics::new());
    tokio::spawn(http::serve(listener, m.clone(), access, async move {
        stop.cancelled().await;
    }));
    Ok((m, bound))
}
