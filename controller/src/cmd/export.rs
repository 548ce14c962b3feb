//! `tokengun export RUN`: every request of `records.pb`, one line each, as JSON Lines or CSV, for
//! people who analyse the data themselves (pandas, DuckDB, a spreadsheet).
//!
//! A line is the request record's own serde form, so a field added to
//! [`RequestRecord`] is exported without touching this file: first the context (`agent`, `level`,
//! `cycle_started_unix_ns`), then every field of the record (offsets in ns from the cycle's
//! origin; `server` nested in JSON, `server_<field>` columns in CSV), then figures derived from
//! them (`*_s`, `tokens_per_s`), and with `--tokens` the token timeline (JSON: `timeline`, a list
//! of `{offset_ns, tokens}`; CSV: `timeline_offset_ns` and `timeline_tokens`, space-separated).

use clap::{Args, ValueEnum};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokengun_common::record::{RecordBody, RequestRecord};
use tokengun_common::run_dir::{RECORDS_PB, ReadError, cycle_ids, read_cycles};
use tokengun_proto::stored::{StoredError, read_all};

use crate::plan::compile::WARMUP_CYCLE_ID;

/// What a line is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// A header, then one row per request.
    Csv,
}

/// `tokengun export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The run folder (holding records.pb).
    pub run_dir: PathBuf,
    /// jsonl (one JSON object a line) or csv.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: Format,
    /// Add each request's token timeline (every chunk's arrival and token count) [default: off].
    #[arg(long)]
    pub tokens: bool,
    /// Write to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0} (is {1} a tokengun run folder?)")]
    Records(StoredError, String),
    #[error(transparent)]
    Cycles(#[from] ReadError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write CSV to {path}: {source}")]
    Csv { path: String, source: csv::Error },
}

/// Writes the export; the exit code.
pub fn exec(args: &ExportArgs) -> u8 {
    match export(args) {
        Ok(n) => {
            if let Some(out) = &args.out {
                eprintln!("{n} request(s) written to {}", out.display());
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Writes every request of the run; how many.
pub fn export(args: &ExportArgs) -> Result<usize, ExportError> {
    let lines = lines(&args.run_dir, args.tokens)?;
    let dest = args
        .out
        .as_ref()
        .map_or_else(|| "stdout".to_string(), |p| p.display().to_string());
    let write_err = |source| ExportError::Write {
        path: dest.clone(),
        source,
    };
    let sink: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(std::fs::File::create(p).map_err(write_err)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut sink = std::io::BufWriter::new(sink);
    match args.format {
        Format::Jsonl => {
            for l in &lines {
                serde_json::to_writer(&mut sink, l)
                    .map_err(|e| write_err(std::io::Error::other(e)))?;
                sink.write_all(b"\n").map_err(write_err)?;
            }
        }
        Format::Csv => write_csv(&mut sink, &lines).map_err(|source| ExportError::Csv {
            path: dest.clone(),
            source,
        })?,
    }
    sink.flush().map_err(write_err)?;
    Ok(lines.len())
}

/// One JSON object per request of `run`, in records.pb order (the order they ended in).
pub fn lines(run: &Path, tokens: bool) -> Result<Vec<Map<String, Value>>, ExportError> {
    let stored = read_all(&run.join(RECORDS_PB))
        .map_err(|e| ExportError::Records(e, run.display().to_string()))?;
    // Each cycles.csv row says its cycle (run_dir::cycle_ids); without the file, no levels.
    let levels: HashMap<u32, String> = match read_cycles(run) {
        Ok(rows) => cycle_ids(rows.iter().map(|c| c.cycle_id))
            .into_iter()
            .zip(rows.into_iter().map(|c| c.level))
            .collect(),
        Err(ReadError::Csv { .. }) => HashMap::new(),
        Err(e) => return Err(e.into()),
    };
    let mut started: HashMap<(String, u32), i64> = HashMap::new();
    let mut out = Vec::new();
    for (agent, rec) in &stored {
        match &rec.body {
            RecordBody::CycleStarted {
                cycle_id,
                started_unix_ns,
                ..
            } => {
                started.insert((agent.clone(), *cycle_id), *started_unix_ns);
            }
            RecordBody::Request(r) => {
                let start = started.get(&(agent.clone(), r.cycle_id)).copied();
                out.push(line(agent, level_of(&levels, r.cycle_id), start, r, tokens));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn level_of(levels: &HashMap<u32, String>, cycle_id: u32) -> Option<String> {
    if cycle_id == WARMUP_CYCLE_ID {
        return Some("warmup".into());
    }
    levels.get(&cycle_id).cloned()
}

/// One request's line: context, the record's fields, derived figures, the timeline if asked.
fn line(
    agent: &str,
    level: Option<String>,
    cycle_started_unix_ns: Option<i64>,
    r: &RequestRecord,
    tokens: bool,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("agent".into(), agent.into());
    m.insert("level".into(), level.into());
    m.insert("cycle_started_unix_ns".into(), cycle_started_unix_ns.into());
    let fields = match serde_json::to_value(r) {
        Ok(Value::Object(f)) => f,
        _ => Map::new(),
    };
    let mut timeline = Value::Null;
    for (k, v) in fields {
        if k == "timeline" {
            timeline = v;
        } else {
            m.insert(k, v);
        }
    }
    let derived = [
        ("ttfb_s", r.ttfb_s()),
        ("waiting_s", r.waiting_s()),
        ("ttft_s", r.ttft_s()),
        ("ttfa_s", r.ttfa_s()),
        ("response_s", r.response_s()),
        ("e2e_s", Some(r.total_s())),
        ("tpot_s", r.tpot_s()),
        ("tokens_per_s", r.tokens_per_s()),
        ("send_lag_s", Some(r.send_lag_s())),
        ("client_queue_s", Some(r.client_queue_s())),
    ];
    for (k, v) in derived {
        m.insert(k.into(), v.into());
    }
    if tokens {
        m.insert("timeline".into(), timeline);
    }
    m
}

/// The CSV form: nested objects become `<outer>_<inner>` columns, the timeline two columns of
/// space-separated numbers; the header is the first line's keys (every line has the same).
fn write_csv(sink: &mut impl Write, lines: &[Map<String, Value>]) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(sink);
    let flat: Vec<Vec<(String, String)>> = lines.iter().map(flatten).collect();
    if let Some(first) = flat.first() {
        w.write_record(first.iter().map(|(k, _)| k))?;
    }
    for row in &flat {
        w.write_record(row.iter().map(|(_, v)| v))?;
    }
    w.flush()?;
    Ok(())
}

/// A line as (column, cell) pairs, in order.
pub fn flatten(line: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in line {
        match v {
            Value::Object(inner) => {
                for (ik, iv) in inner {
                    out.push((format!("{k}_{ik}"), cell(iv)));
                }
            }
            Value::Array(chunks) if k == "timeline" => {
                let list = |field: &str| {
                    chunks
                        .iter()
                        .map(|c| cell(&c[field]))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                out.push(("timeline_offset_ns".into(), list("offset_ns")));
                out.push(("timeline_tokens".into(), list("tokens")));
            }
            _ => out.push((k.clone(), cell(v))),
        }
    }
    out
}

/// A scalar's cell text: empty for null, strings bare, numbers and booleans as JSON writes them.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
