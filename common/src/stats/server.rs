//! The server's account beside the client's: where one request's time went (queue, model load,
//! prefill, decode, client), whether the server's token count agrees with the stream's, and the
//! per-level tally of both ([`ServerTally`] -> [`ServerAccount`]).

use crate::record::{OutcomeKind, RequestRecord, TokenSource};
use serde::{Deserialize, Serialize};

/// A server-reported model load at least this long is a real load (a warm Ollama says a few
/// milliseconds): the request's TTFT is kept out of the level's TTFT percentiles and the load is
/// reported apart.
pub const MODEL_LOAD_NS: u64 = 500_000_000;

/// Where one request's time went, from its intended start to its end, ns. The parts sum to the
/// request's E2E exactly: each server figure is capped by the client time it must fit in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Before the server started this request's work: connect, tokengun's and the server's
    /// queue (TTFT - load - prefill).
    pub queue_ns: u64,
    /// The server loading the model.
    pub load_ns: u64,
    /// The server evaluating the prompt (to the first token).
    pub prefill_ns: u64,
    /// The server generating the tokens after the first.
    pub decode_ns: u64,
    /// The rest, on the client's side of the stream: network, parsing, the stream's end
    /// ((end - first token) - decode).
    pub client_ns: u64,
}

/// The breakdown of a completed request whose server reported its prefill or decode time.
pub fn breakdown(r: &RequestRecord) -> Option<Breakdown> {
    if r.outcome != OutcomeKind::Completed
        || (r.server.prompt_eval_ns.is_none() && r.server.eval_ns.is_none())
    {
        return None;
    }
    let first = r.first_token_ns?;
    let ttft = first.saturating_sub(r.intended_start_ns);
    let after = r.end_ns.saturating_sub(first);
    let load_ns = r.server.load_ns.unwrap_or(0).min(ttft);
    let prefill_ns = r.server.prompt_eval_ns.unwrap_or(0).min(ttft - load_ns);
    let decode_ns = r.server.eval_ns.unwrap_or(0).min(after);
    Some(Breakdown {
        queue_ns: ttft - load_ns - prefill_ns,
        load_ns,
        prefill_ns,
        decode_ns,
        client_ns: after - decode_ns,
    })
}

/// Whether the server's output token count agrees with the tokens tokengun saw in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenAgreement {
    /// Not a completed request, or the server gave no count.
    Unchecked,
    /// Equal.
    Exact,
    /// The server counts one more on a `stop`: the end-of-sequence token, which has no text
    /// (llama.cpp's `completion_tokens`).
    EndToken,
    /// Anything else: chunks that carried several tokens, lost or extra events.
    Mismatch,
}

impl TokenAgreement {
    /// Column text.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAgreement::Unchecked => "",
            TokenAgreement::Exact => "exact",
            TokenAgreement::EndToken => "end-token",
            TokenAgreement::Mismatch => "mismatch",
        }
    }
}

/// The agreement of `r`'s server count with its stream.
pub fn token_agreement(r: &RequestRecord) -> TokenAgreement {
    if r.outcome != OutcomeKind::Completed || r.token_source != TokenSource::Server {
        return TokenAgreement::Unchecked;
    }
    if r.output_tokens == r.counted_tokens {
        TokenAgreement::Exact
    } else if r.output_tokens == r.counted_tokens + 1 && r.done_reason == "stop" {
        TokenAgreement::EndToken
    } else {
        TokenAgreement::Mismatch
    }
}

/// True when `r` paid a model load (see [`MODEL_LOAD_NS`]).
pub fn paid_model_load(r: &RequestRecord) -> bool {
    r.server.load_ns.is_some_and(|l| l >= MODEL_LOAD_NS)
}

/// Mergeable per-level sums of the server's account.
#[derive(Debug, Clone, Default)]
pub struct ServerTally {
    checked: u32,
    exact: u32,
    end_token: u32,
    mismatch: u32,
    /// Over the checked requests: the server's tokens and the stream's content chunks.
    server_tokens: u64,
    chunks: u64,
    breakdowns: u32,
    sum: [u128; 5],
    model_loads: u32,
    model_load_max_ns: u64,
    cached_tokens: u64,
    cached_known: u32,
}

