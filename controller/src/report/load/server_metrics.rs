//! `server_metrics.csv` (optional): the server's own Prometheus gauges over time (requests
//! running and waiting, KV-cache use), and per level the most requests it said were waiting.

use super::{RunData, at_agent, label_key, merge_spans, series, widen_span};
use crate::report::ReportError;
use std::collections::BTreeMap;
use std::path::Path;
use tokengun_common::run_dir;

/// Metrics that count requests the server is running or holding, as each server names them.
const QUEUE: &[&str] = &[
    "llamacpp:requests_processing",
    "llamacpp:requests_deferred",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "sglang:num_running_reqs",
    "sglang:num_queue_reqs",
    "tgi_queue_size",
    "tgi_batch_current_size",
];

/// The waiting ones among them.
const WAITING: &[&str] = &[
    "llamacpp:requests_deferred",
    "vllm:num_requests_waiting",
    "sglang:num_queue_reqs",
    "tgi_queue_size",
];

/// KV-cache use as a fraction of the cache (0..1; vLLM's `_perc` is a fraction too).
const KV: &[&str] = &[
    "llamacpp:kv_cache_usage_ratio",
    "vllm:gpu_cache_usage_perc",
    "vllm:kv_cache_usage_perc",
    "sglang:token_usage",
];

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
        let m = row.metric.as_str();
        if QUEUE.contains(&m) {
            queue.entry(name).or_default().push((t, v));
            if WAITING.contains(&m) && !row.cycle.is_empty() {
                let w = waiting_max.entry(label_key(&row.cycle)).or_insert(0.0);
                *w = w.max(v);
            }
        } else if KV.contains(&m) {
            kv.entry(name).or_default().push((t, v * 100.0));
        }
    }
    for level in &mut data.levels {
        level.server_waiting_max = waiting_max.get(&label_key(&level.label)).copied();
    }
    data.series.server_queue = series(queue);
    data.series.server_kv_pct = series(kv);
    merge_spans(&mut data.series.cycle_spans, spans);
    Ok(())
}
