//! Why a request is handed to Pingora's proxy instead of Ferry's HTTP/1 loop: every reason in
//! one place, each a label of `ferry_http1_fallback_total{reason}`.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `--http1-fallback` (or a test) sends everything to Pingora.
    Forced,
    /// Upgrade requests (WebSocket, h2c upgrade): Pingora switches protocols.
    Upgrade,
    /// `Expect: 100-continue`: Pingora relays the interim response.
    ExpectContinue,
    /// Absolute-form or authority-form (CONNECT) request targets.
    TargetForm,
    /// Chunked request bodies.
    ChunkedBody,
    /// The route mirrors traffic.
    Mirror,
    /// The cluster speaks HTTP/2 (h2c) upstream.
    H2Upstream,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Forced => "forced",
            Reason::Upgrade => "upgrade",
            Reason::ExpectContinue => "expect_continue",
            Reason::TargetForm => "target_form",
            Reason::ChunkedBody => "chunked_body",
            Reason::Mirror => "mirror",
            Reason::H2Upstream => "h2_upstream",
        }
    }

    pub const ALL: [Reason; 7] = [
        Reason::Forced,
        Reason::Upgrade,
        Reason::ExpectContinue,
        Reason::TargetForm,
        Reason::ChunkedBody,
        Reason::Mirror,
        Reason::H2Upstream,
    ];
}