impl ServerTally {
    /// Adds one request.
    pub fn add(&mut self, r: &RequestRecord) {
        let agreement = token_agreement(r);
        if agreement != TokenAgreement::Unchecked {
            self.checked += 1;
            self.server_tokens += r.output_tokens;
            self.chunks += r.timeline.len() as u64;
        }
        match agreement {
            TokenAgreement::Exact => self.exact += 1,
            TokenAgreement::EndToken => self.end_token += 1,
            TokenAgreement::Mismatch => self.mismatch += 1,
            TokenAgreement::Unchecked => {}
        }
        if let Some(b) = breakdown(r) {
            self.breakdowns += 1;
            let parts = [
                b.queue_ns,
                b.load_ns,
                b.prefill_ns,
                b.decode_ns,
                b.client_ns,
            ];
            for (s, p) in self.sum.iter_mut().zip(parts) {
                *s += u128::from(p);
            }
        }
        if paid_model_load(r) {
            self.model_loads += 1;
            self.model_load_max_ns = self.model_load_max_ns.max(r.server.load_ns.unwrap_or(0));
        }
        if r.outcome == OutcomeKind::Completed
            && let Some(n) = r.server.cached_tokens
        {
            self.cached_tokens += n;
            self.cached_known += 1;
        }
    }

    /// Adds another agent's share of the same level.
    pub fn merge(&mut self, o: &ServerTally) {
        self.checked += o.checked;
        self.exact += o.exact;
        self.end_token += o.end_token;
        self.mismatch += o.mismatch;
        self.server_tokens += o.server_tokens;
        self.chunks += o.chunks;
        self.breakdowns += o.breakdowns;
        for (s, p) in self.sum.iter_mut().zip(o.sum) {
            *s += p;
        }
        self.model_loads += o.model_loads;
        self.model_load_max_ns = self.model_load_max_ns.max(o.model_load_max_ns);
        self.cached_tokens += o.cached_tokens;
        self.cached_known += o.cached_known;
    }

    /// The level's figures; `None` when no request carried any of the server's account.
    pub fn account(&self) -> Option<ServerAccount> {
        if self.checked == 0 && self.breakdowns == 0 && self.model_loads == 0 {
            return None;
        }
        let mean = |i: usize| {
            (self.breakdowns > 0).then(|| self.sum[i] as f64 / f64::from(self.breakdowns) / 1e9)
        };
        Some(ServerAccount {
            token_checked: self.checked,
            token_exact: self.exact,
            token_end_token: self.end_token,
            token_mismatch: self.mismatch,
            tokens_per_chunk: (self.chunks > 0)
                .then(|| self.server_tokens as f64 / self.chunks as f64),
            breakdown_requests: self.breakdowns,
            queue_s_mean: mean(0),
            load_s_mean: mean(1),
            prefill_s_mean: mean(2),
            decode_s_mean: mean(3),
            client_s_mean: mean(4),
            model_loads: self.model_loads,
            model_load_max_s: (self.model_loads > 0).then(|| self.model_load_max_ns as f64 / 1e9),
            cached_tokens: (self.cached_known > 0).then_some(self.cached_tokens),
        })
    }
}

