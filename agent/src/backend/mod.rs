//! Inference-server backends: how to ask for a streamed generation and how to read its stream.
//!
//! To add a backend: a module with `request_body`, a line/event parser returning
//! [`StreamEvent`]s, a `preflight`; a variant in `tokengun_common::Api`; a branch in
//! `crate::engine`'s dispatch; a simulator route; and a scenario test.

pub mod ollama;

use tokengun_common::ServerTimings;

/// What one unit of a stream (an NDJSON line, an SSE event) said.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Generated text arrived: `tokens` content-bearing pieces (0 for keep-alive/metadata lines).
    Tokens(u32),
    /// The server finished the generation.
    Done(Box<Final>),
    /// The server reported an error inside the stream.
    Error(String),
}

/// The server's closing figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Final {
    /// Tokens the server says it generated.
    pub output_tokens: Option<u64>,
    pub prompt_tokens: Option<u64>,
    pub done_reason: String,
    pub timings: ServerTimings,
    /// Content carried by the final line itself (counted like any other).
    pub tokens_in_line: u32,
}
