//! Splits a byte stream into NDJSON lines, whatever the read boundaries (a pure parser).

/// Buffers bytes until a `\n` completes a line. Lines are returned without the `\n` (and without a
/// trailing `\r`); blank lines are skipped, as servers never mean anything by them.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

/// The most bytes a single line may hold before the stream is judged malformed (Ollama's final
/// `context` array can be long, so this is generous).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// A line grew past [`MAX_LINE_BYTES`] without a newline.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a stream line exceeded {MAX_LINE_BYTES} bytes without a newline")]
pub struct LineTooLong;

impl LineSplitter {
    /// Feeds one read; calls `on_line` for each line it completes, in order. Stops early and
    /// returns `Ok(false)` when `on_line` returns false.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        mut on_line: impl FnMut(&[u8]) -> bool,
    ) -> Result<bool, LineTooLong> {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            let (head, tail) = bytes.split_at(nl);
            bytes = &tail[1..];
            let keep_going = if self.partial.is_empty() {
                emit(head, &mut on_line)
            } else {
                self.partial.extend_from_slice(head);
                let r = emit(&self.partial, &mut on_line);
                self.partial.clear();
                r
            };
            if !keep_going {
                return Ok(false);
            }
        }
        if self.partial.len() + bytes.len() > MAX_LINE_BYTES {
            return Err(LineTooLong);
        }
        self.partial.extend_from_slice(bytes);
        Ok(true)
    }

    /// Bytes after the last newline (a line the stream never finished).
    pub fn remainder(&self) -> &[u8] {
        &self.partial
    }
}

fn emit(line: &[u8], on_line: &mut impl FnMut(&[u8]) -> bool) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    on_line(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| {
                out.push(l.to_vec());
                true
            })
            .unwrap();
        }
        (out, s.remainder().to_vec())
    }

    #[test]
    fn splits_lines_and_keeps_the_tail() {
        let (lines, rest) = lines_of(&[b"{\"a\":1}\n\n{\"b\":\"\xc3\xa9\"}\r\n{\"c\""]);
        assert_eq!(
            lines,
            vec![b"{\"a\":1}".to_vec(), "{\"b\":\"é\"}".as_bytes().to_vec()]
        );
        assert_eq!(rest, b"{\"c\"");
    }

    #[test]
    fn every_split_point_gives_the_same_lines() {
        let stream: &[u8] =
            "{\"response\":\"é\"}\n{\"response\":\"x\"}\n\n{\"done\":true}\n".as_bytes();
        let (whole, _) = lines_of(&[stream]);
        assert_eq!(whole.len(), 3);
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let (parts, rest) = lines_of(&[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(parts, whole, "split at {i},{j}");
                assert!(rest.is_empty());
            }
        }
    }

    #[test]
    fn stops_when_asked() {
        let mut s = LineSplitter::default();
        let mut n = 0;
        let more = s
            .push(b"a\nb\nc\n", |_| {
                n += 1;
                n < 2
            })
            .unwrap();
        assert!(!more);
        assert_eq!(n, 2);
    }
}
