//! HTTP/2 floods the h2 crate absorbs without ending the connection: PING, SETTINGS and
//! empty DATA frames sent as fast as the socket takes them (CVE-2019-9512, -9515, -9518).
//! Ferry reads the frame headers of a client's HTTP/2 connection as the bytes pass (payloads
//! are skipped, not copied), and past a rate no client needs ends the connection with GOAWAY
//! ENHANCE_YOUR_CALM, as Envoy's and nginx's flood checks do. It also reads the frames the
//! server writes, so the GOAWAYs h2 itself sends for abuse it catches (rapid reset,
//! CONTINUATION floods, header lists too large) are counted too:
//! `ferry_http2_abuse_total{kind}`.

use std::time::{Duration, Instant};

const HEADER: usize = 9;
const PREFACE: usize = 24;
const DATA: u8 = 0;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
/// GOAWAY error codes.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;
const NO_ERROR: u32 = 0;

/// Frames of each kind a client may send per second before its connection is ended: far
/// above what a client library sends (gRPC pings every few seconds at most), far below a
/// flood's tens of thousands.
const MAX_PER_SECOND: u32 = 200;
const WINDOW: Duration = Duration::from_secs(1);

/// What a client was caught flooding the connection with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abuse {
    Pings,
    Settings,
    EmptyFrames,
}

impl Abuse {
    pub fn as_str(self) -> &'static str {
        match self {
            Abuse::Pings => "ping_flood",
            Abuse::Settings => "settings_flood",
            Abuse::EmptyFrames => "empty_frame_flood",
        }
    }
}

/// Frame boundaries of one direction of a connection.
#[derive(Debug, Default)]
struct Frames {
    /// Preface bytes still to skip (the client's side starts with one).
    skip: usize,
    header: [u8; HEADER],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: usize,
    /// The first bytes of a GOAWAY's payload (last stream id, error code).
    goaway: [u8; 8],
    goaway_have: usize,
}

/// A frame header just completed.
struct Header {
    kind: u8,
    flags: u8,
    len: usize,
}

impl Frames {
    /// Passes `bytes`, calling `on_header` for each frame header completed and `on_goaway`
    /// with the error code of each GOAWAY.
    fn feed(
        &mut self,
        mut bytes: &[u8],
        mut on_header: impl FnMut(&Header),
        mut on_goaway: impl FnMut(u32),
    ) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                if self.header[3] == GOAWAY && self.goaway_have < 8 {
                    let take = n.min(8 - self.goaway_have);
                    self.goaway[self.goaway_have..self.goaway_have + take]
                        .copy_from_slice(&bytes[..take]);
                    self.goaway_have += take;
                    if self.goaway_have == 8 {
                        on_goaway(u32::from_be_bytes([
                            self.goaway[4],
                            self.goaway[5],
                            self.goaway[6],
                            self.goaway[7],
                        ]));
                    }
                }
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == HEADER {
                self.have = 0;
                let h = &self.header;
                let header = Header {
                    len: usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]),
                    kind: h[3],
                    flags: h[4],
                };
                self.payload_left = header.len;
                self.goaway_have = 0;
                on_header(&header);
            }
        }
    }
}

/// One client HTTP/2 connection's meter.
#[derive(Debug)]
pub struct H2Guard {
    inbound: Frames,
    outbound: Frames,
    window_start: Option<Instant>,
    counts: [u32; 3],
    caught: Option<Abuse>,
    /// GOAWAYs the server sent with an error code (h2's own abuse checks).
    goaways: Vec<u32>,
}

impl Default for H2Guard {
    fn default() -> Self {
        H2Guard {
            inbound: Frames {
                skip: PREFACE,
                ..Frames::default()
            },
            outbound: Frames::default(),
            window_start: None,
            counts: [0; 3],
            caught: None,
            goaways: Vec::new(),
        }
    }
}

impl H2Guard {
    /// Bytes the client sent; the abuse found, once.
    pub fn inbound(&mut self, bytes: &[u8]) -> Option<Abuse> {
        if self.caught.is_some() {
            return None;
        }
        let mut seen = [0u32; 3];
        self.inbound.feed(
            bytes,
            |h| {
                let slot = match (h.kind, h.flags) {
                    (PING, f) if f & ACK == 0 => 0,
                    (SETTINGS, f) if f & ACK == 0 => 1,
                    (DATA, f) if h.len == 0 && f & END_STREAM == 0 => 2,
                    _ => return,
                };
                seen[slot] += 1;
            },
            |_| {},
        );
        if seen == [0; 3] {
            return None;
        }
        self.count(seen)
    }

