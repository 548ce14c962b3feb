//! `tokengun report`: report.md, report.html and charts/ for a run folder; the findings'
//! thresholds shared with `compare`.

use crate::report;
use crate::sinks::console;
use clap::Args;
use std::path::PathBuf;

/// Thresholds of the report's findings, shared by `report` and `compare`.
#[derive(Args, Debug, Clone)]
pub struct FindingArgs {
    /// A level qualifies as "best" only with at most this error rate, percent [default: 1].
    #[arg(long, value_name = "PERCENT", default_value_t = 1.0, value_parser = percent_arg)]
    pub max_error_rate: f64,
    /// ...and with at least this share of its requests meeting the run's SLO, percent [default: 95].
    #[arg(long, value_name = "PERCENT", default_value_t = 95.0, value_parser = percent_arg)]
    pub min_goodput: f64,
    /// The knee: the last level before a step whose gain per unit of concurrency (or rate) is
    /// below this share of the first level's tokens/s per unit, percent [default: 25].
    #[arg(long, value_name = "PERCENT", default_value_t = 25.0, value_parser = percent_arg)]
    pub knee_slope: f64,
    /// Throughputs within this much of the highest count as a tie for "best" (the lower level
    /// wins), percent [default: 5].
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0, value_parser = percent_arg)]
    pub best_tolerance: f64,
}

impl FindingArgs {
    /// The report options these flags describe.
    pub fn options(&self, timeline_level: Option<String>) -> report::ReportOptions {
        report::ReportOptions {
            findings: report::findings::FindingOptions {
                max_error_rate: self.max_error_rate / 100.0,
                min_good_share: self.min_goodput / 100.0,
                knee_fraction: self.knee_slope / 100.0,
                best_tolerance: self.best_tolerance / 100.0,
            },
            timeline_level,
        }
    }
}

fn percent_arg(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100")),
    }
}

/// `tokengun report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run folder (the one `tokengun run` printed after "results:").
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// Folder to write report.md, report.html and charts/ into [default: the run folder].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Level whose requests the timeline chart shows, e.g. 8 or 2.5rps [default: the first
    /// level past the knee, else the last].
    #[arg(long, value_name = "LEVEL")]
    pub timeline_level: Option<String>,
    #[command(flatten)]
    pub findings: FindingArgs,
}

/// Writes the run folder's report.
pub fn exec(args: &ReportArgs) -> u8 {
    let opts = args.findings.options(args.timeline_level.clone());
    match report::report(&args.run_dir, args.out.as_deref(), &opts) {
        Ok(w) => {
            console::write_stdout(&format!(
                "report: {}\n        {}\ncharts: {} in {}\n",
                w.markdown.display(),
                w.html.display(),
                w.charts.len(),
                w.markdown.with_file_name("charts").display()
            ));
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
