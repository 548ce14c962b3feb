//! Conversations: a unit of load that sends turn 1, waits for its answer and a think time, then
//! sends turn 2 with the whole history and the answer it got, and so on for the plan's turns.
//! Turn 1's body is the prepared one; a later turn's body holds what the server answered, so it
//! is built when that answer has come (the only body built during a cycle).

use super::{Selected, Shared};
use crate::backend;
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokengun_common::schedule::{SplitMix64, prompt_index};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Follow-up turns for prompts that have no later turns of their own.
const FOLLOW_UPS: &[&str] = &[
    "Can you say more about that?",
    "Give an example.",
    "Summarise that in one sentence.",
    "What is the strongest objection to it?",
];

/// The think time before the next turn: fixed, or exponential around the plan's (seeded).
fn think(s: &Shared, rng: &mut SplitMix64) -> Duration {
    let w = &s.plan.workload;
    if w.think_exponential {
        let u = rng.next_f64().max(f64::MIN_POSITIVE);
        w.think_time.mul_f64((-u.ln()).min(20.0))
    } else {
        w.think_time
    }
}

/// Runs one conversation whose first turn is meant to start at `start`; returns when its last
/// turn ended (or the one that failed: a failed turn ends the conversation).
pub(super) async fn converse(s: &Shared, start: Instant, cap: Option<&Semaphore>) -> Instant {
    let conversation = s.counters.conversations.fetch_add(1, Ordering::Relaxed) + 1;
    let turns = s.plan.workload.turns;
    let prompt = prompt_index(s.plan.seed, conversation, s.bodies.len());
    let base = &s.plan.prompts[prompt];
    let mut history = backend::chat_messages(base);
    let mut text = base.text.clone();
    let mut rng = SplitMix64::new(s.plan.seed ^ u64::from(conversation).rotate_left(32));
    let mut body = s.bodies[prompt].clone();
    let mut intended = start;
    let mut ended = start;
    for turn in 1..=turns {
        let id = s.next_request_id();
        let sel = Selected {
            prompt,
            body,
            conversation,
            turn,
            keep_answer: turn < turns,
        };
        let fired = s.fire(id, intended, cap, sel).await;
        ended = fired.ended;
        if fired.failed || turn == turns {
            break;
        }
        let next = base.later_turns.get(turn as usize - 1).map_or_else(
            || FOLLOW_UPS[(turn as usize - 1) % FOLLOW_UPS.len()].to_string(),
            String::clone,
        );
        if let Value::Array(m) = &mut history {
            m.push(json!({"role": "assistant", "content": fired.answer}));
            m.push(json!({"role": "user", "content": next}));
        }
        text = format!("{text}\n\n{}\n\n{next}", fired.answer);
        let spec = tokengun_common::PromptSpec {
            text: text.clone(),
            messages_json: history.to_string(),
            ..base.clone()
        };
        body = match backend::request_body(&s.plan, &spec) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!(
                    "conversation {conversation}: cannot build turn {}: {e}",
                    turn + 1
                );
                break;
            }
        };
        // The next turn is meant to start a think time after this answer ended.
        intended = ended + think(s, &mut rng);
        tokio::select! {
            () = tokio::time::sleep_until(intended) => {}
            () = s.drain.cancelled() => {
                s.cut_short.store(true, Ordering::Relaxed);
                break;
            }
        }
    }
    ended
}
