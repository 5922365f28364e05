use super::*;

fn parse(text: &str) -> Result<RequestHead, Refusal> {
    let mut head = RequestHead::default();
    match head.parse(text.as_bytes(), &HeadLimits::default())? {
        true => Ok(head),
        false => panic!("incomplete head: {text:?}"),
    }
}

fn status_of(text: &str) -> u16 {
    parse(text).err().map_or(200, |r| r.status)
}

#[test]
fn framing_and_connection_options() {
    let head = parse("POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n").unwrap();
    assert_eq!(head.body, BodyFraming::Length(5));
    assert!(head.keep_alive);
    let buf = b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";
    assert_eq!(head.path_and_query(buf), ("/a", Some("b=1")));
    assert_eq!(head.host(buf), "x");
    let head =
        parse("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap();
    assert_eq!(head.body, BodyFraming::Chunked);
    let head = parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert!(!head.keep_alive);
    let head = parse("GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(!head.keep_alive);
    let head = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert!(head.keep_alive);
    let head =
        parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .unwrap();
    assert!(head.upgrade);
    let head = parse("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n").unwrap();
    assert_eq!(head.body, BodyFraming::Length(3));
}

/// Requests a proxy must refuse rather than guess at (RFC 9112 sections 3, 5, 6).
#[test]
fn ambiguous_or_malformed_heads_are_refused() {
    let cases = [
        (
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n",
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n",
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n",
            400,
        ),
        ("GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
            400,
        ),
        ("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ];
    for (text, status) in cases {
        assert_eq!(status_of(text), status, "{text:?}");
    }
}

#[test]
fn limits_answer_414_and_431() {
    let limits = HeadLimits::default();
    let long_line = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(limits.max_request_line)
    );
    assert_eq!(status_of(&long_line), 414);
    let mut head = RequestHead::default();
    let partial = format!("GET /{}", "a".repeat(limits.max_request_line));
    assert_eq!(
        head.parse(partial.as_bytes(), &limits).unwrap_err().status,
        414
    );
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        status_of(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
        431
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(limits.max_head)
    );
    assert_eq!(status_of(&big), 431);
}

#[test]
fn hop_by_hop_names_include_those_connection_lists() {
    let mut lists = [&b"close, x-private"[..]].into_iter();
    assert!(is_hop_by_hop(b"X-Private", &mut lists));
    assert!(is_hop_by_hop(b"keep-alive", &mut std::iter::empty()));
    assert!(is_hop_by_hop(
        b"Proxy-Authorization",
        &mut std::iter::empty()
    ));
    assert!(!is_hop_by_hop(b"x-forwarded-for", &mut std::iter::empty()));
}
