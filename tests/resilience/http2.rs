//! HTTP/2 attacks: rapid reset (CVE-2023-44487), CONTINUATION flood (CVE-2024-27316 class),
//! HPACK bombs, SETTINGS and PING floods, and requests that would smuggle something past an
//! HTTP/2 -> HTTP/1.1 downgrade. The abusive connection ends with GOAWAY (or is cut), the
//! proxy lives with bounded memory, and a healthy client beside it keeps being served.

use super::h2_frames::{self as f, Frame};
use super::*;

const ENHANCE_YOUR_CALM: u32 = 0xb;
const PROTOCOL_ERROR: u32 = 0x1;

/// A case name, the `:path`, and the headers after the pseudo-headers.
type Smuggle = (
    &'static str,
    &'static [u8],
    &'static [(&'static [u8], &'static [u8])],
);

/// A gateway in front of an echo backend, and its memory before the attack.
struct Target {
    echo: Echo,
    port: u16,
    gw: Gateway,
    rss_before: u64,
    _dir: ConfigDir,
}

impl Target {
    async fn start() -> Target {
        let echo = Echo::start("web");
        let port = free_port();
        let (_dir, gw) = gateway(port, &[], &echo).await;
        let rss_before = gw.rss_bytes();
        Target {
            echo,
            port,
            gw,
            rss_before,
            _dir,
        }
    }

    /// The proxy lives, its memory grew by less than `bound`, and no request got through.
    fn survived(&self, bound: u64, forwarded_at_most: usize) {
        let rss = self.gw.rss_bytes();
        let before = self.rss_before;
        assert!(rss < before + bound, "rss grew from {before} to {rss}");
        assert!(self.gw.alive());
        let forwarded = self.echo.settled_request_count();
        assert!(
            forwarded <= forwarded_at_most,
            "{forwarded} requests reached the backend"
        );
    }
}

fn goaway(frames: &[Frame]) -> Option<u32> {
    frames
        .iter()
        .find(|fr| fr.kind == f::GOAWAY)
        .and_then(Frame::error_code)
}

