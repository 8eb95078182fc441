//! Server-sent events (`text/event-stream`), decoded from bytes that arrive in chunks split
//! anywhere: inside a field name, between CR and LF, inside a multi-byte character.
//!
//! Follows the WHATWG event-stream rules the chat completions API relies on: lines end with
//! CRLF, LF or CR; `data:` lines of one event are joined with `\n`; a blank line dispatches the
//! event; lines starting with `:` are comments (keep-alives); `id` and `retry` are ignored (the
//! client does not reconnect a chat stream). An event not closed by a blank line when the stream
//! ends is dropped, as the rules say. Bytes that are not UTF-8 and events larger than a limit
//! are typed errors.

use thiserror::Error;

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the server named one.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// What can be wrong with an event stream.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SseError {
    /// A line is not UTF-8.
    #[error("event stream line that ends before byte {offset} is not UTF-8")]
    NotUtf8 {
        /// Offset in the stream just past the bad line's end.
        offset: u64,
    },
    /// One event (or one unterminated line) grew beyond the limit.
    #[error("event stream event is larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

/// Incremental event-stream decoder: feed it chunks with [`SseParser::push`].
#[derive(Debug)]
pub struct SseParser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// Data of the event being built (each `data:` line followed by `\n`).
    data: String,
    /// The event's `event:` field.
    event: Option<String>,
    /// The previous chunk ended with CR: an LF at the start of the next one belongs to it.
    after_cr: bool,
    /// No line has ended yet (a byte order mark may start the stream).
    first_line: bool,
    /// Bytes consumed so far.
    offset: u64,
    /// Largest event (data plus the current line), in bytes.
    max_event_bytes: usize,
}

impl SseParser {
    /// A decoder that refuses events larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            data: String::new(),
            event: None,
            after_cr: false,
            first_line: true,
            offset: 0,
            max_event_bytes,
        }
    }

    /// Decodes `bytes`, appending every event they complete to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
                self.offset += 1;
            }
        }
        while let Some(i) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.append(&bytes[..i])?;
            let mut used = i + 1;
            if bytes[i] == b'\r' {
                match bytes.get(i + 1) {
                    Some(b'\n') => used += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            self.offset += used as u64;
            self.end_line(out)?;
            bytes = &bytes[used..];
        }
        self.append(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// True when the stream stopped inside an event (bytes or fields not yet dispatched), which
    /// the rules drop; a caller that expected a clean end can treat it as truncation.
    pub fn has_partial_event(&self) -> bool {
        !self.line.is_empty() || !self.data.is_empty() || self.event.is_some()
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + self.data.len() + bytes.len() > self.max_event_bytes {
            return Err(SseError::TooLarge { limit: self.max_event_bytes });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let raw = std::mem::take(&mut self.line);
        let mut line = String::from_utf8(raw).map_err(|_| SseError::NotUtf8 { offset: self.offset })?;
        if std::mem::replace(&mut self.first_line, false) && line.starts_with('\u{feff}') {
            line.remove(0);
        }
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => self.event = Some(value.to_string()),
            _ => {} // `id`, `retry` and unknown fields
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the `\n` after the last data line
        out.push(SseEvent { event, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in(chunks: &[&[u8]]) -> Result<Vec<SseEvent>, SseError> {
        let mut p = SseParser::new(1 << 16);
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out)?;
        }
        Ok(out)
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    const STREAM: &str = "\u{feff}: keep-alive\r\n\r\nevent: message\r\ndata: {\"a\":\"压力 3.2 bar ✓\"}\r\n\r\n\
        data: first\ndata:second\n\ndata: cr only\r\rid: 7\nretry: 100\ndata\n\ndata: [DONE]\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent { event: Some("message".into()), data: "{\"a\":\"压力 3.2 bar ✓\"}".into() },
            SseEvent { event: None, data: "first\nsecond".into() },
            SseEvent { event: None, data: "cr only".into() },
            SseEvent { event: None, data: "".into() },
            SseEvent { event: None, data: "[DONE]".into() },
        ]
    }

    #[test]
    fn whole_stream() {
        assert_eq!(parse_in(&[STREAM.as_bytes()]).unwrap(), expected());
    }

    #[test]
    fn every_split_point_and_every_byte_alone() {
        let bytes = STREAM.as_bytes();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let got = parse_in(&[&bytes[..i], &bytes[i..j], &bytes[j..]]).unwrap();
                assert_eq!(got, expected(), "split at {i} and {j}");
            }
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_in(&singles).unwrap(), expected());
    }

    #[test]
    fn unterminated_event_is_dropped_and_reported() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        p.push(b"data: one\n\ndata: two\n", &mut out).unwrap();
        assert_eq!(data(&out), ["one"]);
        assert!(p.has_partial_event());
        p.push(b"\n", &mut out).unwrap();
        assert_eq!(data(&out), ["one", "two"]);
        assert!(!p.has_partial_event());
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let err = parse_in(&[b"data: ok\n\ndata: \xff\xfe\n\n"]).unwrap_err();
        assert_eq!(err, SseError::NotUtf8 { offset: 19 });
    }

    #[test]
    fn split_multibyte_character_is_fine() {
        let s = "data: ✓\n\n".as_bytes();
        // ✓ is three bytes: split inside it.
        assert_eq!(data(&parse_in(&[&s[..7], &s[7..8], &s[8..]]).unwrap()), ["✓"]);
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        p.push(b"data: 0123456789\n", &mut out).unwrap();
        // The second line would take the event past 16 bytes, even without a line end yet.
        assert_eq!(p.push(b"data: 0123", &mut out), Err(SseError::TooLarge { limit: 16 }));
        assert!(out.is_empty());
    }

    #[test]
    fn comments_only_dispatch_nothing() {
        assert!(parse_in(&[b": ping\n\n: ping\r\n\r\n"]).unwrap().is_empty());
    }
}
