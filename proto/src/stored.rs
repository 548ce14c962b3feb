//! `records.pb`: the run folder's compact record file (length-delimited `StoredRecord`s), written
//! as records arrive and read back by tools and tests.

use crate as pb;
use prost::Message;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use tokengun_common as dom;
use tokengun_common::file_error::FileError;

/// The record file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StoredError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path} is damaged at byte {offset}: {reason}")]
    Damaged {
        path: PathBuf,
        offset: usize,
        reason: String,
    },
}

/// Appends records to a file.
pub struct RecordFile {
    path: PathBuf,
    w: BufWriter<std::fs::File>,
    buf: Vec<u8>,
}

impl RecordFile {
    /// Creates (or truncates) the file.
    pub fn create(path: &Path) -> Result<Self, StoredError> {
        let f = std::fs::File::create(path).map_err(FileError::write(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            w: BufWriter::with_capacity(1 << 20, f),
            buf: Vec::new(),
        })
    }

    /// Opens an existing file to append to (a resumed run); a torn last frame is cut off first.
    pub fn open_append(path: &Path) -> Result<Self, StoredError> {
        let whole = read_all(path)?;
        let mut keep = 0u64;
        let mut buf = Vec::new();
        for (agent, r) in &whole {
            buf.clear();
            let msg = pb::StoredRecord {
                agent: agent.clone(),
                record: Some(r.into()),
            };
            keep += msg.encode_length_delimited_to_vec().len() as u64;
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(FileError::write(path))?;
        f.set_len(keep).map_err(FileError::write(path))?;
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(FileError::write(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            w: BufWriter::with_capacity(1 << 20, f),
            buf,
        })
    }

    /// Appends one record of `agent`.
    pub fn append(&mut self, agent: &str, r: &dom::Record) -> Result<(), StoredError> {
        let msg = pb::StoredRecord {
            agent: agent.to_string(),
            record: Some(r.into()),
        };
        self.buf.clear();
        // Encoding into a Vec cannot fail for lack of room.
        let _ = msg.encode_length_delimited(&mut self.buf);
        self.w
            .write_all(&self.buf)
            .map_err(FileError::write(&self.path))?;
        Ok(())
    }

    /// Pushes buffered records to the OS; with `sync`, to the disk.
    pub fn flush(&mut self, sync: bool) -> Result<(), StoredError> {
        self.w.flush().map_err(FileError::write(&self.path))?;
        if sync {
            self.w
                .get_ref()
                .sync_data()
                .map_err(FileError::write(&self.path))?;
        }
        Ok(())
    }
}

/// Reads every record of a file: (agent, record). A torn last frame (a crash mid-write) ends
/// the list; damage elsewhere is an error.
pub fn read_all(path: &Path) -> Result<Vec<(String, dom::Record)>, StoredError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(FileError::read(path))?;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let mut rest = &bytes[at..];
        let Ok(len) = prost::encoding::decode_varint(&mut rest) else {
            break; // torn length
        };
        let head = bytes.len() - at - rest.len();
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| (at + head).checked_add(l))
        else {
            break;
        };
        if end > bytes.len() {
            break; // torn frame
        }
        let damaged = |reason: String| StoredError::Damaged {
            path: path.to_path_buf(),
            offset: at,
            reason,
        };
        let msg =
            pb::StoredRecord::decode(&bytes[at + head..end]).map_err(|e| damaged(e.to_string()))?;
        let rec = msg
            .record
            .ok_or_else(|| damaged("a stored record without its record".into()))?;
        let rec = dom::Record::try_from(rec).map_err(|e| damaged(e.to_string()))?;
        out.push((msg.agent, rec));
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_stops_at_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.pb");
        let mut f = RecordFile::create(&path).unwrap();
        let recs: Vec<dom::Record> = (1..=3)
            .map(|seq| dom::Record {
                seq,
                body: dom::RecordBody::CycleDone(dom::CycleDone {
                    cycle_id: 2,
                    requests: 4,
                    completed: 4,
                    failed: 0,
                    aborted: false,
                    ended_mono_ns: 99,
                    recovered: false,
                    self_check: None,
                }),
            })
            .collect();
        for r in &recs {
            f.append("agent1", r).unwrap();
        }
        f.flush(true).unwrap();
        let back = read_all(&path).unwrap();
        assert_eq!(back.len(), 3);
        assert!(
            back.iter()
                .zip(&recs)
                .all(|((a, b), r)| a == "agent1" && b == r)
        );
        // A crash mid-write leaves part of a frame: the whole ones are kept.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_all(&path).unwrap().len(), 2);
    }
}