#[tokio::test(flavor = "multi_thread")]
async fn rapid_reset_ends_the_connection_with_goaway() {
    let target = Target::start().await;
    let healthy = Healthy::start(SocketAddr::from(([127, 0, 0, 1], target.port)));
    let mut stream = f::open(target.port).await;
    // HEADERS then RST_STREAM(CANCEL) at once, 5,000 times, without reading a reply.
    let mut burst = Vec::new();
    let block = f::request_block(b"/", &[]);
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        burst.extend(f::frame(
            f::HEADERS,
            f::END_HEADERS | f::END_STREAM,
            id,
            &block,
        ));
        burst.extend(f::frame(f::RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = stream.write_all(&burst).await;
    let (frames, closed) = f::read_frames(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "the abusive connection is closed");
    assert_eq!(goaway(&frames), Some(ENHANCE_YOUR_CALM), "{frames:?}");
    assert_healthy(&healthy.stop().await, "rapid reset");
    let series = "ferry_http2_abuse_total{kind=\"goaway_enhance_your_calm\"}";
    assert_eq!(
        target.gw.metric(series).await,
        1.0,
        "the attack shows in the metrics"
    );
    // Healthy requests count at the backend too; of 5,000 reset ones few may get through.
    target.survived(64 * MIB, 500);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_continuation_flood_is_cut_at_the_header_list_limit() {
    let target = Target::start().await;
    let mut stream = f::open(target.port).await;
    let block = f::request_block(b"/", &[]);
    let _ = stream.write_all(&f::frame(f::HEADERS, 0, 1, &block)).await;
    // CONTINUATION frames that never end the header block: 64 MiB offered in 16 KiB frames.
    let mut piece = Vec::new();
    f::literal(&mut piece, b"x-filler", &[b'a'; 16_000]);
    let mut sent = 0u64;
    while sent < 64 * MIB {
        if stream
            .write_all(&f::frame(f::CONTINUATION, 0, 1, &piece))
            .await
            .is_err()
        {
            break;
        }
        sent += piece.len() as u64;
    }
    let (frames, closed) = f::read_frames(&mut stream, Duration::from_secs(5)).await;
    println!(
        "continuation flood: {} KiB written before the cut",
        sent / 1024
    );
    assert!(closed, "the connection is closed");
    // What the socket buffers held before the proxy stopped reading, not the header list.
    assert!(sent < 16 * MIB, "{sent} bytes accepted");
    assert!(goaway(&frames).is_some() || frames.is_empty(), "{frames:?}");
    target.survived(32 * MIB, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_hpack_bomb_does_not_expand_past_the_header_list_limit() {
    let target = Target::start().await;
    let mut stream = f::open(target.port).await;
    // One 4 KiB header enters the dynamic table, then 16,000 one-byte references to it:
    // 64 MiB decoded from a 16 KiB block.
    let mut block = f::request_block(b"/", &[]);
    f::indexed_literal(&mut block, b"x-bomb", &[b'b'; 4000]);
    for _ in 0..16_000 {
        f::indexed(&mut block, 62);
    }
    let mut headers = f::frame(f::HEADERS, f::END_STREAM, 1, &block[..16_000]);
    headers.extend(f::frame(
        f::CONTINUATION,
        f::END_HEADERS,
        1,
        &block[16_000..],
    ));
    let _ = stream.write_all(&headers).await;
    let (frames, _) = f::read_frames(&mut stream, Duration::from_secs(3)).await;
    let refused = frames.iter().any(|fr| {
        fr.kind == f::GOAWAY
            || (fr.kind == f::RST_STREAM && fr.stream == 1)
            || f::status_of(fr).is_some_and(|s| s == 431 || s == 400)
    });
    assert!(refused, "{frames:?}");
    target.survived(32 * MIB, 0);
}

/// SETTINGS or PING frames as fast as the socket takes them, replies never read: the
/// connection ends with GOAWAY ENHANCE_YOUR_CALM, counted as `metric_kind`.
async fn control_flood(kind: u8, metric_kind: &str) {
    let target = Target::start().await;
    let healthy = Healthy::start(SocketAddr::from(([127, 0, 0, 1], target.port)));
    let mut stream = f::open(target.port).await;
    let payload: &[u8] = if kind == f::PING { &[7u8; 8] } else { &[] };
    let one = f::frame(kind, 0, 0, payload);
    let burst: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 10_000)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut sent = 0usize;
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), stream.write_all(&burst)).await {
            Ok(Ok(())) => sent += 10_000,
            Ok(Err(_)) => break, // cut by the proxy
            Err(_) => break,     // the proxy stopped reading: its buffers are full
        }
    }
    println!("control flood {kind}: {sent} frames written");
    let (frames, closed) = f::read_frames(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "the flooding connection is ended");
    assert_eq!(
        goaway(&frames),
        Some(ENHANCE_YOUR_CALM),
        "{} frames",
        frames.len()
    );
    let series = format!("ferry_http2_abuse_total{{kind=\"{metric_kind}\"}}");
    assert_eq!(target.gw.metric(&series).await, 1.0);
    let verdict = healthy.stop().await;
    assert_healthy(&verdict, "control frame flood");
    target.survived(32 * MIB, verdict.requests);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_settings_flood_ends_with_goaway_and_bounded_memory() {
    control_flood(f::SETTINGS, "settings_flood").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ping_flood_ends_with_goaway_and_bounded_memory() {
    control_flood(f::PING, "ping_flood").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn downgrade_smuggling_attempts_never_reach_the_backend() {
    let echo = Echo::start("web");
    let port = free_port();
    let (_dir, gw) = gateway(port, &[], &echo).await;
    let cases: [Smuggle; 6] = [
        ("CR/LF in a value", b"/", &[(b"x-a", b"1\r\nx-smuggled: 1")]),
        (
            "LF in a value",
            b"/",
            &[(b"x-a", b"1\nGET /admin HTTP/1.1")],
        ),
        (":path without /", b"admin", &[]),
        ("TE other than trailers", b"/", &[(b"te", b"chunked")]),
        (
            "transfer-encoding",
            b"/",
            &[(b"transfer-encoding", b"chunked")],
        ),
        ("connection header", b"/", &[(b"connection", b"keep-alive")]),
    ];
    for (id, (name, path, extra)) in cases.iter().enumerate() {
        let mut stream = f::open(port).await;
        let block = f::request_block(path, extra);
        let stream_id = 1;
        let flags = f::END_HEADERS | f::END_STREAM;
        stream
            .write_all(&f::frame(f::HEADERS, flags, stream_id, &block))
            .await
            .unwrap();
        let (frames, _) = f::read_frames(&mut stream, Duration::from_secs(2)).await;
        let refused = frames.iter().any(|fr| {
            (fr.kind == f::RST_STREAM && fr.error_code() == Some(PROTOCOL_ERROR))
                || fr.kind == f::GOAWAY
                || f::status_of(fr) == Some(400)
        });
        assert!(refused, "case {id} ({name}): {frames:?}");
    }
    assert_eq!(
        echo.settled_request_count(),
        0,
        "a smuggled request was forwarded"
    );
    // The same proxy still serves a clean HTTP/2 request.
    let mut stream = f::open(port).await;
    let block = f::request_block(b"/", &[]);
    let flags = f::END_HEADERS | f::END_STREAM;
    stream
        .write_all(&f::frame(f::HEADERS, flags, 1, &block))
        .await
        .unwrap();
    let (frames, _) = f::read_frames(&mut stream, Duration::from_secs(2)).await;
    assert!(
        frames.iter().any(|fr| f::status_of(fr) == Some(200)),
        "{frames:?}"
    );
    assert!(gw.alive());
}
