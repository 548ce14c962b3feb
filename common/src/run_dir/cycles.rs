//! `cycles.csv`: one row per finished level. Each column is defined once, in [`HEAD`],
//! [`LATENCIES`] x [`STATS`], [`TAIL`] and `cycles_server`'s columns, with how a [`CycleSummary`] writes it and how a cell
//! reads back into one: the header, the writer and the reader all come from those lists.
//!
//! Reading back is lossy where the file is: `agents` holds only their count, energy only the
//! totals (no per-device figures), server usage only CPU and memory.

use super::csv_file::{CsvTable, csv_err, io_err, num, writer};
use super::cycles_server::{GROUP, SERVER_ACCOUNT};
use super::{CYCLES_CSV, OutputError, ReadError};
use crate::monitor::{CycleEnergy, EnergyMethod, ServerUsage};
use crate::stats::{CycleSummary, Percentiles, Slo};
use serde::Deserialize;
use std::borrow::Cow;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// One column: its name, how a summary writes it, how a non-empty cell sets it back.
pub(super) struct Column {
    pub(super) name: &'static str,
    pub(super) write: fn(&CycleSummary) -> String,
    pub(super) read: fn(&mut CycleSummary, &str),
}

/// A latency distribution, written as one column per statistic: `<name>_<stat>_s`.
struct Latency {
    name: &'static str,
    get: fn(&CycleSummary) -> &Percentiles,
    get_mut: fn(&mut CycleSummary) -> &mut Percentiles,
}

/// One statistic of a latency distribution.
struct Stat {
    name: &'static str,
    get: fn(&Percentiles) -> Option<f64>,
    get_mut: fn(&mut Percentiles) -> &mut Option<f64>,
}

/// `v` with `digits` decimals, empty when `None`.
pub(super) fn fixed(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_default()
}

/// A count cell (rounded, never negative).
pub(super) fn count(v: &str) -> Option<u32> {
    num(v).map(|x| x.max(0.0).round() as u32)
}

/// A cell of whole units (truncated, never negative).
pub(super) fn whole(v: &str) -> Option<u64> {
    num(v).map(|x| x.max(0.0) as u64)
}

/// Sets an energy figure: they exist once the row's `mean_power_w` was read (it comes first).
fn set_energy(s: &mut CycleSummary, set: impl FnOnce(&mut CycleEnergy)) {
    if let Some(e) = s.energy.as_mut() {
        set(e);
    }
}

/// An `energy_method` cell, by the method's serde name.
fn energy_method(v: &str) -> Option<EnergyMethod> {
    EnergyMethod::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(v))
        .ok()
}

fn server(s: &mut CycleSummary) -> &mut ServerUsage {
    s.server.get_or_insert_with(ServerUsage::default)
}

/// The columns before the latencies, in file order.
const HEAD: &[Column] = &[
    Column {
        name: "model",
        write: |s| s.model.clone(),
        read: |s, v| s.model = v.into(),
    },
    Column {
        name: "shape",
        write: |s| s.shape.clone(),
        read: |s, v| s.shape = v.into(),
    },
    Column {
        name: "level",
        write: |s| s.level.clone(),
        read: |s, v| s.level = v.into(),
    },
    Column {
        name: "concurrency",
        write: |s| s.concurrency.to_string(),
        read: |s, v| s.concurrency = count(v).unwrap_or(0),
    },
    Column {
        name: "rate_per_s",
        write: |s| fixed(s.rate_per_s, 3),
        read: |s, v| s.rate_per_s = num(v),
    },
    Column {
        name: "requests",
        write: |s| s.requests.to_string(),
        read: |s, v| s.requests = count(v).unwrap_or(0),
    },
    Column {
        name: "completed",
        write: |s| s.completed.to_string(),
        read: |s, v| s.completed = count(v).unwrap_or(0),
    },
    Column {
        name: "failed",
        write: |s| s.failed.to_string(),
        read: |s, v| s.failed = count(v).unwrap_or(0),
    },
    Column {
        name: "error_rate",
        write: |s| format!("{:.4}", s.error_rate),
        read: |s, v| s.error_rate = num(v).unwrap_or(0.0),
    },
    Column {
        name: "duration_s",
        write: |s| format!("{:.6}", s.duration_s),
        read: |s, v| s.duration_s = num(v).unwrap_or(0.0),
    },
    Column {
        name: "output_tokens",
        write: |s| s.output_tokens.to_string(),
        read: |s, v| s.output_tokens = whole(v).unwrap_or(0),
    },
    Column {
        name: "prompt_tokens",
        write: |s| s.prompt_tokens.to_string(),
        read: |s, v| s.prompt_tokens = whole(v).unwrap_or(0),
    },
    Column {
        name: "aggregate_tokens_per_s",
        write: |s| format!("{:.3}", s.aggregate_tokens_per_s),
        read: |s, v| s.aggregate_tokens_per_s = num(v).unwrap_or(0.0),
    },
    Column {
        name: "total_tokens_per_s",
        write: |s| format!("{:.3}", s.total_tokens_per_s),
        read: |s, v| s.total_tokens_per_s = num(v).unwrap_or(0.0),
    },
    Column {
        name: "requests_per_s",
        write: |s| format!("{:.4}", s.requests_per_s),
        read: |s, v| s.requests_per_s = num(v).unwrap_or(0.0),
    },
    Column {
        name: "achieved_rate_per_s",
        write: |s| fixed(s.achieved_rate_per_s, 4),
        read: |s, v| s.achieved_rate_per_s = num(v),
    },
    Column {
        name: "peak_concurrency",
        write: |s| s.peak_concurrency.to_string(),
        read: |s, v| s.peak_concurrency = whole(v).map_or(0, |x| x as u32),
    },
];

