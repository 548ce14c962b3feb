//! What the simulated server is: its engine timing, output lengths, faults, and named profiles.

use std::time::Duration;

/// Which real server the simulator pretends to be: decides when headers go out, error shapes,
/// the OpenAI reasoning field name, and which routes exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Ollama: no byte before the first token; `/api/*` and `/v1/*`; reasoning in `thinking` /
    /// `delta.reasoning`.
    Ollama,
    /// llama.cpp `llama-server`: headers when a slot takes the request; `/v1/*` only; reasoning in
    /// `delta.reasoning_content`; `timings` on the last event.
    LlamaCpp,
}

/// The engine's timing model (all durations before `time_scale`).
///
/// A request waits FIFO for one of `slots`, then its prompt is prefilled
/// (`prefill_base + prefill_per_token * prompt tokens`). With `prefill_stalls`, that prefill
/// stalls every running stream, as llama.cpp does (the whole prompt is one engine step); the
/// new request's first token comes at its end. Each further token of a request comes
/// `step_base + step_per_seq * (requests decoding)` after the previous one, times a lognormal
/// jitter factor when `jitter_sigma` > 0.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineModel {
    pub slots: u32,
    /// Most requests waiting for a slot; more get 503 (None = unbounded, Ollama's behaviour for
    /// a loaded model).
    pub queue_limit: Option<u32>,
    /// Ollama's `OLLAMA_MAX_QUEUE` (512): while a model loads, requests beyond this many in the
    /// server get 503. None = no such bound.
    pub load_queue_limit: Option<u32>,
    pub step_base: Duration,
    pub step_per_seq: Duration,
    pub prefill_base: Duration,
    pub prefill_per_token: Duration,
    pub prefill_stalls: bool,
    /// Model load before the first request and after `keep_alive` idle (reported as
    /// `load_duration`).
    pub load_time: Duration,
    pub keep_alive: Duration,
    pub jitter_sigma: f64,
    /// Requests arriving while more than `above` are in the server (running + waiting) fail with
    /// probability `per_extra * (in_server - above)`, at most `max_probability` (memory pressure).
    pub memory_failures: Option<MemoryFailures>,
}

/// Failures that appear under load, as the study saw beyond 16 concurrent requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryFailures {
    pub above: u32,
    pub per_extra: f64,
    pub max_probability: f64,
}

/// How many tokens a request generates (a request's `num_predict` / `max_tokens` caps it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputLen {
    Fixed(u32),
    /// Uniform in `min..=max`, drawn from the seed and the request's arrival index.
    Uniform {
        min: u32,
        max: u32,
    },
}

/// Faults injected by request arrival index (1-based), so counts are deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every Nth request is answered 500 with an error body (0 = never).
    pub fail_every: u64,
    /// Every Nth request has its stream end mid-way, without the final `done` line (0 = never).
    pub cut_every: u64,
    /// Tokens sent before a cut stream ends.
    pub cut_after_tokens: u32,
    /// Every Nth request gets a line that is not JSON after its first token (0 = never).
    pub malformed_every: u64,
    /// A whole-server stall (a hiccup: GC, swapping, a model reload): this long after the first
    /// generate request arrives, no token goes out for `stall_for`; generations resume where
    /// they were. `None` = never.
    pub stall_at: Option<Duration>,
    /// Length of the stall.
    pub stall_for: Duration,
    /// Every Nth request's first token (and, on Ollama, first byte) comes `slow_first_by` late
    /// (0 = never).
    pub slow_first_every: u64,
    pub slow_first_by: Duration,
}

/// How the simulated server behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Model names served; others get the server's "not found" (llama.cpp answers any name).
    pub models: Vec<String>,
    pub flavor: Flavor,
    pub engine: EngineModel,
    pub output: OutputLen,
    /// The first N output tokens of every request are reasoning ("thinking").
    pub reasoning_tokens: u32,
    /// Reasoning as inline `<think>...</think>` text (Ollama before v0.9) instead of its own field.
    pub reasoning_inline: bool,
    pub faults: Faults,
    /// Seeds output lengths, jitter and load failures.
    pub seed: u64,
    /// Multiplies every delay (0.1 = ten times faster); 1 = as described.
    pub time_scale: f64,
    /// Keep per-request ground truth (token instants) for tests: costs memory per token.
    pub record_truth: bool,
    /// What `/api/version` reports.
    pub version: String,
    /// Models with an engine of their own (`--model name=profile`): their own slots, timing,
    /// output lengths and load state. The other `models` share the engine above.
    pub model_profiles: Vec<ModelProfile>,
    /// Share of each loaded model in GPU memory as `/api/ps` reports it (`size_vram` over
    /// `size`); below 1 the model runs partly on the CPU.
    pub vram_share: f64,
}

