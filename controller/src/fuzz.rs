//! Property tests standing in for a fuzzer over the control path (cargo-fuzz needs a nightly
//! toolchain; this project builds on stable): manifests from untrusted namespaces through the
//! loader and the translator, and the push protocol's line decoder on both ends. The corpus
//! is what the repository already holds: the translator's golden inputs and the examples'
//! manifests, mutated structurally (a value replaced by one of another type or a hostile
//! string, a key removed, a list item repeated) or as text. What must hold, whatever the
//! input: no panic, no case over a second, and every rejection of an object names it.
//! `FERRY_FUZZ_SECONDS=60 cargo test -p ferry-controller --lib fuzz` runs each target for that
//! long instead of the default case count (CI does); `FERRY_FUZZ_TRACE=FILE` writes each
//! manifest case there before it runs, so a hang leaves the input that caused it.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_yaml::Value;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::inputs::Inputs;
use crate::inputs::{parse_manifests, LoadError};
use crate::translate::{translate, Options};
use ferry_model::push::{ControllerFrame, LineDecoder, ProxyFrame};

/// The longest one case may take (the issue's bound for a hang).
const CASE_LIMIT: Duration = Duration::from_secs(1);

/// Every YAML document of the golden inputs and the examples.
fn corpus() -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = [root.join("tests/golden"), root.join("../examples")]
        .iter()
        .flat_map(|dir| walk(dir))
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            // After an error the stream yields it again and again: stop at the first.
            let Ok(value) = <Value as serde::Deserialize>::deserialize(document) else {
                break;
            };
            if value.get("kind").is_some() {
                documents.push(value);
            }
        }
    }
    assert!(
        documents.len() > 100,
        "corpus: {} documents",
        documents.len()
    );
    documents
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => files.extend(walk(&path)),
            false => files.push(path),
        }
    }
    files
}

/// Values an attacker would try in any field.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|n| Value::Number(n.into())),
        prop::sample::select(vec![
            "",
            "*",
            "/",
            "//",
            "..",
            "*.*",
            "(",
            "[a-",
            ".*",
            "0",
            "-1",
            "65536",
            "4294967296",
            "1e309",
            "10.0.0.0/33",
            "::1/129",
            "a\u{0}b",
            "é",
            "\u{202e}",
            "${x}",
            "\\",
            "\n",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        "[ -~]{0,40}".prop_map(Value::String),
        Just(Value::String("x".repeat(70_000))),
        Just(Value::Sequence(Vec::new())),
        Just(Value::Mapping(Default::default())),
    ]
}

/// One structural edit at a pseudo-random place of the document.
#[derive(Clone, Debug)]
enum Edit {
    Replace(Value),
    Remove,
    Repeat,
}

fn edit() -> impl Strategy<Value = (Edit, u32)> {
    let kind = prop_oneof![
        3 => hostile_value().prop_map(Edit::Replace),
        1 => Just(Edit::Remove),
        1 => Just(Edit::Repeat),
    ];
    (kind, any::<u32>())
}

/// Applies `edit` at the `at`-th node (pre-order) of `value`.
fn apply(value: &mut Value, edit: &Edit, at: &mut u32) -> bool {
    if *at == 0 {
        if let Edit::Replace(new) = edit {
            *value = new.clone();
            return true;
        }
    }
    *at = at.saturating_sub(1);
    match value {
        Value::Mapping(map) => {
            let keys: Vec<Value> = map.keys().cloned().collect();
            for key in keys {
                if *at == 0 && matches!(edit, Edit::Remove) {
                    map.remove(&key);
                    return true;
                }
                if apply(map.get_mut(&key).expect("key"), edit, at) {
                    return true;
                }
            }
            false
        }
        Value::Sequence(items) => {
            if *at == 0 && !items.is_empty() {
                match edit {
                    Edit::Remove => drop(items.remove(0)),
                    Edit::Repeat => items.push(items[0].clone()),
                    Edit::Replace(_) => return false,
                }
                return true;
            }
            items.iter_mut().any(|item| apply(item, edit, at))
        }
        _ => false,
    }
}