/// The latency distributions, in file order.
const LATENCIES: &[Latency] = &[
    Latency {
        name: "ttft",
        get: |s| &s.ttft,
        get_mut: |s| &mut s.ttft,
    },
    Latency {
        name: "ttfa",
        get: |s| &s.ttfa,
        get_mut: |s| &mut s.ttfa,
    },
    Latency {
        name: "itl",
        get: |s| &s.itl,
        get_mut: |s| &mut s.itl,
    },
    Latency {
        name: "tpot",
        get: |s| &s.tpot,
        get_mut: |s| &mut s.tpot,
    },
    Latency {
        name: "e2e",
        get: |s| &s.e2e,
        get_mut: |s| &mut s.e2e,
    },
];

/// The statistics of each latency, in file order.
const STATS: &[Stat] = &[
    Stat {
        name: "mean",
        get: |p| p.mean_s,
        get_mut: |p| &mut p.mean_s,
    },
    Stat {
        name: "p50",
        get: |p| p.p50_s,
        get_mut: |p| &mut p.p50_s,
    },
    Stat {
        name: "p90",
        get: |p| p.p90_s,
        get_mut: |p| &mut p.p90_s,
    },
    Stat {
        name: "p95",
        get: |p| p.p95_s,
        get_mut: |p| &mut p.p95_s,
    },
    Stat {
        name: "p99",
        get: |p| p.p99_s,
        get_mut: |p| &mut p.p99_s,
    },
    Stat {
        name: "max",
        get: |p| p.max_s,
        get_mut: |p| &mut p.max_s,
    },
];

