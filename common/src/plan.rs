//! What one cycle asks of an agent: the plan compiled from CLI flags, validated before any load.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Request body keys that extra JSON may not override: they define what is measured.
pub const RESERVED_BODY_KEYS: &[&str] = &["model", "prompt", "stream", "messages"];

/// The most concurrent requests a single level may ask for.
pub const MAX_LEVEL: u32 = 100_000;

/// Which wire API the target speaks. To add one: a variant here, its wire enum in the proto,
/// a backend module in the agent, and a simulator route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// Ollama's native `/api/generate` NDJSON stream.
    Ollama,
}

impl Api {
    /// The name used in result paths and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Ollama => "ollama",
        }
    }
}

/// How requests of one cycle are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadShape {
    /// The study's cycle: `level` requests fired together; the cycle ends when all have ended.
    Burst,
}

/// One cycle as sent to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CyclePlan {
    /// Run-unique cycle number, from 1.
    pub cycle_id: u32,
    /// Concurrency of the cycle.
    pub level: u32,
    pub shape: LoadShape,
    /// Base URL of the inference server, e.g. `http://127.0.0.1:11434`.
    pub target_url: String,
    pub api: Api,
    pub model: String,
    pub prompt: String,
    /// A request still running after this long is ended and recorded as a timeout.
    #[serde(with = "humantime_serde_ms")]
    pub request_timeout: Duration,
    /// A JSON object merged into every request body, or empty.
    pub extra_body_json: String,
}

/// Why a plan was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("level {0} is out of range: use 1 to {MAX_LEVEL} concurrent requests")]
    Level(u32),
    #[error("no levels given: pass --levels with a comma-separated list such as 1,2,4,8")]
    NoLevels,
    #[error(
        "invalid level {0:?}: levels are whole numbers from 1 to {MAX_LEVEL}, comma-separated (e.g. 1,2,4,8)"
    )]
    Unparsable(String),
    #[error(
        "level {0} appears twice in --levels: each level gets its own results folder, list it once"
    )]
    Duplicate(u32),
    #[error("the model name is empty: pass --model")]
    EmptyModel,
    #[error("the request timeout must be above zero")]
    ZeroTimeout,
    #[error("the target URL {0:?} is not an http:// URL with a host (e.g. http://127.0.0.1:11434)")]
    Target(String),
    #[error("extra request JSON must be a JSON object: {0}")]
    ExtraBody(String),
}

impl CyclePlan {
    /// Checks everything an agent would otherwise discover only after sending load.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.level == 0 || self.level > MAX_LEVEL {
            return Err(PlanError::Level(self.level));
        }
        if self.model.trim().is_empty() {
            return Err(PlanError::EmptyModel);
        }
        if self.request_timeout.is_zero() {
            return Err(PlanError::ZeroTimeout);
        }
        parse_target(&self.target_url)?;
        if !self.extra_body_json.trim().is_empty() {
            match serde_json::from_str::<serde_json::Value>(&self.extra_body_json) {
                Ok(serde_json::Value::Object(m)) => {
                    if let Some(k) = RESERVED_BODY_KEYS.iter().find(|k| m.contains_key(**k)) {
                        return Err(PlanError::ExtraBody(format!(
                            "it sets {k:?}, which tokengun sets itself (use --model, --prompt)"
                        )));
                    }
                }
                Ok(_) => return Err(PlanError::ExtraBody("not an object".into())),
                Err(e) => return Err(PlanError::ExtraBody(e.to_string())),
            }
        }
        Ok(())
    }
}

/// Host and port of an `http://host[:port][/]` target (port 80 when absent).
pub fn parse_target(url: &str) -> Result<(String, u16), PlanError> {
    let bad = || PlanError::Target(url.to_string());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if tail.is_empty() => 80,
            None => return Err(bad()),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
            None => (authority.to_string(), 80),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

/// Parses `1,2,4,8` into levels, refusing zeros, junk and out-of-range values.
pub fn parse_levels(s: &str) -> Result<Vec<u32>, PlanError> {
    let mut levels = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let level: u32 = part
            .parse()
            .map_err(|_| PlanError::Unparsable(part.to_string()))?;
        if level == 0 || level > MAX_LEVEL {
            return Err(PlanError::Level(level));
        }
        if levels.contains(&level) {
            return Err(PlanError::Duplicate(level));
        }
        levels.push(level);
    }
    if levels.is_empty() {
        return Err(PlanError::NoLevels);
    }
    Ok(levels)
}

/// Serialises a `Duration` as whole milliseconds (`request_timeout_ms` in manifests).
mod humantime_serde_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_refuse() {
        assert_eq!(parse_levels("1,2, 4,8").unwrap(), vec![1, 2, 4, 8]);
        assert_eq!(parse_levels("0"), Err(PlanError::Level(0)));
        assert_eq!(parse_levels("1,x"), Err(PlanError::Unparsable("x".into())));
        assert_eq!(parse_levels("-3"), Err(PlanError::Unparsable("-3".into())));
        assert_eq!(parse_levels(" , "), Err(PlanError::NoLevels));
        assert_eq!(parse_levels("100001"), Err(PlanError::Level(100_001)));
        assert_eq!(parse_levels("1,2,1"), Err(PlanError::Duplicate(1)));
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            parse_target("http://127.0.0.1:11434").unwrap(),
            ("127.0.0.1".into(), 11434)
        );
        assert_eq!(parse_target("http://box/").unwrap(), ("box".into(), 80));
        assert_eq!(
            parse_target("http://[::1]:8080").unwrap(),
            ("::1".into(), 8080)
        );
        assert!(parse_target("https://x").is_err());
        assert!(parse_target("http://:80").is_err());
        assert!(parse_target("http://h:notaport").is_err());
        assert!(parse_target("127.0.0.1:11434").is_err());
    }
}