fn mutated(corpus: Vec<Value>) -> impl Strategy<Value = String> {
    let edits = prop::collection::vec(edit(), 1..5);
    let documents = prop::collection::vec(prop::sample::select(corpus), 1..4);
    (documents, edits).prop_map(|(mut documents, edits)| {
        for (i, (edit, at)) in edits.iter().enumerate() {
            let count = documents.len();
            let document = &mut documents[i % count];
            let mut at = at % 64;
            apply(document, edit, &mut at);
        }
        documents
            .iter()
            .map(|d| serde_yaml::to_string(d).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("---\n")
    })
}

/// Text damage on a serialized corpus document: bytes cut, doubled or replaced.
fn damaged(corpus: Vec<Value>) -> impl Strategy<Value = String> {
    let texts: Vec<String> = corpus
        .iter()
        .filter_map(|v| serde_yaml::to_string(v).ok())
        .collect();
    (
        prop::sample::select(texts),
        any::<prop::sample::Index>(),
        0..4u8,
        "[ -~\n]{0,8}",
    )
        .prop_map(|(text, at, how, insert)| {
            let mut at = at.index(text.len().max(1)).min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            match how {
                0 => text[..at].to_string(),
                1 => format!("{}{}", &text[..at], &text[at..].repeat(2)),
                _ => format!("{}{insert}{}", &text[..at], &text[at..]),
            }
        })
}

/// Runs `test` over `strategy`: the default case count, or FERRY_FUZZ_SECONDS seconds.
fn fuzz<S: Strategy>(
    name: &str,
    cases: u32,
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
            cases,
            failure_persistence: None,
            // Large documents shrink slowly; a finding is reported as found.
            max_shrink_iters: 32,
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
        println!(
            "{name}: {} cases without a finding",
            rounds * u64::from(cases)
        );
    }
}

/// Loads and translates `text` as the standalone gateway and the controller do.
fn check_manifests(text: &str) -> Result<(), TestCaseError> {
    if let Ok(path) = std::env::var("FERRY_FUZZ_TRACE") {
        let _ = std::fs::write(path, text);
    }
    let started = Instant::now();
    match parse_manifests(text, "fuzz") {
        Ok(objects) => {
            let inputs = Inputs::from_objects(objects);
            let output = translate(&inputs, &Options::default());
            for report in output.errors() {
                prop_assert!(
                    !report.object.name.is_empty() || !report.object.kind.is_empty(),
                    "{report:?}"
                );
            }
            let _ = crate::analyze::analyze(&inputs);
        }
        Err(LoadError::Field(field)) => {
            // A rejected object is named: kind, namespace/name and the field.
            let message = field.to_string();
            prop_assert!(
                !field.kind.is_empty() && !field.field.is_empty(),
                "{message}"
            );
            prop_assert!(
                message.contains(&field.kind) && message.contains(&field.name),
                "{message}"
            );
        }
        Err(LoadError::Syntax { origin, .. }) => prop_assert_eq!(origin, "fuzz"),
        Err(LoadError::Read { .. }) => prop_assert!(false, "no file was read"),
    }
    prop_assert!(
        started.elapsed() < CASE_LIMIT,
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn fuzz_manifests_structurally_mutated() {
    fuzz("manifests (structure)", 300, mutated(corpus()), |text| {
        check_manifests(&text)
    });
}

#[test]
fn fuzz_manifests_as_damaged_text() {
    fuzz("manifests (text)", 300, damaged(corpus()), |text| {
        check_manifests(&text)
    });
}

/// The decoder of either end of the push channel, fed arbitrary bytes in arbitrary chunks:
/// frames or an error, never a panic.
#[test]
fn fuzz_push_protocol_decoders() {
    let frame = prop_oneof![
        Just(br#"{"type":"ack","version":3}"#.to_vec()),
        Just(br#"{"type":"hello","proxy":"p","scope":{"gateway":"ns/gw"}}"#.to_vec()),
        Just(br#"{"type":"nack","version":1,"reasons":["x"]}"#.to_vec()),
        prop::collection::vec(any::<u8>(), 0..200),
    ];
    let stream = prop::collection::vec((frame, any::<bool>()), 0..8);
    let splits = prop::collection::vec(1..64usize, 1..8);
    fuzz(
        "push decoders",
        500,
        (stream, splits),
        |(frames, splits)| {
            let mut bytes = Vec::new();
            for (frame, newline) in frames {
                bytes.extend(frame);
                if newline {
                    bytes.push(b'\n');
                }
            }
            let limit = 256;
            let mut proxy_side = LineDecoder::with_limit(limit);
            let mut controller_side = LineDecoder::with_limit(limit);
            let (mut proxy_ok, mut controller_ok) = (true, true);
            let mut at = 0;
            for size in splits.iter().cycle() {
                if at >= bytes.len() {
                    break;
                }
                let chunk = &bytes[at..(at + size).min(bytes.len())];
                at += chunk.len();
                if proxy_ok {
                    proxy_ok = proxy_side.push::<ControllerFrame>(chunk).is_ok();
                }
                if controller_ok {
                    controller_ok = controller_side.push::<ProxyFrame>(chunk).is_ok();
                }
            }
            Ok(())
        },
    );
}
