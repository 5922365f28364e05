//! Property tests standing in for a fuzzer (cargo-fuzz needs a nightly toolchain; this machine
//! and CI have stable only): the request-head parser and the chunked scanner get mutated
//! inputs from the committed corpus (gateway/fuzz-corpus) and random ones, and must never
//! panic, never read outside their input, and agree with themselves however the bytes are
//! split. `FERRY_FUZZ_SECONDS=600 cargo test -p ferry-gateway --lib fuzz -- --nocapture`
//! runs each target until that many seconds have passed instead of the default case count.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::Path;
use std::time::{Duration, Instant};

use super::chunked::ChunkedScanner;
use super::head::{BodyFraming, HeadLimits, RequestHead};

fn corpus(kind: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz-corpus")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// A corpus entry with a few random edits: bytes replaced, inserted, removed, or a run of
/// bytes taken from another place of the input.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((0..4u8, any::<prop::sample::Index>(), any::<u8>()), 0..6);
    (prop::sample::select(seeds), edits).prop_map(|(mut input, edits)| {
        for (kind, at, byte) in edits {
            let at = if input.is_empty() {
                0
            } else {
                at.index(input.len())
            };
            match kind {
                0 if !input.is_empty() => input[at] = byte,
                1 => input.insert(at, byte),
                2 if !input.is_empty() => {
                    input.remove(at);
                }
                _ => {
                    let run: Vec<u8> = input[at..]
                        .iter()
                        .take(usize::from(byte % 16))
                        .copied()
                        .collect();
                    input.splice(at..at, run);
                }
            }
        }
        input
    })
}

fn inputs(kind: &str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => mutated(corpus(kind)),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

/// Runs `test` on inputs from `strategy`: the default case count, or for
/// FERRY_FUZZ_SECONDS seconds.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let seconds: u64 = std::env::var("FERRY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut rounds = 0u64;
    loop {
        let mut runner = TestRunner::new(Config {
            cases: 2_000,
            failure_persistence: None,
            ..Config::default()
        });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{name}: {e}");
        }
        rounds += 1;
        if Instant::now() >= deadline {
            break;
        }
    }
    if seconds > 0 {
        println!("{name}: {} cases without a finding", rounds * 2_000);
    }
}

/// What must hold of any parse, whatever the input.
fn check_head(input: &[u8]) -> Result<(), TestCaseError> {
    let limits = HeadLimits::default();
    let mut head = RequestHead::default();
    match head.parse(input, &limits) {
        Ok(true) => {
            prop_assert!(head.len <= input.len());
            for (name, value) in &head.headers {
                prop_assert!(name.end as usize <= head.len && value.end as usize <= head.len);
            }
            prop_assert!(!head.method.of(input).is_empty());
            let lookup = head.lookup(input);
            use crate::header_lookup::HeaderLookup;
            let has = |name| lookup.nth_value(name, 0).is_some();
            if has("transfer-encoding") {
                prop_assert_eq!(head.body, BodyFraming::Chunked);
                prop_assert!(!has("content-length"));
            }
            prop_assert!(head.minor_version == 0 || head.host.is_some());
            // Every shorter prefix of an accepted head is incomplete, never refused.
            for cut in [0, head.len / 2, head.len.saturating_sub(1)] {
                let mut partial = RequestHead::default();
                if cut < head.len {
                    prop_assert_eq!(
                        partial.parse(&input[..cut], &limits),
                        Ok(false),
                        "cut {}",
                        cut
                    );
                }
            }
        }
        Ok(false) => prop_assert!(input.len() <= limits.max_head),
        Err(refusal) => prop_assert!([400, 414, 431, 505].contains(&refusal.status)),
    }
    Ok(())
}

/// The scanner's verdict does not depend on how the bytes arrive.
fn check_chunked(input: &[u8], split: usize) -> Result<(), TestCaseError> {
    let mut whole = ChunkedScanner::default();
    let whole_result = whole.scan(input);
    let split = split.min(input.len());
    let mut parts = ChunkedScanner::default();
    let parts_result = parts.scan(&input[..split]).and_then(|first| {
        if parts.is_done() {
            Ok(first)
        } else {
            parts.scan(&input[split..]).map(|second| first + second)
        }
    });
    // Decoding (for HTTP/1.0 clients) follows the same framing as scanning.
    let mut decoder = ChunkedScanner::default();
    let mut data = Vec::new();
    let decoded = decoder.decode(input, &mut data);
    prop_assert_eq!(decoded.is_ok(), whole_result.is_ok());
    if let (Ok(d), Ok(w)) = (&decoded, &whole_result) {
        prop_assert_eq!(d, w);
        prop_assert!(data.len() <= *d);
    }
    match (&whole_result, &parts_result) {
        (Ok(a), Ok(b)) => {
            prop_assert_eq!(a, b);
            prop_assert!(*a <= input.len());
            prop_assert_eq!(whole.is_done(), parts.is_done());
        }
        (Err(_), Err(_)) => {}
        _ => prop_assert!(
            false,
            "split at {split}: {whole_result:?} vs {parts_result:?}"
        ),
    }
    Ok(())
}

#[test]
fn fuzz_request_heads() {
    fuzz("request heads", inputs("http1-head"), |input| {
        check_head(&input)
    });
}

#[test]
fn fuzz_chunked_framing() {
    fuzz(
        "chunked framing",
        (inputs("chunked"), any::<usize>()),
        |(input, split)| check_chunked(&input, split % (input.len() + 1)),
    );
}

/// Well-formed chunked bodies of random chunks, extensions and trailers end exactly where
/// they were made to.
#[test]
fn fuzz_valid_chunked_bodies_end_where_they_end() {
    let chunk = (
        prop::collection::vec(any::<u8>(), 1..64),
        prop::option::of("[a-z]{1,8}"),
    );
    let strategy = (
        prop::collection::vec(chunk, 0..6),
        prop::collection::vec("[a-z]{1,8}", 0..3),
        any::<usize>(),
    );
    fuzz(
        "valid chunked bodies",
        strategy,
        |(chunks, trailers, split)| {
            let mut body = Vec::new();
            for (data, extension) in &chunks {
                body.extend_from_slice(format!("{:x}", data.len()).as_bytes());
                if let Some(extension) = extension {
                    body.extend_from_slice(format!(";{extension}=1").as_bytes());
                }
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(data);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            for trailer in &trailers {
                body.extend_from_slice(format!("x-{trailer}: v\r\n").as_bytes());
            }
            body.extend_from_slice(b"\r\n");
            let end = body.len();
            body.extend_from_slice(b"GET /next HTTP/1.1\r\n");
            let mut scanner = ChunkedScanner::default();
            let split = split % (end + 1);
            let mut data = Vec::new();
            let first = scanner.decode(&body[..split], &mut data).unwrap();
            let second = if scanner.is_done() {
                0
            } else {
                scanner.decode(&body[split..], &mut data).unwrap()
            };
            prop_assert!(scanner.is_done());
            prop_assert_eq!(first + second, end);
            let sent: Vec<u8> = chunks.iter().flat_map(|(d, _)| d.clone()).collect();
            prop_assert_eq!(data, sent, "the decoded body is the chunks' data");
            Ok(())
        },
    );
}
