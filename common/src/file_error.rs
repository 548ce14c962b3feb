//! A file that could not be read or written, named: the one error type for it, which the
//! errors of the record file, the certificates and others wrap.

use std::path::{Path, PathBuf};

/// A file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FileError {
    /// For `map_err`: writing `path` failed.
    pub fn write(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Write {
            path: path.to_path_buf(),
            source,
        }
    }

    /// For `map_err`: reading `path` failed.
    pub fn read(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Read {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_file_and_the_cause() {
        let p = Path::new("/runs/x/records.pb");
        let e = Err::<(), _>(std::io::Error::other("disk full")).map_err(FileError::write(p));
        assert_eq!(
            e.unwrap_err().to_string(),
            "cannot write /runs/x/records.pb: disk full"
        );
        let e = FileError::read(p)(std::io::Error::other("gone"));
        assert_eq!(e.to_string(), "cannot read /runs/x/records.pb: gone");
    }
}
