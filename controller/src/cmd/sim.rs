//! `tokengun sim`: serve the built-in simulator until Ctrl-C; its profile and overrides
//! (`tokengun run --sim` takes a profile and a few of them too).

use super::duration_arg;
use crate::sinks::console;
use clap::Args;
use std::time::Duration;
use tokengun_simulator::{Faults, OutputLen, PROFILES, SimConfig};
use tokio_util::sync::CancellationToken;

fn range_arg(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not a range of token counts like 100-400");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u32, u32) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

pub(super) fn profile_arg(s: &str) -> Result<String, String> {
    if SimConfig::profile(s).is_some() {
        Ok(s.to_string())
    } else {
        let names: Vec<&str> = PROFILES.iter().map(|p| p.0).collect();
        Err(format!(
            "unknown profile {s:?}; choose one of {}",
            names.join(", ")
        ))
    }
}

/// Applies the common simulator overrides to a profile.
pub fn tune_sim(
    profile: &str,
    ttft: Option<Duration>,
    token_delay: Option<Duration>,
    tokens: Option<u32>,
    slots: Option<u32>,
) -> SimConfig {
    let mut c = SimConfig::profile(profile).unwrap_or_default();
    if let Some(t) = ttft {
        c.engine.prefill_base = t;
    }
    if let Some(d) = token_delay {
        c.engine.step_base = d;
    }
    if let Some(n) = tokens {
        c.output = OutputLen::Fixed(n);
    }
    if let Some(n) = slots {
        c.engine.slots = n;
    }
    c
}

/// `tokengun sim`: a profile, then any overrides.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:11434")]
    pub listen: String,
    /// Named behaviour: fast (demos, tests), study (the study's M2 Pro + deepseek-r1:7b),
    /// llama-server (llama.cpp on 2 CPU cores, measured), firehose (no delays).
    #[arg(long, default_value = "fast", value_parser = profile_arg)]
    pub profile: String,
    /// Model names to serve (repeatable) [default: the profile's]. `NAME=PROFILE` gives a model
    /// an engine of its own with that profile's timing (e.g. `--model qwen:7b=study --model
    /// llama3.2:1b=1b`): its own slots, speed, lengths and load state.
    #[arg(long = "model", value_name = "NAME[=PROFILE]")]
    pub models: Vec<String>,
    /// Share of each loaded model in GPU memory as /api/ps reports it (size_vram / size); below
    /// 1 Ollama would be running it partly on the CPU.
    #[arg(long, default_value_t = 1.0, value_name = "SHARE")]
    pub vram_share: f64,
    /// Serve this many independent instances on consecutive ports from --listen's (each its
    /// own engines and queues, as several `ollama serve` would be).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub instances: u16,
    /// Slot acquired -> first token (prefill base) [default: the profile's].
    #[arg(long, value_parser = duration_arg)]
    pub ttft: Option<Duration>,
    /// Decode step with one request decoding [default: the profile's].
    #[arg(long, value_parser = duration_arg)]
    pub token_delay: Option<Duration>,
    /// Extra decode time per request decoding together (batch cost) [default: the profile's].
    #[arg(long, value_parser = duration_arg)]
    pub step_per_seq: Option<Duration>,
    /// Output tokens per request (a request's num_predict / max_tokens may lower it).
    #[arg(long)]
    pub tokens: Option<u32>,
    /// Requests served in parallel; more wait in a FIFO queue.
    #[arg(long)]
    pub slots: Option<u32>,
    /// Most requests waiting for a slot; more get 503 [default: unbounded, as Ollama].
    #[arg(long, value_name = "N")]
    pub queue_limit: Option<u32>,
    /// Output tokens drawn uniformly from MIN-MAX per request (seeded), e.g. 100-400.
    #[arg(long, value_name = "MIN-MAX", value_parser = range_arg, conflicts_with = "tokens")]
    pub tokens_range: Option<(u32, u32)>,
    /// Prefill cost per prompt token (about four characters a token) [default: the profile's].
    #[arg(long, value_parser = duration_arg)]
    pub prefill_per_token: Option<Duration>,
    /// Whether a prefill stalls every running stream, as llama.cpp's does [default: the profile's].
    #[arg(long)]
    pub prefill_stalls: Option<bool>,
    /// Model load on the first request and after --keep-alive idle [default: the profile's].
    #[arg(long, value_parser = duration_arg)]
    pub load_time: Option<Duration>,
    /// Idle time after which the model is unloaded [default: 5m].
    #[arg(long, value_parser = duration_arg)]
    pub keep_alive: Option<Duration>,
    /// Lognormal sigma of the decode-step jitter (0 = none; the llama-server profile has 0.12).
    #[arg(long)]
    pub jitter: Option<f64>,
    /// Every Nth request's first token comes --slow-first-by late (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub slow_first_every: u64,
    /// How late a slow first token is.
    #[arg(long, default_value = "2s", value_parser = duration_arg)]
    pub slow_first_by: Duration,
    /// Multiply every delay (0.1 = ten times faster).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Seed for output lengths, jitter and load failures.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The first N output tokens are reasoning ("thinking") [default: the profile's].
    #[arg(long, value_name = "N")]
    pub reasoning_tokens: Option<u32>,
    /// Reasoning as inline <think>...</think> text instead of its own field.
    #[arg(long)]
    pub reasoning_inline: bool,
    /// Answer every Nth request with HTTP 500 (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fail_every: u64,
    /// End every Nth request's stream mid-way (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub cut_every: u64,
    /// Tokens sent before a cut stream ends.
    #[arg(long, default_value_t = 10, value_name = "TOKENS")]
    pub cut_after: u32,
    /// Send a non-JSON line in every Nth request's stream (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub malformed_every: u64,
    /// Stall the whole server this long after the first generate request (e.g. 30s).
    #[arg(long, value_parser = duration_arg)]
    pub stall_at: Option<Duration>,
    /// How long the stall lasts.
    #[arg(long, default_value = "1s", value_parser = duration_arg)]
    pub stall_for: Duration,
    /// Keep every request's token send instants and serve them at GET /tokengun/truth (JSON,
    /// instants from an epoch given on the machine's monotonic clock), for accuracy
    /// measurements. Memory grows by about 8 bytes a token: for bounded runs only.
    #[arg(long)]
    pub record_truth: bool,
}

