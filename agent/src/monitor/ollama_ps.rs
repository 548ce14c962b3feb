//! Ollama's own account of what it has loaded (`GET /api/ps`), polled while the agent monitors:
//! which models are in memory, how much of each sits in GPU memory (the rest runs on the CPU),
//! and when each expires. Kept as readings beside the Prometheus ones (`server_metrics.csv`).

use serde::Deserialize;

/// The `source` of every reading this module makes.
pub const SOURCE_OLLAMA_PS: &str = "ollama-ps";

/// Metric names (the `device` is the model's name; `server` for the count).
pub const LOADED_MODELS: &str = "loaded_models";
pub const SIZE_BYTES: &str = "size_bytes";
pub const SIZE_VRAM_BYTES: &str = "size_vram_bytes";
/// Share of the model outside GPU memory (1 - size_vram / size), 0..1.
pub const CPU_SHARE: &str = "cpu_share";

#[derive(Deserialize)]
struct Ps {
    models: Option<Vec<PsModel>>,
}

#[derive(Deserialize)]
struct PsModel {
    #[serde(default)]
    name: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    size: f64,
    #[serde(default)]
    size_vram: f64,
}

/// (device, metric, value) readings of one `/api/ps` answer; None when it is not one.
pub fn parse(body: &[u8]) -> Option<Vec<(String, &'static str, f64)>> {
    let ps: Ps = serde_json::from_slice(body).ok()?;
    let models = ps.models.unwrap_or_default();
    let mut out = vec![("server".to_string(), LOADED_MODELS, models.len() as f64)];
    for m in models {
        let name = if m.name.is_empty() { m.model } else { m.name };
        out.push((name.clone(), SIZE_BYTES, m.size));
        out.push((name.clone(), SIZE_VRAM_BYTES, m.size_vram));
        if m.size > 0.0 {
            out.push((
                name,
                CPU_SHARE,
                (1.0 - m.size_vram / m.size).clamp(0.0, 1.0),
            ));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partly_offloaded_model_and_an_empty_answer_parse() {
        let body = br#"{"models":[{"name":"qwen3:32b","model":"qwen3:32b","size":20000000000,"digest":"x","details":{},"expires_at":"2026-08-21T11:05:00.1-07:00","size_vram":15000000000,"context_length":4096}]}"#;
        let r = parse(body).unwrap();
        assert_eq!(r[0], ("server".to_string(), LOADED_MODELS, 1.0));
        let share = r.iter().find(|x| x.1 == CPU_SHARE).unwrap();
        assert_eq!(share.0, "qwen3:32b");
        assert!((share.2 - 0.25).abs() < 1e-12);
        assert_eq!(
            parse(br#"{"models":[]}"#).unwrap(),
            vec![("server".to_string(), LOADED_MODELS, 0.0)]
        );
        assert!(parse(b"# HELP not json").is_none());
    }
}
