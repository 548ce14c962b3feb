//! The server's own metrics: its Prometheus endpoint (llama.cpp `--metrics`, vLLM, SGLang, TGI)
//! scraped while the agent monitors, the gauges and counters that say how busy the server is
//! kept as readings (`server_metrics.csv` on the controller). A server without one (Ollama) is
//! noted once, not an error.

use super::Contact;
use crate::http::{HttpClient, get_small};
use crate::log::RecordLog;
use std::sync::Arc;
use std::time::Duration;
use tokengun_common::monitor::server_metric::SERVER_METRICS;
use tokengun_common::{MonitorBatch, PowerReading, RecordBody};
use tokio_util::sync::CancellationToken;

/// The `source` of every reading this module makes.
pub const SOURCE_PROMETHEUS: &str = "prometheus";

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// The kept metrics ([`SERVER_METRICS`]) of a Prometheus text exposition, in that order, each
/// summed over its label sets (vLLM labels its gauges by model). Comments, other metrics and
/// unparsable lines are skipped.
pub fn parse(text: &str) -> Vec<(&'static str, f64)> {
    let mut sums: Vec<Option<f64>> = vec![None; SERVER_METRICS.len()];
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let Some(i) = SERVER_METRICS
            .iter()
            .position(|(k, _)| *k == &line[..name_end])
        else {
            continue;
        };
        // The value follows the labels (which may hold spaces inside quotes).
        let rest = match line[name_end..].strip_prefix('{') {
            Some(labels) => labels.rsplit_once('}').map_or("", |(_, r)| r),
            None => &line[name_end..],
        };
        let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if v.is_finite() {
            *sums[i].get_or_insert(0.0) += v;
        }
    }
    SERVER_METRICS
        .iter()
        .zip(sums)
        .filter_map(|((k, _), s)| s.map(|v| (*k, v)))
        .collect()
}

/// One answer's readings: Ollama's `/api/ps` (what it has loaded), else a Prometheus text
/// exposition (the kept metrics).
fn readings(url: &str, body: &[u8], t_ns: u64) -> Vec<PowerReading> {
    if url.ends_with("/api/ps") {
        return super::ollama_ps::parse(body)
            .unwrap_or_default()
            .into_iter()
            .map(|(device, metric, value)| PowerReading {
                t_ns,
                source: super::ollama_ps::SOURCE_OLLAMA_PS.into(),
                device,
                metric: metric.into(),
                value,
            })
            .collect();
    }
    parse(&String::from_utf8_lossy(body))
        .into_iter()
        .map(|(metric, value)| PowerReading {
            t_ns,
            source: SOURCE_PROMETHEUS.into(),
            device: "server".into(),
            metric: metric.into(),
            value,
        })
        .collect()
}

/// What one scrape loop needs.
pub struct Scrape {
    pub client: HttpClient,
    pub url: String,
    pub interval: Duration,
    pub log: Arc<RecordLog>,
    pub contact: Arc<Contact>,
    pub cancel: CancellationToken,
}

fn note(log: &RecordLog, text: String) {
    log.append(RecordBody::Monitor(Box::new(MonitorBatch {
        notes: vec![text],
        ..MonitorBatch::default()
    })));
}

/// Scrapes `url` every `interval` until cancelled (or the controller's lease runs out). The first
/// failure is noted; when the very first scrape fails the server has no such endpoint and
/// scraping stops.
pub async fn scrape_loop(s: Scrape) {
    let mut tick = tokio::time::interval(s.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut scraped, mut noted) = (false, false);
    loop {
        tokio::select! {
            () = s.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if s.contact.expired(super::MONITOR_LEASE) {
            return;
        }
        let t_ns = crate::clock::mono_ns();
        match get_small(&s.client, &s.url, SCRAPE_TIMEOUT).await {
            Ok(body) => {
                let readings = readings(&s.url, &body, t_ns);
                if readings.is_empty() && !scraped {
                    note(
                        &s.log,
                        format!(
                            "server metrics: {} has none of the metrics tokengun reads (llama.cpp, vLLM, SGLang, TGI names); not scraped",
                            s.url
                        ),
                    );
                    return;
                }
                scraped = true;
                s.log.append(RecordBody::Monitor(Box::new(MonitorBatch {
                    server_metrics: readings,
                    ..MonitorBatch::default()
                })));
            }
            Err(e) if !scraped => {
                note(
                    &s.log,
                    format!(
                        "server metrics: none ({e}); Ollama has no /metrics, llama-server needs --metrics; --server-metrics URL names another endpoint, off skips it"
                    ),
                );
                return;
            }
            Err(e) if !noted => {
                noted = true;
                note(
                    &s.log,
                    format!("server metrics: a scrape failed ({e}); later failures are not noted"),
                );
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_llama_server_exposition_parses() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/llama-server/metrics.txt"),
        )
        .unwrap();
        let got = parse(&text);
        let get = |k: &str| got.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        assert_eq!(get("llamacpp:requests_processing"), Some(8.0));
        assert_eq!(get("llamacpp:requests_deferred"), Some(0.0));
        assert_eq!(get("llamacpp:tokens_predicted_total"), Some(28416.0));
        assert_eq!(get("llamacpp:n_busy_slots_per_decode"), Some(3.82712));
        // Not kept: timing counters, speculative decoding.
        assert_eq!(get("llamacpp:prompt_seconds_total"), None);
        assert_eq!(got.len(), 5, "{got:?}");
    }

    #[test]
    fn labelled_series_are_summed_and_junk_is_skipped() {
        let text = "# HELP vllm:num_requests_running Number of requests running.\n\
            # TYPE vllm:num_requests_running gauge\n\
            vllm:num_requests_running{engine=\"0\",model_name=\"a b\"} 3.0\n\
            vllm:num_requests_running{engine=\"1\",model_name=\"a}b\"} 2.0 1700000000000\n\
            vllm:num_requests_waiting{model_name=\"m\"} 7\n\
            vllm:gpu_cache_usage_perc{model_name=\"m\"} NaN\n\
            vllm:num_requests_waiting_not 9\n\
            garbage line\n\
            tgi_queue_size 4\n";
        assert_eq!(
            parse(text),
            [
                ("vllm:num_requests_running", 5.0),
                ("vllm:num_requests_waiting", 7.0),
                ("tgi_queue_size", 4.0)
            ]
        );
        assert!(parse("").is_empty());
    }
}
