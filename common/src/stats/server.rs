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
    /// The stream's events held fewer tokens than the server counted, by no more than their
    /// multi-byte characters explain (see [`place_server_tokens`]), plus the end token on a stop.
    Utf8Merged,
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
            TokenAgreement::Utf8Merged => "utf8-merged",
            TokenAgreement::Mismatch => "mismatch",
        }
    }
}

/// The agreement of `r`'s server count with its stream.
pub fn token_agreement(r: &RequestRecord) -> TokenAgreement {
    if r.outcome != OutcomeKind::Completed || r.token_source != TokenSource::Server {
        return TokenAgreement::Unchecked;
    }
    let seen = r.counted_tokens + r.utf8_merged_tokens;
    let stop = r.done_reason == "stop";
    if r.output_tokens == r.counted_tokens {
        TokenAgreement::Exact
    } else if r.utf8_merged_tokens > 0
        && (r.output_tokens == seen || (stop && r.output_tokens == seen + 1))
    {
        TokenAgreement::Utf8Merged
    } else if r.output_tokens == r.counted_tokens + 1 && stop {
        TokenAgreement::EndToken
    } else {
        TokenAgreement::Mismatch
    }
}

/// Places the tokens the server counted beyond the stream's events on the timeline, so that ITL
/// and the decode rate are per token.
///
/// A server that streams text holds back a token ending inside a UTF-8 character and sends it with
/// the next one (llama.cpp does), so one event then carries several tokens. An event whose text
/// has `k` bytes of multi-byte characters can hide at most `k - 1` tokens: each held-back token and
/// the one completing the character hold at least one such byte each. `room` lists (timeline
/// index, that bound) for such events, in order. When the shortfall (less the end-of-sequence
/// token on a `stop`) fits in the room, it is added to those events in order and kept in
/// `utf8_merged_tokens`. When it does not (a server that packs tokens into events, speculative
/// decoding, lost events), it is spread evenly over the events after the first and the record
/// stays a mismatch. Call it once, after `counted_tokens` is set.
pub fn place_server_tokens(r: &mut RequestRecord, room: &[(usize, u32)]) {
    if r.token_source != TokenSource::Server || r.output_tokens <= r.counted_tokens {
        return;
    }
    let mut short = r.output_tokens - r.counted_tokens;
    if r.done_reason == "stop" {
        short -= 1; // the end token, which has no text
    }
    if short == 0 {
        return;
    }
    let total: u64 = room.iter().map(|&(_, k)| u64::from(k)).sum();
    if short <= total {
        r.utf8_merged_tokens = short;
        for &(i, k) in room {
            let add = short.min(u64::from(k));
            if let Some(c) = r.timeline.get_mut(i) {
                c.tokens = c
                    .tokens
                    .saturating_add(u32::try_from(add).unwrap_or(u32::MAX));
            }
            short -= add;
        }
        return;
    }
    let Some(later) = r.timeline.get_mut(1..).filter(|l| !l.is_empty()) else {
        return;
    };
    let n = later.len() as u64;
    for (j, c) in later.iter_mut().enumerate() {
        let add = short / n + u64::from((j as u64) < short % n);
        c.tokens = c
            .tokens
            .saturating_add(u32::try_from(add).unwrap_or(u32::MAX));
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
    utf8_merged: u32,
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
            // The end token of a stop has no event of its own: it is not packed into one.
            let end_token = agreement != TokenAgreement::Exact && r.done_reason == "stop";
            self.server_tokens += r.output_tokens - u64::from(end_token);
            self.chunks += r.timeline.len() as u64;
        }
        match agreement {
            TokenAgreement::Exact => self.exact += 1,
            TokenAgreement::EndToken => self.end_token += 1,
            TokenAgreement::Utf8Merged => self.utf8_merged += 1,
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
        self.utf8_merged += o.utf8_merged;
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
            token_utf8_merged: self.utf8_merged,
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
    /// ... whose count is the stream's plus tokens held back inside multi-byte characters.
    #[serde(default)]
    pub token_utf8_merged: u32,
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
    fn tokens_held_inside_multibyte_characters_are_placed_at_their_events() {
        // 10 events; the server counted 13 (length): events 2 and 6 held multi-byte text with
        // room for 1 and 4 hidden tokens.
        let mut r = done(1, 0, 10, 10, 10);
        r.done_reason = "length".into();
        r.output_tokens = 13;
        let room = [(2, 1), (6, 4)];
        place_server_tokens(&mut r, &room);
        assert_eq!(r.utf8_merged_tokens, 3);
        assert_eq!(r.counted_tokens, 10, "the stream's own count is kept");
        let per_event: Vec<u32> = r.timeline.iter().map(|c| c.tokens).collect();
        assert_eq!(per_event, [1, 1, 2, 1, 1, 1, 3, 1, 1, 1]);
        assert_eq!(token_agreement(&r), TokenAgreement::Utf8Merged);
        let mut t = ServerTally::default();
        t.add(&r);
        let a = t.account().unwrap();
        assert_eq!((a.token_utf8_merged, a.token_mismatch), (1, 0));

        // On a stop the end token is one of the shortfall, not a held token.
        let mut stop = done(2, 0, 10, 10, 10);
        stop.output_tokens = 12;
        place_server_tokens(&mut stop, &[(0, 1)]);
        assert_eq!(stop.utf8_merged_tokens, 1);
        assert_eq!(stop.timeline[0].tokens, 2);
        assert_eq!(token_agreement(&stop), TokenAgreement::Utf8Merged);

        // More missing than the multi-byte text can hide (packed or lost events): spread evenly
        // over the events after the first, still a mismatch.
        let mut lost = done(3, 0, 10, 10, 10);
        lost.done_reason = "length".into();
        lost.output_tokens = 16;
        place_server_tokens(&mut lost, &room);
        assert_eq!(lost.utf8_merged_tokens, 0);
        let per_event: Vec<u32> = lost.timeline.iter().map(|c| c.tokens).collect();
        assert_eq!(per_event, [1, 2, 2, 2, 2, 2, 2, 1, 1, 1]);
        assert_eq!(token_agreement(&lost), TokenAgreement::Mismatch);
        assert_eq!(
            lost.itl_s().count(),
            15,
            "one ITL sample per token after the first"
        );

        // A server that packs 4 tokens an event: ITL is per token, a quarter of each gap.
        let mut packed = done(4, 0, 10, 5, 40);
        packed.done_reason = "length".into();
        packed.output_tokens = 17;
        place_server_tokens(&mut packed, &[]);
        assert!(packed.timeline[1..].iter().all(|c| c.tokens == 4));
        assert!(packed.itl_s().all(|g| (g - 0.010).abs() < 1e-12));
        let mut t = ServerTally::default();
        t.add(&packed);
        assert_eq!(t.account().unwrap().tokens_per_chunk, Some(17.0 / 5.0));

        // The end token of a stop is not counted as packed into an event.
        let mut ended = done(6, 0, 10, 9, 10);
        ended.output_tokens = 10;
        let mut t = ServerTally::default();
        t.add(&ended);
        assert_eq!(t.account().unwrap().tokens_per_chunk, Some(1.0));

        // A client-counted record is never touched.
        let mut counted = done(5, 0, 10, 10, 10);
        counted.token_source = TokenSource::Counted;
        counted.output_tokens = 12;
        place_server_tokens(&mut counted, &room);
        assert_eq!(counted.utf8_merged_tokens, 0);
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
        // The mismatch ends on a stop: its end token is not counted as packed into an event.
        assert!((x.tokens_per_chunk.unwrap() - 69.0 / 60.0).abs() < 1e-9);
        assert_eq!(ServerTally::default().account(), None);
    }
}
