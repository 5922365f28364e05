//! Finds where a chunked body ends without decoding it: the bytes are copied through as they
//! are, this only follows the framing (sizes, extensions, trailers) so the proxy knows when the
//! message is over and whether the peer broke the framing.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size (`digits` read so far).
    Size {
        digits: u8,
    },
    /// After the size: extensions up to the line end.
    Extension,
    /// The LF ending a size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// The start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

#[derive(Debug)]
pub struct ChunkedScanner {
    state: State,
    /// Data bytes left in the current chunk (also the size being read).
    remaining: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct FramingError(pub &'static str);

/// Hex digits in a chunk size: 2^60 is more than anyone sends.
const MAX_SIZE_DIGITS: u8 = 15;

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner {
            state: State::Size { digits: 0 },
            remaining: 0,
        }
    }
}

impl ChunkedScanner {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Follows `bytes`; returns how many belong to the body: all of them, or fewer when the
    /// body ended inside them (the rest is whatever the peer sent after it).
    pub fn scan(&mut self, bytes: &[u8]) -> Result<usize, FramingError> {
        self.scan_with(bytes, |_| {})
    }

    /// [`scan`](Self::scan), appending the chunks' data to `data` (the body decoded, for an
    /// HTTP/1.0 client that does not know chunked).
    pub fn decode(&mut self, bytes: &[u8], data: &mut Vec<u8>) -> Result<usize, FramingError> {
        self.scan_with(bytes, |run| data.extend_from_slice(run))
    }

    fn scan_with(
        &mut self,
        bytes: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<usize, FramingError> {
        let mut at = 0;
        while at < bytes.len() && self.state != State::Done {
            if self.state == State::Data {
                let take =
                    (bytes.len() - at).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                on_data(&bytes[at..at + take]);
                at += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            self.step(bytes[at])?;
            at += 1;
        }
        Ok(at)
    }

    fn step(&mut self, byte: u8) -> Result<(), FramingError> {
        self.state = match (self.state, byte) {
            (State::Size { digits }, b) if b.is_ascii_hexdigit() => {
                if digits >= MAX_SIZE_DIGITS {
                    return Err(FramingError("chunk size too large"));
                }
                self.remaining = self.remaining * 16 + u64::from(hex_value(b));
                State::Size { digits: digits + 1 }
            }
            (State::Size { digits: 0 }, _) => return Err(FramingError("chunk size missing")),
            (State::Size { .. }, b';' | b' ' | b'\t') => State::Extension,
            (State::Size { .. } | State::Extension, b'\r') => State::SizeLf,
            (State::Extension, b) if b != b'\n' && (b >= 0x20 || b == b'\t') => State::Extension,
            (State::SizeLf, b'\n') => self.after_size_line(),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size { digits: 0 },
            (State::TrailerStart, b'\r') => State::FinalLf,
            (State::FinalLf, b'\n') => State::Done,
            (State::Trailer, b'\r') => State::TrailerLf,
            (State::TrailerStart | State::Trailer, b) if b >= 0x20 || b == b'\t' => State::Trailer,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            _ => return Err(FramingError("malformed chunked framing")),
        };
        Ok(())
    }

    fn after_size_line(&mut self) -> State {
        if self.remaining == 0 {
            State::TrailerStart
        } else {
            State::Data
        }
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Result<(usize, bool), FramingError> {
        let mut scanner = ChunkedScanner::default();
        let used = scanner.scan(input)?;
        Ok((used, scanner.is_done()))
    }

    #[test]
    fn finds_the_end_of_bodies_with_extensions_and_trailers() {
        let cases: [(&[u8], usize); 4] = [
            (b"0\r\n\r\n", 5),
            (b"5\r\nhello\r\n0\r\n\r\nGET", 15),
            (b"5;name=v\r\nhello\r\n0\r\nx-t: 1\r\n\r\n", 30),
            (b"A\r\n0123456789\r\n0\r\n\r\n", 20),
        ];
        for (input, end) in cases {
            assert_eq!(
                scan_all(input),
                Ok((end, true)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn decodes_the_data_of_a_body_split_anywhere() {
        let body = b"5\r\nhello\r\n3;x\r\nabc\r\n0\r\nt: v\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut scanner = ChunkedScanner::default();
            let mut data = Vec::new();
            let first = scanner.decode(&body[..split], &mut data).unwrap();
            let second = scanner.decode(&body[split..], &mut data).unwrap();
            assert_eq!(first + second, body.len() - 4, "split at {split}");
            assert!(scanner.is_done());
            assert_eq!(data, b"helloabc", "split at {split}");
        }
    }

    #[test]
    fn follows_a_body_split_anywhere() {
        let body = b"5\r\nhello\r\n3;x\r\nabc\r\n0\r\nt: v\r\n\r\n";
        for split in 0..body.len() {
            let mut scanner = ChunkedScanner::default();
            let first = scanner.scan(&body[..split]).unwrap();
            assert_eq!(first, split);
            assert!(!scanner.is_done() || split == body.len());
            let second = scanner.scan(&body[split..]).unwrap();
            assert_eq!(first + second, body.len());
            assert!(scanner.is_done(), "split at {split}");
        }
    }

    #[test]
    fn refuses_broken_framing() {
        let cases: [&[u8]; 6] = [
            b"\r\n",
            b"zz\r\n",
            b"5\r\nhelloXX",
            b"5\nhello\r\n",
            b"1234567890abcdef0\r\n",
            b"0\r\nbad\x00trailer\r\n\r\n",
        ];
        for input in cases {
            assert!(
                scan_all(input).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