    fn count(&mut self, seen: [u32; 3]) -> Option<Abuse> {
        let now = Instant::now();
        let start = *self.window_start.get_or_insert(now);
        if now.duration_since(start) > WINDOW {
            self.window_start = Some(now);
            self.counts = [0; 3];
        }
        for (count, more) in self.counts.iter_mut().zip(seen) {
            *count += more;
        }
        let abuse = [Abuse::Pings, Abuse::Settings, Abuse::EmptyFrames]
            .into_iter()
            .zip(self.counts)
            .find(|(_, count)| *count > MAX_PER_SECOND)
            .map(|(abuse, _)| abuse);
        self.caught = abuse;
        abuse
    }

    /// Bytes the server wrote.
    pub fn outbound(&mut self, bytes: &[u8]) {
        let goaways = &mut self.goaways;
        self.outbound.feed(
            bytes,
            |_| {},
            |code| {
                if code != NO_ERROR {
                    goaways.push(code);
                }
            },
        );
    }

    /// GOAWAY error codes the server sent since the last call.
    pub fn take_goaways(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.goaways)
    }

    /// Whether everything the server wrote so far ends at a frame boundary (a GOAWAY of our
    /// own may go out only there).
    pub fn at_frame_boundary(&self) -> bool {
        self.outbound.have == 0 && self.outbound.payload_left == 0
    }
}

/// A GOAWAY frame with `last_stream` (the highest stream the server may have acted on).
pub fn goaway_frame(last_stream: u32, code: u32) -> [u8; 17] {
    let mut frame = [0u8; 17];
    frame[2] = 8;
    frame[3] = GOAWAY;
    frame[9..13].copy_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    frame[13..17].copy_from_slice(&code.to_be_bytes());
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, payload.len() as u8, kind, flags, 0, 0, 0, 0];
        out.extend_from_slice(payload);
        out
    }

    const PRI: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    #[test]
    fn a_ping_flood_is_caught_however_the_bytes_are_split() {
        let mut bytes = PRI.to_vec();
        for _ in 0..=MAX_PER_SECOND {
            bytes.extend(frame(PING, 0, &[1; 8]));
        }
        for split in [1, 7, 9, 17, 4096] {
            let mut guard = H2Guard::default();
            let caught: Vec<_> = bytes
                .chunks(split)
                .filter_map(|c| guard.inbound(c))
                .collect();
            assert_eq!(caught, vec![Abuse::Pings], "split {split}");
        }
    }

    #[test]
    fn ordinary_traffic_and_acks_are_not_counted() {
        let mut guard = H2Guard::default();
        let mut bytes = PRI.to_vec();
        bytes.extend(frame(SETTINGS, 0, &[]));
        for _ in 0..1000 {
            bytes.extend(frame(PING, ACK, &[1; 8]));
            bytes.extend(frame(SETTINGS, ACK, &[]));
            bytes.extend(frame(DATA, END_STREAM, &[]));
            bytes.extend(frame(DATA, 0, &[7; 100]));
            bytes.extend(frame(1, 0x4, &[0x82]));
        }
        assert_eq!(guard.inbound(&bytes), None);
    }

    #[test]
    fn settings_and_empty_data_floods_are_caught() {
        let mut guard = H2Guard::default();
        let mut bytes = PRI.to_vec();
        (0..=MAX_PER_SECOND).for_each(|_| bytes.extend(frame(SETTINGS, 0, &[])));
        assert_eq!(guard.inbound(&bytes), Some(Abuse::Settings));
        let mut guard = H2Guard::default();
        let mut bytes = PRI.to_vec();
        (0..=MAX_PER_SECOND).for_each(|_| bytes.extend(frame(DATA, 0, &[])));
        assert_eq!(guard.inbound(&bytes), Some(Abuse::EmptyFrames));
    }

    #[test]
    fn the_servers_goaways_with_an_error_are_seen_and_boundaries_tracked() {
        let mut guard = H2Guard::default();
        let mut bytes = frame(SETTINGS, 0, &[0, 3, 0, 0, 0, 100]);
        bytes.extend(goaway_frame(7, ENHANCE_YOUR_CALM));
        bytes.extend(goaway_frame(7, NO_ERROR));
        guard.outbound(&bytes[..20]);
        assert!(!guard.at_frame_boundary());
        guard.outbound(&bytes[20..]);
        assert!(guard.at_frame_boundary());
        assert_eq!(guard.take_goaways(), vec![ENHANCE_YOUR_CALM]);
    }
}