/// A model served by an engine of its own, from a named profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelProfile {
    pub model: String,
    /// The profile's name (for `/api/ps` and messages).
    pub profile: String,
    pub engine: EngineModel,
    pub output: OutputLen,
}

/// The environment variable Ollama reads for its parallel slots per model; the simulator
/// honours it the same way (its slots, unless `--slots` says otherwise).
pub const NUM_PARALLEL_ENV: &str = "OLLAMA_NUM_PARALLEL";

/// The named profiles and where their numbers come from.
pub const PROFILES: &[(&str, &str)] = &[
    (
        "fast",
        "for demos and tests: 4 slots, 150 ms to the first token, a token every 10 ms, 100 tokens; requests do not slow each other",
    ),
    (
        "study",
        "the original study's MacBook M2 Pro running deepseek-r1:7b under Ollama: ~43 tok/s alone (step 21 + 2.4 ms x batch), ~200 tok/s at 8, a plateau past 12 slots, prefill that stalls running streams so TTFT climbs with the queue, 1100-1900 output tokens, memory failures beyond 16 in the server",
    ),
    (
        "llama-server",
        "llama.cpp llama-server with SmolLM2-135M on 2 CPU cores, as measured in shared/reference/llama-server-calibration.md: 8 slots, step 5.9 + 4.3 ms x batch, prefill 9 + 3.3 ms per prompt token stalling every stream, headers when a slot takes the request, 128 tokens, jitter sigma 0.12",
    ),
    (
        "1b",
        "a 1B model (llama3.2:1b) on the study's MacBook: ~140 tok/s alone (step 7 + 0.8 ms x batch), 12 slots, 60 ms prefill, 0.8 s load, 300-600 output tokens; lighter and faster than study",
    ),
    (
        "firehose",
        "no delays at all and 1000 tokens per request: for measuring tokengun's own overhead",
    ),
];

impl Default for SimConfig {
    fn default() -> Self {
        Self::fixed(
            Duration::from_millis(150),
            Duration::from_millis(10),
            100,
            4,
        )
    }
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v / 1000.0)
}

impl SimConfig {
    /// The simple model: FIFO `slots`; a request's first token `ttft` after it gets a slot, then
    /// one every `token_delay`, `tokens` in all; requests do not slow each other.
    pub fn fixed(ttft: Duration, token_delay: Duration, tokens: u32, slots: u32) -> Self {
        Self {
            models: vec!["deepseek-r1:7b".to_string()],
            flavor: Flavor::Ollama,
            engine: EngineModel {
                slots,
                queue_limit: None,
                load_queue_limit: Some(512),
                step_base: token_delay,
                step_per_seq: Duration::ZERO,
                prefill_base: ttft,
                prefill_per_token: Duration::ZERO,
                prefill_stalls: false,
                load_time: Duration::ZERO,
                keep_alive: Duration::from_secs(300),
                jitter_sigma: 0.0,
                memory_failures: None,
            },
            output: OutputLen::Fixed(tokens),
            reasoning_tokens: 0,
            reasoning_inline: false,
            faults: Faults::default(),
            seed: 0,
            time_scale: 1.0,
            record_truth: false,
            version: format!("0.0.0-tokengun-sim-{}", env!("CARGO_PKG_VERSION")),
            model_profiles: Vec::new(),
            vram_share: 1.0,
        }
    }

