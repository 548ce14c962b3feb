//! `cycles.csv`: the sweep's levels, one per row, with the x each is charted at.

use super::LevelRow;
use crate::report::ReportError;
use std::path::Path;
use tokengun_common::CycleSummary;
use tokengun_common::run_dir::{self, CYCLES_CSV};

/// The rows of cycles.csv; a folder without one is not a run.
pub(super) fn read(dir: &Path) -> Result<Vec<CycleSummary>, ReportError> {
    if !dir.join(CYCLES_CSV).is_file() {
        return Err(ReportError::NotARun {
            dir: dir.to_path_buf(),
            why: format!("it has no {CYCLES_CSV}"),
        });
    }
    Ok(run_dir::read_cycles(dir)?)
}

/// The level's x: its rate for open loops, else its concurrency; the label's number when the
/// row lacks it (older files).
fn x_of(c: &CycleSummary, rate_sweep: bool) -> Option<f64> {
    let x = if rate_sweep {
        c.rate_per_s
            .or_else(|| super::label_key(&c.level).parse().ok())
    } else {
        Some(f64::from(c.concurrency))
            .filter(|x| *x > 0.0)
            .or_else(|| c.level.parse().ok())
    };
    x.filter(|x| *x > 0.0)
}

/// One level per row that has a usable x; the others are left out with a note.
pub(super) fn levels(
    cycles: Vec<CycleSummary>,
    rate_sweep: bool,
    notes: &mut Vec<String>,
) -> Vec<LevelRow> {
    let mut levels = Vec::new();
    for cycle in cycles {
        let Some(x) = x_of(&cycle, rate_sweep) else {
            notes.push(format!(
                "{CYCLES_CSV} level {:?} has no usable concurrency or rate; left out",
                cycle.level
            ));
            continue;
        };
        levels.push(LevelRow {
            label: cycle.level.clone(),
            x,
            cycle,
            ..LevelRow::default()
        });
    }
    levels
}
