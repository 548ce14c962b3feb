//! Each level's `request_summary.csv`: its requests' spans (the timeline and queueing), the
//! slowest tenth's decode rate, and how many streamed at once.

use super::{LevelRow, RequestSpan, TargetRow};
use crate::report::ReportError;
use std::path::Path;
use tokengun_common::run_dir::{self, REQUEST_SUMMARY_CSV, RequestRow};

/// Adds every level's requests; levels whose folder is missing are named in a note.
pub(super) fn add(
    dir: &Path,
    family: Option<&str>,
    model: &str,
    levels: &mut [LevelRow],
    notes: &mut Vec<String>,
) -> Result<(), ReportError> {
    let mut missing = Vec::new();
    for level in levels {
        // A run of several models keeps each level under its own model's folder.
        let model = if level.model.is_empty() {
            model
        } else {
            level.cycle.model.as_str()
        };
        match run_dir::find_level_dir(dir, family, model, &level.group, &level.label) {
            Some(ld) => {
                if let Some(rows) = run_dir::read_request_summary(&ld)? {
                    add_level(level, &rows);
                }
            }
            None => missing.push(level.label.clone()),
        }
    }
    if !missing.is_empty() {
        notes.push(format!(
            "no {REQUEST_SUMMARY_CSV} for level(s) {}: their per-request figures are left out",
            missing.join(", ")
        ));
    }
    Ok(())
}

/// Each server instance's part of a level, in order of first appearance; empty when its
/// requests all went to one (or the file predates the Target column).
pub fn per_target(rows: &[RequestRow]) -> Vec<TargetRow> {
    let mut out: Vec<(TargetRow, Vec<f64>)> = Vec::new();
    for r in rows.iter().filter(|r| !r.target.is_empty()) {
        let k = match out.iter().position(|(t, _)| t.target == r.target) {
            Some(k) => k,
            None => {
                out.push((
                    TargetRow {
                        target: r.target.clone(),
                        requests: 0,
                        failed: 0,
                        output_tokens: 0,
                        ttft_p50_s: None,
                    },
                    Vec::new(),
                ));
                out.len() - 1
            }
        };
        let (t, ttfts) = &mut out[k];
        t.requests += 1;
        if r.completed {
            t.output_tokens += r.output_tokens;
            ttfts.extend(r.ttft_s);
        } else {
            t.failed += 1;
        }
    }
    if out.len() < 2 {
        return Vec::new();
    }
    out.into_iter()
        .map(|(mut t, mut v)| {
            v.sort_by(f64::total_cmp);
            t.ttft_p50_s = (!v.is_empty()).then(|| v[(v.len() - 1) / 2]);
            t
        })
        .collect()
}

fn add_level(level: &mut LevelRow, rows: &[RequestRow]) {
    level.per_target = per_target(rows);
    let mut rates: Vec<f64> = rows
        .iter()
        .filter(|r| r.completed)
        .filter_map(|r| r.tokens_per_s)
        .collect();
    level.spans = rows.iter().filter_map(span).collect();
    level.prompt = crate::report::workload::PromptFigures::from_rows(rows);
    // By intended start, then by first token: a burst's queue shows as a staircase.
    level.spans.sort_by(|a, b| {
        a.intended_s
            .total_cmp(&b.intended_s)
            .then(
                a.first_token_s
                    .unwrap_or(a.end_s)
                    .total_cmp(&b.first_token_s.unwrap_or(b.end_s)),
            )
            .then(a.request_id.cmp(&b.request_id))
    });
    if !rates.is_empty() {
        rates.sort_by(f64::total_cmp);
        // Nearest rank: the value below which a tenth of the requests fall.
        let idx = ((rates.len() as f64 * 0.1).ceil() as usize).clamp(1, rates.len()) - 1;
        level.request_tokens_per_s_p10 = Some(rates[idx]);
        if level.cycle.mean_request_tokens_per_s.is_none() {
            level.cycle.mean_request_tokens_per_s =
                Some(rates.iter().sum::<f64>() / rates.len() as f64);
        }
    }
    level.max_streaming = max_overlap(
        level
            .spans
            .iter()
            .filter_map(|s| s.first_token_s.map(|f| (f, s.end_s))),
    );
}

/// A request's span, when it has its intended start and end.
fn span(r: &RequestRow) -> Option<RequestSpan> {
    let (intended_s, end_s) = (r.intended_start_s?, r.end_s?);
    Some(RequestSpan {
        request_id: r.request_id,
        intended_s,
        sent_s: r.sent_s.unwrap_or(intended_s),
        first_token_s: r.first_token_s,
        end_s,
        completed: r.completed,
    })
}

/// Most intervals open at once (an end at the same instant as a start does not overlap it).
pub fn max_overlap(intervals: impl Iterator<Item = (f64, f64)>) -> Option<u32> {
    let mut events: Vec<(f64, i32)> = Vec::new();
    for (a, b) in intervals {
        events.push((a, 1));
        events.push((b.max(a), -1));
    }
    if events.is_empty() {
        return None;
    }
    // Ends sort before starts at the same instant.
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut open, mut most) = (0i32, 0i32);
    for (_, d) in events {
        open += d;
        most = most.max(open);
    }
    u32::try_from(most).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_counts_streams_at_once() {
        let v = [(0.0, 1.0), (0.5, 2.0), (1.0, 3.0), (2.5, 4.0)];
        assert_eq!(max_overlap(v.into_iter()), Some(2));
        assert_eq!(max_overlap(std::iter::empty()), None);
    }

    #[test]
    fn the_slowest_tenth_and_the_mean_come_from_completed_requests() {
        let row = |id: u64, completed: bool, rate: f64, first: f64| RequestRow {
            request_id: id,
            completed,
            tokens_per_s: Some(rate),
            intended_start_s: Some(0.0),
            sent_s: None,
            first_token_s: Some(first),
            end_s: Some(first + 1.0),
            target: String::new(),
            ttft_s: Some(first),
            output_tokens: 10,
            ..RequestRow::default()
        };
        let rows: Vec<RequestRow> = (0..10)
            .map(|i| row(i, true, 10.0 + i as f64, 0.1 * i as f64))
            .chain([row(10, false, 1.0, 5.0)])
            .collect();
        let mut level = LevelRow::default();
        add_level(&mut level, &rows);
        assert_eq!(level.request_tokens_per_s_p10, Some(10.0));
        assert_eq!(level.mean_request_tokens_per_s, Some(14.5));
        assert_eq!(level.max_streaming, Some(10));
        assert_eq!(level.spans.len(), 11);
        assert_eq!(level.spans[0].sent_s, 0.0, "sent defaults to intended");
    }
}