impl SimArgs {
    /// The simulator configuration these flags describe, with `num_parallel` (the value of
    /// `OLLAMA_NUM_PARALLEL`, if set) as the slots unless `--slots` is given.
    pub fn config(&self, num_parallel: Option<&str>) -> Result<SimConfig, String> {
        let mut c = tune_sim(
            &self.profile,
            self.ttft,
            self.token_delay,
            self.tokens,
            self.slots,
        );
        if !self.models.is_empty() {
            c.models.clear();
            for m in &self.models {
                match m.split_once('=') {
                    Some((name, profile)) => c
                        .add_model_profile(name.trim(), profile.trim())
                        .map_err(|e| e.to_string())?,
                    None => c.models.push(m.trim().to_string()),
                }
            }
        }
        if let Some(b) = self.step_per_seq {
            c.engine.step_per_seq = b;
        }
        if let Some(n) = self.reasoning_tokens {
            c.reasoning_tokens = n;
        }
        c.reasoning_inline = self.reasoning_inline;
        c.engine.queue_limit = self.queue_limit.or(c.engine.queue_limit);
        if let Some((min, max)) = self.tokens_range {
            c.output = OutputLen::Uniform { min, max };
        }
        if let Some(d) = self.prefill_per_token {
            c.engine.prefill_per_token = d;
        }
        if let Some(b) = self.prefill_stalls {
            c.engine.prefill_stalls = b;
        }
        if let Some(d) = self.load_time {
            c.engine.load_time = d;
        }
        if let Some(d) = self.keep_alive {
            c.engine.keep_alive = d;
        }
        if let Some(j) = self.jitter {
            c.engine.jitter_sigma = j;
        }
        c.time_scale = self.time_scale;
        c.vram_share = self.vram_share;
        c.seed = self.seed;
        c.record_truth = self.record_truth;
        c.faults = Faults {
            fail_every: self.fail_every,
            cut_every: self.cut_every,
            cut_after_tokens: self.cut_after,
            malformed_every: self.malformed_every,
            stall_at: self.stall_at,
            stall_for: self.stall_for,
            slow_first_every: self.slow_first_every,
            slow_first_by: self.slow_first_by,
        };
        let parallel = SimConfig::parallel_from_env(num_parallel).map_err(|e| e.to_string())?;
        if let Some(n) = self.slots.or(parallel) {
            c.set_slots(n);
        }
        Ok(c)
    }
}

/// `--listen` and the `n - 1` addresses after it (consecutive ports).
fn instance_addrs(listen: &str, n: u16) -> Result<Vec<String>, String> {
    if n <= 1 {
        return Ok(vec![listen.to_string()]);
    }
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|_| format!("--instances needs --listen as IP:PORT, not {listen:?}"))?;
    if addr.port() == 0 || addr.port().checked_add(n - 1).is_none() {
        return Err(format!(
            "--instances {n} needs {n} consecutive ports from {listen}: give a port that leaves room"
        ));
    }
    Ok((0..n)
        .map(|k| std::net::SocketAddr::new(addr.ip(), addr.port() + k).to_string())
        .collect())
}

/// Serves the simulator until `stop`.
pub async fn exec(args: &SimArgs, stop: CancellationToken) -> u8 {
    let env = std::env::var(tokengun_simulator::NUM_PARALLEL_ENV).ok();
    let prepared = args
        .config(env.as_deref())
        .and_then(|c| Ok((c, instance_addrs(&args.listen, args.instances)?)));
    let (config, addrs) = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let (models, flavor, slots) = (config.models.join(", "), config.flavor, config.engine.slots);
    let mut handles = Vec::new();
    for addr in &addrs {
        match tokengun_simulator::SimHandle::start(addr, config.clone()).await {
            Ok(h) => handles.push(h),
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
    }
    let urls: Vec<String> = handles.iter().map(|h| h.url()).collect();
    console::write_stdout(&format!(
        "tokengun simulator ({} profile, {}, {slots} slots) serving on {} (models: {models}); Ctrl-C to stop\n",
        args.profile,
        match flavor {
            tokengun_simulator::Flavor::Ollama => "Ollama's /api and /v1 endpoints",
            tokengun_simulator::Flavor::LlamaCpp => "llama.cpp's /v1 endpoints",
        },
        urls.join(", ")
    ));
    stop.cancelled().await;
    for h in handles {
        h.stop(Duration::from_secs(2)).await;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_take_consecutive_ports_and_a_bad_listen_is_named() {
        assert_eq!(
            instance_addrs("127.0.0.1:11434", 3).unwrap(),
            ["127.0.0.1:11434", "127.0.0.1:11435", "127.0.0.1:11436"]
        );
        assert_eq!(instance_addrs("localhost:1", 1).unwrap(), ["localhost:1"]);
        assert!(
            instance_addrs("localhost:1", 2)
                .unwrap_err()
                .contains("IP:PORT")
        );
        assert!(
            instance_addrs("127.0.0.1:65535", 2)
                .unwrap_err()
                .contains("consecutive")
        );
    }
}
