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
    /// Feeds one read; calls `on_event` with each dispatched event's data, in order, until it
    /// returns false (then returns `Ok(false)`).
    ///
    /// The hot path copies nothing: a line wholly inside this read is handled in place, and an
    /// event whose single `data:` line and blank line both lie in this read is handed over as a
    /// slice of it. Only what straddles reads is buffered.
    pub fn push(
        &mut self,
        bytes: &[u8],
        mut on_event: impl FnMut(&[u8]) -> bool,
    ) -> Result<bool, EventTooLong> {
        let mut start = 0;
        // The data of the event being read, as a range of `bytes`, while it is one line of this
        // read and nothing is buffered in `self.data`.
        let mut borrowed: Option<(usize, usize)> = None;
        while let Some(off) = memchr::memchr2(b'\n', b'\r', &bytes[start..]) {
            let i = start + off;
            let b = bytes[i];
            if b == b'\n' && self.after_cr && i == start && self.line.is_empty() {
                // The LF of a CRLF whose CR ended the previous line.
                self.after_cr = false;
                start = i + 1;
                continue;
            }
            self.after_cr = b == b'\r';
            let keep_going = if self.line.is_empty() {
                self.on_line(bytes, (start, i), true, &mut borrowed, &mut on_event)
            } else {
                self.line.extend_from_slice(&bytes[start..i]);
                let line = std::mem::take(&mut self.line);
                let keep_going =
                    self.on_line(&line, (0, line.len()), false, &mut None, &mut on_event);
                self.line = line;
                self.line.clear();
                keep_going
            };
            start = i + 1;
            if !keep_going {
                return Ok(false);
            }
        }
        if start < bytes.len() {
            self.after_cr = false;
        }
        // An event still open at the end of the read keeps its data for the next one.
        if let Some((a, z)) = borrowed {
            self.data.extend_from_slice(&bytes[a..z]);
        }
        self.line.extend_from_slice(&bytes[start..]);
        if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(EventTooLong);
        }
        Ok(true)
    }

    /// Handles the line `src[a..z]`. `borrowed` is the current event's data as a range of the
    /// read when it is a single line of it; `in_read` says whether `src` is the read itself (a
    /// line buffered across reads cannot be pointed at: its data is copied).
    fn on_line(
        &mut self,
        src: &[u8],
        (a, z): (usize, usize),
        in_read: bool,
        borrowed: &mut Option<(usize, usize)>,
        on_event: &mut impl FnMut(&[u8]) -> bool,
    ) -> bool {
        let line = &src[a..z];
        if line.is_empty() {
            if !self.has_data {
                return true;
            }
            self.has_data = false;
            let keep_going = match borrowed.take() {
                Some((da, dz)) => on_event(&src[da..dz]),
                None => on_event(&self.data),
            };
            self.data.clear();
            return keep_going;
        }
        if line[0] == b':' {
            return true; // comment (llama.cpp's keep-alive ping)
        }
        let (field, value_at) = match line.iter().position(|&b| b == b':') {
            Some(p) => {
                let v = a + p + 1;
                (&line[..p], if v < z && src[v] == b' ' { v + 1 } else { v })
            }
            None => (line, z),
        };
        if field == b"data" {
            if !self.has_data && in_read {
                // The event's first data line, inside the read: point at it.
                *borrowed = Some((value_at, z));
            } else {
                if let Some((da, dz)) = borrowed.take() {
                    self.data.extend_from_slice(&src[da..dz]);
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(&src[value_at..z]);
            }
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
        let mut d = SseDecoder::default();
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
        let mut d = SseDecoder::default();
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
