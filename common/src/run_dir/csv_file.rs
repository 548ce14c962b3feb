//! CSV plumbing of the run folder's files: their errors, a buffered writer, atomic writes, and a
//! tolerant reader that finds cells by column name (absent columns and short rows read as empty).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A results file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
}

/// A run folder's file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not readable, or not CSV.
    #[error("cannot read {path}: {message}")]
    Csv { path: PathBuf, message: String },
    /// A column every version of the file has is missing: it is some other file.
    #[error("cannot read {path}: column {column:?} is missing; is this a tokengun {file}?")]
    MissingColumn {
        path: PathBuf,
        column: &'static str,
        file: &'static str,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn csv_err(path: &Path) -> impl FnOnce(csv::Error) -> OutputError + '_ {
    move |source| OutputError::Csv {
        path: path.to_path_buf(),
        source,
    }
}

/// A buffered CSV writer on a new file at `path`.
pub(crate) fn writer(path: &Path) -> Result<csv::Writer<BufWriter<File>>, OutputError> {
    let f = File::create(path).map_err(io_err(path))?;
    Ok(csv::Writer::from_writer(BufWriter::new(f)))
}

/// Writes bytes to `path` through a temporary file and a rename, so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_data().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// A whole CSV file read back, cells found by (trimmed) column name.
pub(crate) struct CsvTable {
    path: PathBuf,
    /// Column name -> index (a repeated name: its last column).
    index: HashMap<String, usize>,
    records: Vec<csv::StringRecord>,
}

impl CsvTable {
    /// Reads `path`; rows may be shorter or longer than the header.
    pub(crate) fn read(path: &Path) -> Result<Self, ReadError> {
        let bad = |e: csv::Error| ReadError::Csv {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut r = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(path)
            .map_err(bad)?;
        let index = r
            .headers()
            .map_err(bad)?
            .iter()
            .enumerate()
            .map(|(i, h)| (h.trim().to_string(), i))
            .collect();
        let records = r.records().collect::<Result<_, _>>().map_err(bad)?;
        Ok(Self {
            path: path.to_path_buf(),
            index,
            records,
        })
    }

    /// Fails unless every one of `columns` is in the header (when the file has rows).
    pub(crate) fn require(
        &self,
        columns: &[&'static str],
        file: &'static str,
    ) -> Result<(), ReadError> {
        match columns.iter().find(|c| !self.index.contains_key(**c)) {
            Some(column) if !self.records.is_empty() => Err(ReadError::MissingColumn {
                path: self.path.clone(),
                column,
                file,
            }),
            _ => Ok(()),
        }
    }

    /// The rows, in file order.
    pub(crate) fn rows(&self) -> impl Iterator<Item = Cells<'_>> {
        self.records.iter().map(|rec| Cells {
            index: &self.index,
            rec,
        })
    }
}

/// One row of a [`CsvTable`].
pub(crate) struct Cells<'a> {
    index: &'a HashMap<String, usize>,
    rec: &'a csv::StringRecord,
}

impl Cells<'_> {
    /// The trimmed cell, `None` when the column is absent, the row short, or the cell empty.
    pub(crate) fn get(&self, col: &str) -> Option<&str> {
        self.index
            .get(col)
            .and_then(|i| self.rec.get(*i))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    /// The cell as text, empty when absent.
    pub(crate) fn text(&self, col: &str) -> String {
        self.get(col).unwrap_or_default().to_string()
    }

    /// The cell as a finite number, `None` when absent or not one.
    pub(crate) fn num(&self, col: &str) -> Option<f64> {
        self.get(col).and_then(num)
    }
}

/// A cell as a finite number.
pub(crate) fn num(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_found_by_name_and_absent_ones_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, " a ,b,c\n1, x ,\n2\n").unwrap();
        let t = CsvTable::read(&p).unwrap();
        let rows: Vec<Cells<'_>> = t.rows().collect();
        assert_eq!(rows[0].num("a"), Some(1.0));
        assert_eq!(rows[0].text("b"), "x");
        assert_eq!(rows[0].get("c"), None);
        assert_eq!(rows[1].get("b"), None, "a short row");
        assert_eq!(rows[1].num("nope"), None);
        assert!(t.require(&["a", "b"], "t.csv").is_ok());
        let e = t.require(&["a", "d"], "t.csv").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("column \"d\" is missing; is this a tokengun t.csv?")
        );
    }
}
