//! `server_metrics.csv` (optional): the server's own Prometheus gauges over time (requests
//! running and waiting, KV-cache use), and per level the most requests it said were waiting.

use super::{RunData, at_agent, label_key, merge_spans, series, widen_span};
use crate::report::ReportError;
use std::collections::BTreeMap;
use std::path::Path;
use tokengun_common::monitor::server_metric::{ServerMetricKind as Kind, server_metric_kind};
use tokengun_common::run_dir;

/// Adds server_metrics.csv's series and each level's most-waiting figure; silent without the
/// file (the run's notes already say why the server was not scraped).
pub(super) fn add(dir: &Path, data: &mut RunData) -> Result<(), ReportError> {
    let Some(rows) = run_dir::read_server_metrics(dir)? else {
        return Ok(());
    };
    let mut queue: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut kv: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut spans = BTreeMap::new();
    let mut waiting_max: BTreeMap<String, f64> = BTreeMap::new();
    for row in &rows {
        let (Some(t), Some(v)) = (row.elapsed_s, row.value) else {
            continue;
        };
        widen_span(&mut spans, &row.cycle, t);
        let name = format!("{}{}", row.metric, at_agent(&row.agent));
        match server_metric_kind(&row.metric) {
            Some(kind @ (Kind::Running | Kind::Waiting)) => {
                queue.entry(name).or_default().push((t, v));
                if kind == Kind::Waiting && !row.cycle.is_empty() {
                    let w = waiting_max.entry(label_key(&row.cycle)).or_insert(0.0);
                    *w = w.max(v);
                }
            }
            Some(Kind::KvFraction) => kv.entry(name).or_default().push((t, v * 100.0)),
            Some(Kind::Other) | None => {}
        }
    }
    for level in &mut data.levels {
        level.server_waiting_max = waiting_max.get(&level.key()).copied();
    }
    super::ollama_ps::add(&rows, &mut data.levels);
    data.series.server_queue = series(queue);
    data.series.server_kv_pct = series(kv);
    merge_spans(&mut data.series.cycle_spans, spans);
    Ok(())
}