/// The columns after the latencies, in file order.
const TAIL: &[Column] = &[
    Column {
        name: "mean_request_tokens_per_s",
        write: |s| fixed(s.mean_request_tokens_per_s, 3),
        read: |s, v| s.mean_request_tokens_per_s = num(v),
    },
    Column {
        name: "goodput_requests",
        write: |s| s.goodput_requests.to_string(),
        read: |s, v| s.goodput_requests = count(v).unwrap_or(0),
    },
    Column {
        name: "goodput_requests_per_s",
        write: |s| format!("{:.4}", s.goodput_requests_per_s),
        read: |s, v| s.goodput_requests_per_s = num(v).unwrap_or(0.0),
    },
    Column {
        name: "slo_tokens_per_s",
        write: |s| format!("{:.3}", s.slo.tokens_per_s),
        read: |s, v| s.slo.tokens_per_s = num(v).unwrap_or(Slo::default().tokens_per_s),
    },
    Column {
        name: "slo_ttft_s",
        write: |s| fixed(s.slo.ttft_s, 6),
        read: |s, v| s.slo.ttft_s = num(v),
    },
    Column {
        name: "slo_e2e_s",
        write: |s| fixed(s.slo.e2e_s, 6),
        read: |s, v| s.slo.e2e_s = num(v),
    },
    Column {
        name: "send_lag_p99_s",
        write: |s| fixed(s.send_lag_p99_s, 6),
        read: |s, v| s.send_lag_p99_s = num(v),
    },
    Column {
        name: "send_lag_max_s",
        write: |s| fixed(s.send_lag_max_s, 6),
        read: |s, v| s.send_lag_max_s = num(v),
    },
    // Valid unless it says otherwise (older files may lack the column).
    Column {
        name: "schedule_valid",
        write: |s| s.schedule_valid.to_string(),
        read: |s, v| s.schedule_valid = v != "false",
    },
    Column {
        name: "errors_by_kind",
        write: |s| s.errors_by_kind.clone(),
        read: |s, v| s.errors_by_kind = v.into(),
    },
    Column {
        name: "partial",
        write: |s| s.partial.to_string(),
        read: |s, v| s.partial = v == "true",
    },
    Column {
        name: "mean_power_w",
        write: |s| fixed(s.energy.as_ref().map(|e| e.mean_power_w), 3),
        read: |s, v| {
            if let Some(w) = num(v) {
                s.energy = Some(CycleEnergy {
                    mean_power_w: w,
                    peak_power_w: None,
                    energy_j: 0.0,
                    // Until its own column says (it always does when tokengun wrote the row).
                    method: EnergyMethod::Integrated,
                    joules_per_token: None,
                    tokens_per_joule: None,
                    baseline_power_w: None,
                    net_energy_j: None,
                    net_joules_per_token: None,
                    net_tokens_per_joule: None,
                    devices: Vec::new(),
                });
            }
        },
    },
    Column {
        name: "peak_power_w",
        write: |s| fixed(s.energy.as_ref().and_then(|e| e.peak_power_w), 3),
        read: |s, v| set_energy(s, |e| e.peak_power_w = num(v)),
    },
    Column {
        name: "energy_j",
        write: |s| fixed(s.energy.as_ref().map(|e| e.energy_j), 3),
        read: |s, v| set_energy(s, |e| e.energy_j = num(v).unwrap_or(0.0)),
    },
    Column {
        name: "energy_method",
        write: |s| {
            s.energy
                .as_ref()
                .map(|e| e.method.as_str().to_string())
                .unwrap_or_default()
        },
        read: |s, v| {
            if let Some(m) = energy_method(v) {
                set_energy(s, |e| e.method = m);
            }
        },
    },
    Column {
        name: "joules_per_token",
        write: |s| fixed(s.energy.as_ref().and_then(|e| e.joules_per_token), 6),
        read: |s, v| set_energy(s, |e| e.joules_per_token = num(v)),
    },
    Column {
        name: "tokens_per_joule",
        write: |s| fixed(s.energy.as_ref().and_then(|e| e.tokens_per_joule), 6),
        read: |s, v| set_energy(s, |e| e.tokens_per_joule = num(v)),
    },
    Column {
        name: "baseline_power_w",
        write: |s| fixed(s.energy.as_ref().and_then(|e| e.baseline_power_w), 3),
        read: |s, v| set_energy(s, |e| e.baseline_power_w = num(v)),
    },
    Column {
        name: "net_energy_j",
        write: |s| fixed(s.energy.as_ref().and_then(|e| e.net_energy_j), 3),
        read: |s, v| set_energy(s, |e| e.net_energy_j = num(v)),
    },
    Column {
        name: "net_joules_per_token",
        write: |s| fixed(s.energy.as_ref().and_then(|e| e.net_joules_per_token), 6),
        read: |s, v| set_energy(s, |e| e.net_joules_per_token = num(v)),
    },
    Column {
        name: "net_tokens_per_joule",
        write: |s| fixed(s.energy.as_ref().and_then(|e| e.net_tokens_per_joule), 6),
        read: |s, v| set_energy(s, |e| e.net_tokens_per_joule = num(v)),
    },
    Column {
        name: "server_cpu_pct_mean",
        write: |s| fixed(s.server.as_ref().and_then(|u| u.cpu_pct_mean), 1),
        read: |s, v| server(s).cpu_pct_mean = num(v),
    },
    Column {
        name: "server_cpu_pct_peak",
        write: |s| fixed(s.server.as_ref().and_then(|u| u.cpu_pct_peak), 1),
        read: |s, v| server(s).cpu_pct_peak = num(v),
    },
    Column {
        name: "server_rss_peak_bytes",
        write: |s| {
            s.server
                .as_ref()
                .and_then(|u| u.rss_peak_bytes)
                .map(|b| b.to_string())
                .unwrap_or_default()
        },
        read: |s, v| server(s).rss_peak_bytes = whole(v),
    },
    Column {
        name: "gpu_busy_pct_mean",
        write: |s| fixed(s.gpu_busy_pct_mean, 1),
        read: |s, v| s.gpu_busy_pct_mean = num(v),
    },
    Column {
        name: "gpu_freq_mhz_mean",
        write: |s| fixed(s.gpu_freq_mhz_mean, 1),
        read: |s, v| s.gpu_freq_mhz_mean = num(v),
    },
    // Their count only: each agent's part is in run.json.
    Column {
        name: "agents",
        write: |s| s.agents.len().max(1).to_string(),
        read: |_, _| {},
    },
    Column {
        name: "start_spread_s",
        write: |s| fixed(s.start_spread_s, 6),
        read: |s, v| s.start_spread_s = num(v),
    },
    Column {
        name: "agent_cpu_s",
        write: |s| fixed(s.agent_cpu_s, 3),
        read: |s, v| s.agent_cpu_s = num(v),
    },
    Column {
        name: "agent_cpu_pct",
        write: |s| fixed(s.agent_cpu_pct, 1),
        read: |s, v| s.agent_cpu_pct = num(v),
    },
    Column {
        name: "loop_delay_p99_ms",
        write: |s| fixed(s.loop_delay_p99_ms, 3),
        read: |s, v| s.loop_delay_p99_ms = num(v),
    },
    Column {
        name: "loop_delay_max_ms",
        write: |s| fixed(s.loop_delay_max_ms, 3),
        read: |s, v| s.loop_delay_max_ms = num(v),
    },
    Column {
        name: "self_check",
        write: |s| s.self_check.clone(),
        read: |s, v| s.self_check = v.into(),
    },
];

