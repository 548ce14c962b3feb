//! An incremental Server-Sent Events decoder (the WHATWG rules openai-python follows): lines end
//! in LF, CRLF or CR, `:` lines are comments, `data:` lines join with LF, a blank line dispatches.

/// The most bytes one event may hold before the stream is judged malformed.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// An event or line grew past [`MAX_EVENT_BYTES`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an SSE event exceeded {MAX_EVENT_BYTES} bytes")]
pub struct EventTooLong;

/// Buffers bytes into lines and lines into events.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The last byte seen was a CR: a LF right after it ends nothing new.
    after_cr: bool,
}

impl SseDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one read; calls `on_event` with each dispatched event's data, in order, until it
    /// returns false (then returns `Ok(false)`).
    pub fn push(
        &mut self,
        bytes: &[u8],
        mut on_event: impl FnMut(&[u8]) -> bool,
    ) -> Result<bool, EventTooLong> {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b != b'\n' && b != b'\r' {
                self.after_cr = false;
                continue;
            }
            if b == b'\n' && self.after_cr && i == start && self.line.is_empty() {
                // The LF of a CRLF whose CR ended the previous line.
                self.after_cr = false;
                start = i + 1;
                continue;
            }
            self.after_cr = b == b'\r';
            self.line.extend_from_slice(&bytes[start..i]);
            start = i + 1;
            let line = std::mem::take(&mut self.line);
            let keep_going = self.on_line(&line, &mut on_event);
            self.line = line;
            self.line.clear();
            if !keep_going {
                return Ok(false);
            }
        }
        self.line.extend_from_slice(&bytes[start..]);
        if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(EventTooLong);
        }
        Ok(true)
    }

    fn on_line(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8]) -> bool) -> bool {
        if line.is_empty() {
            if !self.has_data {
                return true;
            }
            self.has_data = false;
            let keep_going = on_event(&self.data);
            self.data.clear();
            return keep_going;
        }
        if line[0] == b':' {
            return true; // comment (llama.cpp's keep-alive ping)
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        true
    }

    /// Bytes of an event not yet dispatched (a stream ending here ended mid-event).
    pub fn pending(&self) -> usize {
        self.line.len() + self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, |e| {
                out.push(e.to_vec());
                true
            })
            .unwrap();
        }
        out
    }

    #[test]
    fn every_legal_framing() {
        let s: &[u8] = b": ping\n\nevent: x\nid: 3\ndata: {\"a\":1}\n\ndata: line1\r\ndata:line2\r\n\r\ndata: z\r\rdata: [DONE]\n\n";
        let want = vec![
            b"{\"a\":1}".to_vec(),
            b"line1\nline2".to_vec(),
            b"z".to_vec(),
            b"[DONE]".to_vec(),
        ];
        assert_eq!(events(&[s]), want);
        for i in 0..=s.len() {
            for j in i..=s.len() {
                assert_eq!(
                    events(&[&s[..i], &s[i..j], &s[j..]]),
                    want,
                    "split at {i},{j}"
                );
            }
        }
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        let mut d = SseDecoder::new();
        let mut n = 0;
        d.push(b"data: half", |_| {
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(n, 0);
        assert!(d.pending() > 0);
    }
}
