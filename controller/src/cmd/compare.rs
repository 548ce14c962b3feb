//! `tokengun compare`: several runs' curves overlaid and their findings side by side.

use super::FindingArgs;
use crate::report;
use crate::sinks::console;
use clap::Args;
use std::path::PathBuf;

/// `tokengun compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Two or more run folders.
    #[arg(value_name = "RUN_DIR", num_args = 2.., required = true)]
    pub run_dirs: Vec<PathBuf>,
    /// A label per run, in order (repeat the flag) [default: each run's model, with its run id
    /// when two share a model].
    #[arg(long = "label", value_name = "TEXT")]
    pub labels: Vec<String>,
    /// Folder to write compare.md, compare.html and charts/ into [default: a new
    /// results/compare-<time> folder].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub findings: FindingArgs,
}

/// Writes the comparison of the run folders.
pub fn exec(args: &CompareArgs) -> u8 {
    let opts = args.findings.options(None);
    let out = match args.out.clone() {
        Some(o) => o,
        None => match new_compare_dir() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        },
    };
    match report::compare(&args.run_dirs, &args.labels, &out, &opts) {
        Ok(w) => {
            console::write_stdout(&format!(
                "compare: {}\n         {}\ncharts: {} in {}\n",
                w.markdown.display(),
                w.html.display(),
                w.charts.len(),
                out.join("charts").display()
            ));
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            if matches!(e, report::ReportError::LabelCount { .. }) {
                2
            } else {
                1
            }
        }
    }
}

/// `results/compare-<time>`, a new folder (suffixed when taken).
fn new_compare_dir() -> Result<std::path::PathBuf, String> {
    let base = format!(
        "compare-{}",
        crate::sinks::run_folder::default_run_id(std::time::SystemTime::now())
    );
    let results = std::path::Path::new("results");
    std::fs::create_dir_all(results)
        .map_err(|e| format!("cannot create results/: {e}; pass --out with a writable folder"))?;
    for n in 1..1000 {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let dir = results.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(format!(
                    "cannot create {}: {e}; pass --out with a writable folder",
                    dir.display()
                ));
            }
        }
    }
    Err("too many compare folders for this second; pass --out".into())
}
