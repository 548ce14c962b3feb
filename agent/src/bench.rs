//! The narrow surface the agent's benches (agent/benches) measure through; not an API.

use crate::backend::{self, Chunk, StreamParser};
use tokengun_common::Api;

pub use crate::live::LiveRequests;

/// One response's stream parser, as the engine drives it.
pub struct Parser {
    inner: Box<dyn StreamParser>,
    chunks: Vec<Chunk>,
}

impl Parser {
    /// A parser for an `api` stream.
    pub fn new(api: Api) -> Self {
        Self {
            inner: backend::parser(api),
            chunks: Vec::new(),
        }
    }

    /// Feeds one read; returns the tokens (answer and reasoning) its units carried.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<u64, String> {
        self.chunks.clear();
        self.inner.feed(bytes, &mut self.chunks)?;
        Ok(self
            .chunks
            .drain(..)
            .map(|c| u64::from(c.answer_tokens + c.reasoning_tokens))
            .sum())
    }
}