    /// A named profile (see [`PROFILES`]).
    pub fn profile(name: &str) -> Option<Self> {
        let base = Self::default();
        Some(match name {
            "fast" => base,
            "study" => Self {
                engine: EngineModel {
                    slots: 12,
                    queue_limit: None,
                    load_queue_limit: Some(512),
                    step_base: ms(21.0),
                    step_per_seq: ms(2.4),
                    prefill_base: ms(200.0),
                    prefill_per_token: ms(2.0),
                    prefill_stalls: true,
                    load_time: ms(2500.0),
                    keep_alive: Duration::from_secs(300),
                    jitter_sigma: 0.08,
                    memory_failures: Some(MemoryFailures {
                        above: 16,
                        per_extra: 1.0 / 8.0,
                        max_probability: 0.5,
                    }),
                },
                output: OutputLen::Uniform {
                    min: 1100,
                    max: 1900,
                },
                reasoning_tokens: 400,
                ..base
            },
            "llama-server" => Self {
                models: vec!["smollm2".to_string()],
                flavor: Flavor::LlamaCpp,
                engine: EngineModel {
                    slots: 8,
                    queue_limit: None,
                    load_queue_limit: None,
                    step_base: ms(5.9),
                    step_per_seq: ms(4.3),
                    prefill_base: ms(9.0),
                    prefill_per_token: ms(3.3),
                    prefill_stalls: true,
                    load_time: Duration::ZERO,
                    keep_alive: Duration::from_secs(300),
                    jitter_sigma: 0.12,
                    memory_failures: None,
                },
                output: OutputLen::Fixed(128),
                version: "b0-unknown".to_string(),
                ..base
            },
            "1b" => Self {
                models: vec!["llama3.2:1b".to_string()],
                engine: EngineModel {
                    slots: 12,
                    queue_limit: None,
                    load_queue_limit: Some(512),
                    step_base: ms(7.0),
                    step_per_seq: ms(0.8),
                    prefill_base: ms(60.0),
                    prefill_per_token: ms(0.5),
                    prefill_stalls: true,
                    load_time: ms(800.0),
                    keep_alive: Duration::from_secs(300),
                    jitter_sigma: 0.05,
                    memory_failures: None,
                },
                output: OutputLen::Uniform { min: 300, max: 600 },
                ..base
            },
            "firehose" => Self {
                engine: EngineModel {
                    slots: 100_000,
                    step_base: Duration::ZERO,
                    prefill_base: Duration::ZERO,
                    ..base.engine.clone()
                },
                output: OutputLen::Fixed(1000),
                ..base
            },
            _ => return None,
        })
    }

    /// Adds `model` served by an engine of its own with profile `profile`'s timing and lengths.
    pub fn add_model_profile(&mut self, model: &str, profile: &str) -> Result<(), crate::SimError> {
        let p = Self::profile(profile).ok_or_else(|| {
            let names: Vec<&str> = PROFILES.iter().map(|p| p.0).collect();
            crate::SimError::Config(format!(
                "unknown profile {profile:?} for model {model:?}; choose one of {}",
                names.join(", ")
            ))
        })?;
        if !self.models.iter().any(|m| m == model) {
            self.models.push(model.to_string());
        }
        self.model_profiles.retain(|m| m.model != model);
        self.model_profiles.push(ModelProfile {
            model: model.to_string(),
            profile: profile.to_string(),
            engine: p.engine,
            output: p.output,
        });
        Ok(())
    }

    /// Sets every engine's slots (the base one and each model's own), as Ollama's
    /// `OLLAMA_NUM_PARALLEL` does per model.
    pub fn set_slots(&mut self, slots: u32) {
        self.engine.slots = slots;
        for m in &mut self.model_profiles {
            m.engine.slots = slots;
        }
    }

    /// The slots `OLLAMA_NUM_PARALLEL` asks for, read from `value` (the variable's text).
    pub fn parallel_from_env(value: Option<&str>) -> Result<Option<u32>, crate::SimError> {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        match v.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(crate::SimError::Config(format!(
                "{NUM_PARALLEL_ENV}={v:?} is not a positive number of parallel requests"
            ))),
        }
    }

    /// The configuration of the engine that serves `model` alone (its own profile's engine and
    /// lengths), or None when it shares the base engine.
    pub fn own_engine(&self, model: &str) -> Option<Self> {
        let p = self.model_profiles.iter().find(|p| p.model == model)?;
        Some(Self {
            models: vec![model.to_string()],
            engine: p.engine.clone(),
            output: p.output,
            model_profiles: Vec::new(),
            ..self.clone()
        })
    }

    /// Checks the configuration before any port is bound.
    pub fn validate(&self) -> Result<(), crate::SimError> {
        if self.engine.slots == 0 || self.model_profiles.iter().any(|m| m.engine.slots == 0) {
            return Err(crate::SimError::Config(
                "the simulator needs at least one slot (--slots)".into(),
            ));
        }
        if self.models.iter().all(|m| m.trim().is_empty()) {
            return Err(crate::SimError::Config(
                "the simulator needs at least one model name".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.vram_share) {
            return Err(crate::SimError::Config(
                "--vram-share is a share from 0 to 1".into(),
            ));
        }
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(crate::SimError::Config(
                "--time-scale must be a positive number".into(),
            ));
        }
        if let OutputLen::Uniform { min, max } = self.output {
            if min > max || max == 0 {
                return Err(crate::SimError::Config(format!(
                    "output length range {min}..{max} is empty"
                )));
            }
        }
        if !(self.engine.jitter_sigma.is_finite() && self.engine.jitter_sigma >= 0.0) {
            return Err(crate::SimError::Config(
                "jitter sigma must be 0 or more".into(),
            ));
        }
        Ok(())
    }
}