/// Columns every cycles.csv has had: without them a file is some other CSV.
pub const REQUIRED: [&str; 3] = ["level", "requests", "aggregate_tokens_per_s"];

/// One column of the file, in order.
enum Col {
    Plain(&'static Column),
    Latency(&'static Latency, &'static Stat),
}

impl Col {
    fn name(&self) -> Cow<'static, str> {
        match self {
            Col::Plain(c) => Cow::Borrowed(c.name),
            Col::Latency(l, st) => Cow::Owned(format!("{}_{}_s", l.name, st.name)),
        }
    }

    fn write(&self, s: &CycleSummary) -> String {
        match self {
            Col::Plain(c) => (c.write)(s),
            Col::Latency(l, st) => fixed((st.get)((l.get)(s)), 6),
        }
    }

    fn read(&self, s: &mut CycleSummary, v: &str) {
        match self {
            Col::Plain(c) => (c.read)(s, v),
            Col::Latency(l, st) => *(st.get_mut)((l.get_mut)(s)) = num(v),
        }
    }
}

fn columns() -> impl Iterator<Item = Col> {
    HEAD.iter()
        .map(Col::Plain)
        .chain(
            LATENCIES
                .iter()
                .flat_map(|l| STATS.iter().map(move |st| Col::Latency(l, st))),
        )
        .chain(TAIL.iter().map(Col::Plain))
        .chain(SERVER_ACCOUNT.iter().map(Col::Plain))
        .chain(GROUP.iter().map(Col::Plain))
        .chain(RATES.iter().map(Col::Plain))
}

/// Columns about the per-request rates, after the server's account.
const RATES: &[Column] = &[Column {
    name: "unrated_requests",
    write: |s| s.unrated_requests.to_string(),
    read: |s, v| s.unrated_requests = count(v).unwrap_or(0),
}];

/// Columns of `cycles.csv`, in order.
pub fn cycles_header() -> Vec<String> {
    columns().map(|c| c.name().into_owned()).collect()
}

/// One `cycles.csv` row, in [`cycles_header`] order.
pub fn cycles_row(s: &CycleSummary) -> Vec<String> {
    columns().map(|c| c.write(s)).collect()
}