/// A level's server account: token agreement, the mean timing breakdown, model loads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerAccount {
    /// Completed requests for which the server gave an output token count.
    pub token_checked: u32,
    /// ... whose count equals the stream's.
    pub token_exact: u32,
    /// ... whose count is the stream's plus the end-of-sequence token.
    pub token_end_token: u32,
    /// ... whose count differs otherwise.
    pub token_mismatch: u32,
    /// Server output tokens per content chunk over the checked requests (1.0: a token a chunk).
    pub tokens_per_chunk: Option<f64>,
    /// Completed requests with a timing breakdown (the server gave prefill or decode time).
    pub breakdown_requests: u32,
    /// Mean parts of the breakdown over those requests, seconds (see [`Breakdown`]).
    pub queue_s_mean: Option<f64>,
    pub load_s_mean: Option<f64>,
    pub prefill_s_mean: Option<f64>,
    pub decode_s_mean: Option<f64>,
    pub client_s_mean: Option<f64>,
    /// Requests that paid a model load (kept out of the TTFT percentiles), and the longest load.
    pub model_loads: u32,
    pub model_load_max_s: Option<f64>,
    /// Prompt tokens the server reused from its cache, summed, where it said.
    pub cached_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ServerTimings;
    use crate::stats::test_util::done;

    fn with_server(mut r: RequestRecord, server: ServerTimings) -> RequestRecord {
        r.server = server;
        r
    }

    #[test]
    fn breakdown_parts_sum_to_e2e_and_cap_server_figures() {
        // Intended start 0, first token at 300 ms, 11 tokens 100 ms apart: the end at 1300 ms.
        let r = with_server(
            done(1, 0, 300, 11, 100),
            ServerTimings {
                prompt_eval_ns: Some(100_000_000),
                eval_ns: Some(950_000_000),
                ..Default::default()
            },
        );
        let b = breakdown(&r).unwrap();
        assert_eq!(b.queue_ns, 200_000_000);
        assert_eq!(b.prefill_ns, 100_000_000);
        assert_eq!(b.decode_ns, 950_000_000);
        assert_eq!(b.client_ns, 50_000_000);
        let sum = b.queue_ns + b.load_ns + b.prefill_ns + b.decode_ns + b.client_ns;
        assert_eq!(sum, r.end_ns - r.intended_start_ns);

        // A server figure larger than the client time it must fit in is capped, never negative.
        let big = with_server(
            r.clone(),
            ServerTimings {
                load_ns: Some(250_000_000),
                prompt_eval_ns: Some(900_000_000),
                eval_ns: Some(5_000_000_000),
                ..Default::default()
            },
        );
        let b = breakdown(&big).unwrap();
        assert_eq!(
            (b.queue_ns, b.load_ns, b.prefill_ns),
            (0, 250_000_000, 50_000_000)
        );
        assert_eq!((b.decode_ns, b.client_ns), (1_000_000_000, 0));

        // No server timings, or a failed request: no breakdown.
        assert_eq!(
            breakdown(&with_server(r.clone(), ServerTimings::default())),
            None
        );
        let mut failed = big;
        failed.outcome = OutcomeKind::HttpError;
        assert_eq!(breakdown(&failed), None);
    }

    #[test]
    fn token_agreement_allows_only_the_end_token_on_stop() {
        let mut r = done(1, 0, 10, 16, 10);
        r.token_source = TokenSource::Server;
        r.counted_tokens = 16;
        r.output_tokens = 16;
        assert_eq!(token_agreement(&r), TokenAgreement::Exact);
        r.output_tokens = 17;
        r.done_reason = "length".into();
        assert_eq!(token_agreement(&r), TokenAgreement::Mismatch);
        r.done_reason = "stop".into();
        assert_eq!(token_agreement(&r), TokenAgreement::EndToken);
        r.output_tokens = 32;
        assert_eq!(token_agreement(&r), TokenAgreement::Mismatch);
        r.token_source = TokenSource::Counted;
        assert_eq!(token_agreement(&r), TokenAgreement::Unchecked);
    }

    #[test]
    fn tally_merges_to_the_same_account_as_one_pass() {
        let records: Vec<RequestRecord> = (0..6u32)
            .map(|i| {
                let mut r = done(i + 1, 0, 100, 10, 80);
                r.token_source = TokenSource::Server;
                r.counted_tokens = 10;
                r.output_tokens = if i == 5 { 20 } else { 10 };
                with_server(
                    r,
                    ServerTimings {
                        load_ns: (i == 0).then_some(2_000_000_000),
                        prompt_eval_ns: Some(40_000_000),
                        eval_ns: Some(800_000_000),
                        cached_tokens: Some(u64::from(i)),
                        ..Default::default()
                    },
                )
            })
            .collect();
        let mut one = ServerTally::default();
        records.iter().for_each(|r| one.add(r));
        let (mut a, mut b) = (ServerTally::default(), ServerTally::default());
        records[..2].iter().for_each(|r| a.add(r));
        records[2..].iter().for_each(|r| b.add(r));
        a.merge(&b);
        let (x, y) = (one.account().unwrap(), a.account().unwrap());
        assert_eq!(x, y);
        assert_eq!(
            (x.token_checked, x.token_exact, x.token_mismatch),
            (6, 5, 1)
        );
        assert_eq!(x.model_loads, 1);
        assert_eq!(x.model_load_max_s, Some(2.0));
        assert_eq!(x.cached_tokens, Some(15));
        assert_eq!(x.breakdown_requests, 6);
        assert!((x.tokens_per_chunk.unwrap() - 70.0 / 60.0).abs() < 1e-9);
        assert_eq!(ServerTally::default().account(), None);
    }
}
