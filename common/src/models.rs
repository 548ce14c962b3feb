//! Model names as servers list them: whether the model a run asks for is among a server's.

/// Whether `model` is in `available`, accepting Ollama's implicit `:latest` tag.
pub fn model_available(model: &str, available: &[String]) -> bool {
    available.iter().any(|m| {
        m == model
            || (!model.contains(':') && m.strip_suffix(":latest") == Some(model))
            || model.strip_suffix(":latest") == Some(m.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_and_the_implicit_latest_tag() {
        let m = vec!["deepseek-r1:7b".to_string(), "llama3.2:latest".to_string()];
        assert!(model_available("deepseek-r1:7b", &m));
        assert!(model_available("llama3.2", &m));
        assert!(!model_available("deepseek-r1:14b", &m));
        assert!(!model_available("deepseek-r1", &m));
        let plain = vec!["smollm2".to_string()];
        assert!(model_available("smollm2:latest", &plain));
    }
}
