//! Benchmark: the record pipeline's cost per record and per token, on one core.
//!
//! `cargo bench -p tokengun --bench record_pipeline [-- RECORDS TOKENS_PER_RECORD]`
//!
//! Measures, separately and best of 3: the agent's side (domain -> protobuf `ResultBatch` of
//! 64 records, encoded to bytes), the controller's decode (bytes -> protobuf -> domain records),
//! and the controller's per-record work (`CycleStats::add` plus `CycleWriter::record`, the
//! `request_summary.csv` row and the per-request throughput file, written into a temporary
//! folder). Prints records/s and tokens/s of one core. No sockets: the gRPC transport and the
//! HTTP ingest are measured end to end by `scripts/bench-overhead.sh`.

use prost::Message;
use std::hint::black_box;
use std::time::Instant;
use tokengun::sinks::run_folder::RunDir;
use tokengun_common::{Api, CycleStats, OutcomeKind, RequestRecord, Slo, TokenChunk, TokenSource};
use tokengun_common::{Record, RecordBody, ServerTimings};
use tokengun_proto as pb;

const BATCH: usize = 64;

fn record(id: u32, tokens: u32) -> RequestRecord {
    let start_ns = u64::from(id) * 1_000_000;
    let first_ns = start_ns + 20_000_000;
    let timeline: Vec<TokenChunk> = (0..tokens)
        .map(|i| TokenChunk {
            offset_ns: first_ns + u64::from(i) * 9_876_543 + u64::from(i % 7) * 1_111,
            tokens: 1,
        })
        .collect();
    let last_ns = timeline.last().map_or(first_ns, |c| c.offset_ns);
    RequestRecord {
        cycle_id: 1,
        request_id: id,
        prompt_index: id % 5,
        workload: Default::default(),
        target_index: 0,
        intended_start_ns: start_ns,
        dispatched_ns: start_ns + 3_000,
        sent_ns: start_ns + 9_000,
        first_byte_ns: Some(start_ns + 15_000_000),
        first_token_ns: Some(first_ns),
        first_answer_ns: Some(first_ns),
        last_token_ns: Some(last_ns),
        end_ns: last_ns + 50_000,
        status_code: Some(200),
        outcome: OutcomeKind::Completed,
        error: String::new(),
        output_tokens: u64::from(tokens),
        token_source: TokenSource::Server,
        counted_tokens: u64::from(tokens),
        utf8_merged_tokens: 0,
        reasoning_tokens: 0,
        prompt_tokens: Some(26),
        server: ServerTimings {
            total_ns: Some(last_ns - start_ns),
            load_ns: Some(1_000_000),
            prompt_eval_ns: Some(14_000_000),
            eval_ns: Some(last_ns - first_ns),
            ..Default::default()
        },
        done_reason: "stop".into(),
        timeline,
    }
}

fn best_of_3(mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t0 = Instant::now();
        f();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    best
}

fn report(name: &str, secs: f64, records: usize, tokens: u64) {
    println!(
        "{name}: {:>9.0} records/s, {:>6.2} M tokens/s ({} records x {} tokens, best of 3, {:.3} s)",
        records as f64 / secs,
        tokens as f64 / secs / 1e6,
        records,
        tokens / records as u64,
        secs
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; take the numbers among the arguments.
    let nums: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n_records = nums.first().copied().unwrap_or(2_000);
    let per_record = u32::try_from(nums.get(1).copied().unwrap_or(1_000))?;
    let records: Vec<RequestRecord> = (1..=u32::try_from(n_records)?)
        .map(|i| record(i, per_record))
        .collect();
    let tokens: u64 = records.iter().map(|r| r.output_tokens).sum();

    // Agent side: domain records -> wire batches -> bytes.
    let wrapped: Vec<Record> = records
        .iter()
        .zip(1u64..)
        .map(|(r, seq)| Record {
            seq,
            body: RecordBody::Request(Box::new(r.clone())),
        })
        .collect();
    let mut encoded: Vec<Vec<u8>> = Vec::new();
    let secs = best_of_3(|| {
        encoded.clear();
        for chunk in wrapped.chunks(BATCH) {
            let batch = pb::ResultBatch {
                records: chunk.iter().map(pb::Record::from).collect(),
            };
            encoded.push(black_box(batch.encode_to_vec()));
        }
    });
    let wire_bytes: usize = encoded.iter().map(Vec::len).sum();
    report("encode (agent)      ", secs, n_records, tokens);
    println!(
        "  wire size: {:.1} bytes/token",
        wire_bytes as f64 / tokens as f64
    );

    // Controller side: bytes -> wire batches -> domain records.
    let mut decoded = 0usize;
    let secs = best_of_3(|| {
        decoded = 0;
        for bytes in &encoded {
            let batch = pb::ResultBatch::decode(bytes.as_slice()).expect("decodes");
            for r in batch.records {
                let r = Record::try_from(r).expect("converts");
                decoded += usize::from(matches!(r.body, RecordBody::Request(_)));
                black_box(r);
            }
        }
    });
    assert_eq!(decoded, n_records);
    report("decode (controller) ", secs, n_records, tokens);

    // Controller side: statistics only.
    let slo = Slo::default();
    let secs = best_of_3(|| {
        let mut stats = CycleStats::default();
        for r in &records {
            stats.add(r, &slo);
        }
        black_box(stats);
    });
    report("CycleStats::add     ", secs, n_records, tokens);

    // Controller side: the level's files (summary row + throughput file per request).
    let tmp = tempfile::tempdir()?;
    let mut secs = f64::INFINITY;
    for run_n in 1..=3 {
        let run = RunDir::create(tmp.path(), &format!("bench-{run_n}"), false)?;
        let t0 = Instant::now();
        let mut w = run.begin_cycle(&tokengun::sinks::run_folder::LevelAt {
            api: Api::OllamaGenerate,
            model: "bench",
            group: "",
            level: "1",
            agent: None,
            targets: &[],
        })?;
        w.set_origin(1_795_804_970_000_000_000);
        for r in &records {
            w.record(r)?;
        }
        w.flush()?;
        secs = secs.min(t0.elapsed().as_secs_f64());
        // ~70 bytes a token on disk: keep one copy at a time (removal is not timed).
        std::fs::remove_dir_all(run.root())?;
    }
    report("files (controller)  ", secs, n_records, tokens);
    Ok(())
}