/// A summary with no figures: what a row with none of the columns reads as (zero counts, no
/// latencies, the default SLO, a valid schedule).
pub fn blank_summary() -> CycleSummary {
    let none = Percentiles::default();
    CycleSummary {
        model: String::new(),
        shape: String::new(),
        level: String::new(),
        concurrency: 0,
        rate_per_s: None,
        requests: 0,
        completed: 0,
        failed: 0,
        error_rate: 0.0,
        duration_s: 0.0,
        output_tokens: 0,
        prompt_tokens: 0,
        aggregate_tokens_per_s: 0.0,
        total_tokens_per_s: 0.0,
        requests_per_s: 0.0,
        achieved_rate_per_s: None,
        peak_concurrency: 0,
        ttft: none,
        ttfa: none,
        itl: none,
        tpot: none,
        e2e: none,
        mean_request_tokens_per_s: None,
        unrated_requests: 0,
        goodput_requests: 0,
        goodput_requests_per_s: 0.0,
        slo: Slo::default(),
        send_lag_p99_s: None,
        send_lag_max_s: None,
        schedule_valid: true,
        errors_by_kind: String::new(),
        partial: false,
        energy: None,
        server: None,
        gpu_busy_pct_mean: None,
        gpu_freq_mhz_mean: None,
        start_spread_s: None,
        agents: Vec::new(),
        agent_cpu_s: None,
        agent_cpu_pct: None,
        loop_delay_p99_ms: None,
        loop_delay_max_ms: None,
        self_check: String::new(),
        server_account: None,
        group: String::new(),
        group_label: String::new(),
        setting: String::new(),
        instances: 0,
        targets: Vec::new(),
        cycle_id: 0,
    }
}

/// The cycle id of each row of cycles.csv, given the rows' `cycle_id`s in order: its own, or
/// (0: files from before the column, one group) the study's numbering, row k was cycle k + 2.
pub fn cycle_ids(ids: impl IntoIterator<Item = u32>) -> Vec<u32> {
    ids.into_iter()
        .enumerate()
        .map(|(k, id)| {
            if id > 0 {
                id
            } else {
                u32::try_from(k + 2).unwrap_or(u32::MAX)
            }
        })
        .collect()
}

/// Reads `<run>/cycles.csv` back into the summaries that wrote it, in file order. A column the
/// file lacks (an older tokengun) reads as in [`blank_summary`].
pub fn read_cycles(run: &Path) -> Result<Vec<CycleSummary>, ReadError> {
    let table = CsvTable::read(&run.join(CYCLES_CSV))?;
    table.require(&REQUIRED, CYCLES_CSV)?;
    let cols: Vec<(String, Col)> = columns().map(|c| (c.name().into_owned(), c)).collect();
    Ok(table
        .rows()
        .map(|cells| {
            let mut s = blank_summary();
            for (name, col) in &cols {
                if let Some(v) = cells.get(name) {
                    col.read(&mut s, v);
                }
            }
            s
        })
        .collect())
}

/// `cycles.csv`, appended and flushed after every cycle so an interrupted run keeps its rows.
pub struct CyclesCsv {
    path: PathBuf,
    w: csv::Writer<BufWriter<File>>,
}

