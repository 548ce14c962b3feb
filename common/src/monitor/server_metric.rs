//! The server metrics tokengun reads from a server's Prometheus endpoint (llama.cpp `--metrics`,
//! vLLM, SGLang, TGI), each with what it says: the one list the agent's scraper keeps and the
//! report charts from.

/// What a kept server metric measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMetricKind {
    /// Requests the server is running now.
    Running,
    /// Requests the server holds back, waiting for a slot.
    Waiting,
    /// KV-cache use, as a fraction of the cache (0..1; vLLM's `_perc` is a fraction too).
    KvFraction,
    /// Anything else worth keeping: slots per decode, token counters.
    Other,
}

/// Every kept metric, by the name its server exposes.
pub const SERVER_METRICS: &[(&str, ServerMetricKind)] = &[
    ("llamacpp:requests_processing", ServerMetricKind::Running),
    ("llamacpp:requests_deferred", ServerMetricKind::Waiting),
    (
        "llamacpp:kv_cache_usage_ratio",
        ServerMetricKind::KvFraction,
    ),
    ("llamacpp:kv_cache_tokens", ServerMetricKind::Other),
    ("llamacpp:n_busy_slots_per_decode", ServerMetricKind::Other),
    ("llamacpp:prompt_tokens_total", ServerMetricKind::Other),
    ("llamacpp:tokens_predicted_total", ServerMetricKind::Other),
    ("vllm:num_requests_running", ServerMetricKind::Running),
    ("vllm:num_requests_waiting", ServerMetricKind::Waiting),
    ("vllm:gpu_cache_usage_perc", ServerMetricKind::KvFraction),
    ("vllm:kv_cache_usage_perc", ServerMetricKind::KvFraction),
    ("vllm:prompt_tokens_total", ServerMetricKind::Other),
    ("vllm:generation_tokens_total", ServerMetricKind::Other),
    ("sglang:num_running_reqs", ServerMetricKind::Running),
    ("sglang:num_queue_reqs", ServerMetricKind::Waiting),
    ("sglang:token_usage", ServerMetricKind::KvFraction),
    ("tgi_queue_size", ServerMetricKind::Waiting),
    ("tgi_batch_current_size", ServerMetricKind::Running),
];

/// What `name` measures, when it is a kept metric.
pub fn server_metric_kind(name: &str) -> Option<ServerMetricKind> {
    SERVER_METRICS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
}