impl CyclesCsv {
    /// Creates the file and writes its header.
    pub fn create(path: &Path) -> Result<Self, OutputError> {
        let mut w = writer(path)?;
        w.write_record(cycles_header()).map_err(csv_err(path))?;
        w.flush().map_err(io_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            w,
        })
    }

    /// Opens an existing file to append cycles to it (a resumed run).
    pub fn open_append(path: &Path) -> Result<Self, OutputError> {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            w: csv::Writer::from_writer(BufWriter::new(f)),
        })
    }

    /// Appends one cycle and flushes it to disk.
    pub fn append(&mut self, s: &CycleSummary) -> Result<(), OutputError> {
        self.w
            .write_record(cycles_row(s))
            .map_err(csv_err(&self.path))?;
        self.w.flush().map_err(io_err(&self.path))?;
        self.w
            .get_ref()
            .get_ref()
            .sync_data()
            .map_err(io_err(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RequestRecord;
    use crate::stats::CycleInfo;

    fn record(id: u32, end_ns: u64) -> RequestRecord {
        let mut r = crate::run_dir::requests::tests::record();
        r.request_id = id;
        r.end_ns = end_ns;
        r
    }

    /// A summary with figures in every column the file can hold.
    fn summary() -> CycleSummary {
        let mut s = CycleSummary::from_records(
            &CycleInfo {
                model: "m".into(),
                shape: "open".into(),
                level: "2.5rps".into(),
                concurrency: 0,
                rate_per_s: Some(2.5),
                expected_requests: 2,
                window_ns: Some(3_000_000_000),
            },
            &[record(1, 2_300_000_000), record(2, 2_500_000_000)],
            &Slo {
                tokens_per_s: 5.0,
                ttft_s: Some(1.0),
                e2e_s: None,
            },
            true,
        );
        s.energy = Some(CycleEnergy {
            mean_power_w: 201.5,
            peak_power_w: Some(250.0),
            energy_j: 221.65,
            method: EnergyMethod::Counter,
            joules_per_token: Some(36.9),
            tokens_per_joule: Some(0.027),
            baseline_power_w: Some(50.0),
            net_energy_j: Some(166.6),
            net_joules_per_token: Some(27.7),
            net_tokens_per_joule: Some(0.036),
            devices: Vec::new(),
        });
        s.server = Some(ServerUsage {
            cpu_pct_mean: Some(12.5),
            cpu_pct_peak: Some(40.0),
            rss_peak_bytes: Some(1 << 30),
            threads_peak: None,
            open_fds_peak: None,
        });
        s.gpu_busy_pct_mean = Some(88.0);
        s.start_spread_s = Some(0.002);
        s.agent_cpu_s = Some(0.5);
        s.self_check = "ok".into();
        s.errors_by_kind = "timeout=1".into();
        s.unrated_requests = 1;
        s.server_account = Some(crate::stats::ServerAccount {
            token_checked: 3,
            token_exact: 1,
            token_end_token: 1,
            token_utf8_merged: 1,
            token_mismatch: 0,
            tokens_per_chunk: Some(1.05),
            breakdown_requests: 2,
            queue_s_mean: Some(0.2),
            load_s_mean: Some(0.0),
            prefill_s_mean: Some(0.1),
            decode_s_mean: Some(1.5),
            client_s_mean: Some(0.001),
            model_loads: 1,
            model_load_max_s: Some(4.1),
            cached_tokens: Some(31),
        });
        s.group = "2-instances".into();
        s.cycle_id = 7;
        s.group_label = "m · 2 instances".into();
        s.instances = 2;
        s
    }

    #[test]
    fn rows_match_the_header() {
        assert_eq!(cycles_header().len(), cycles_row(&summary()).len());
        assert_eq!(cycles_header().len(), 17 + 5 * 6 + 33 + 15 + 6 + 1);
        assert_eq!(cycles_header()[17], "ttft_mean_s");
    }

    #[test]
    fn a_row_reads_back_into_the_summary_that_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(CYCLES_CSV);
        let mut w = CyclesCsv::create(&p).unwrap();
        let s = summary();
        w.append(&s).unwrap();
        w.append(&blank_summary()).unwrap();
        let back = read_cycles(dir.path()).unwrap();
        assert_eq!(back.len(), 2);
        // Written again, the row is the same bytes: every column survives the round trip.
        assert_eq!(cycles_row(&back[0]), cycles_row(&s));
        assert_eq!(cycles_row(&back[1]), cycles_row(&blank_summary()));
        assert_eq!(
            back[0].energy.as_ref().unwrap().method,
            EnergyMethod::Counter
        );
        assert!(back[1].energy.is_none() && back[1].server.is_none());
        assert_eq!(back[0].server_account, s.server_account);
        assert_eq!(back[1].server_account, None);
    }

    #[test]
    fn an_old_file_reads_with_its_missing_columns_blank() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CYCLES_CSV),
            "model,level,requests,aggregate_tokens_per_s,ttft_p50_s,partial\nm,4,4,348.5,0.15,false\n",
        )
        .unwrap();
        let c = &read_cycles(dir.path()).unwrap()[0];
        assert_eq!((c.level.as_str(), c.requests), ("4", 4));
        assert_eq!(c.ttft.p50_s, Some(0.15));
        assert!(c.schedule_valid && c.rate_per_s.is_none() && c.energy.is_none());
        std::fs::write(dir.path().join(CYCLES_CSV), "a,b\n1,2\n").unwrap();
        let e = read_cycles(dir.path()).unwrap_err();
        assert!(e.to_string().contains("column \"level\" is missing"), "{e}");
    }
}
