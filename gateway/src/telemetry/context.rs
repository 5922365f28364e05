//! Trace context carried in request headers: W3C `traceparent`/`tracestate` and B3, both
//! the multi-header (`x-b3-*`) and single-header (`b3`) forms.

use http::HeaderName;

use crate::header_lookup::{self, HeaderLookup};

use crate::header_names::{
    B3, TRACEPARENT, TRACESTATE, X_B3_FLAGS, X_B3_SAMPLED, X_B3_SPANID, X_B3_TRACEID,
};

/// Which header formats the client used, so the upstream request speaks the same ones.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Formats {
    pub w3c: bool,
    pub b3_multi: bool,
    pub b3_single: bool,
}

/// The identity of one span, as propagated between services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's sampling decision; None when it left the decision to us.
    pub sampled: Option<bool>,
    /// W3C `tracestate`, passed on untouched.
    pub tracestate: Option<String>,
}

impl TraceContext {
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// The context of a child span: same trace, new span id, same sampling decision.
    pub fn child(&self, span_id: [u8; 8], sampled: bool) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id,
            sampled: Some(sampled),
            tracestate: self.tracestate.clone(),
        }
    }
}

/// Reads the incoming trace context: W3C first (the newer standard), then B3 single, then
/// B3 multi. Malformed headers are ignored, as the specs ask.
pub fn extract(headers: &dyn HeaderLookup) -> (Option<TraceContext>, Formats) {
    let has = |name: &HeaderName| headers.nth_value(name.as_str(), 0).is_some();
    let formats = Formats {
        w3c: has(&TRACEPARENT),
        b3_multi: has(&X_B3_TRACEID),
        b3_single: has(&B3),
    };
    if formats == Formats::default() {
        return (None, formats); // most requests: no context to read
    }
    let text = |name: &HeaderName| header_lookup::first_text(headers, name.as_str());
    let context = text(&TRACEPARENT)
        .and_then(|tp| parse_traceparent(tp, text(&TRACESTATE)))
        .or_else(|| text(&B3).and_then(parse_b3_single))
        .or_else(|| {
            parse_b3_multi(
                text(&X_B3_TRACEID)?,
                text(&X_B3_SPANID)?,
                text(&X_B3_SAMPLED),
                text(&X_B3_FLAGS),
            )
        });
    (context, formats)
}

/// Writes `context` into upstream request headers in the formats the client used (W3C when
/// it used none), replacing what was there.
pub fn inject(context: &TraceContext, formats: Formats, mut set: impl FnMut(&'static str, String)) {
    let sampled = context.sampled.unwrap_or(false);
    if formats.w3c || !(formats.b3_multi || formats.b3_single) {
        let flags = if sampled { "01" } else { "00" };
        set(
            "traceparent",
            format!(
                "00-{}-{}-{flags}",
                context.trace_id_hex(),
                context.span_id_hex()
            ),
        );
        if let Some(state) = &context.tracestate {
            set("tracestate", state.clone());
        }
    }
    let b3_sampled = if sampled { "1" } else { "0" };
    if formats.b3_multi {
        set("x-b3-traceid", context.trace_id_hex());
        set("x-b3-spanid", context.span_id_hex());
        set("x-b3-sampled", b3_sampled.to_string());
    }
    if formats.b3_single {
        set(
            "b3",
            format!(
                "{}-{}-{b3_sampled}",
                context.trace_id_hex(),
                context.span_id_hex()
            ),
        );
    }
}

/// `version-traceid-parentid-flags`; all-zero ids and version ff are invalid.
fn parse_traceparent(value: &str, tracestate: Option<&str>) -> Option<TraceContext> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version.eq_ignore_ascii_case("ff") || flags.len() != 2 {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceContext {
        trace_id: id(trace)?,
        span_id: id(span)?,
        sampled: Some(flags & 1 == 1),
        tracestate: tracestate.map(str::to_string),
    })
}

/// `traceid-spanid[-sampled[-parentspanid]]`; a bare sampling decision carries no ids.
fn parse_b3_single(value: &str) -> Option<TraceContext> {
    let mut parts = value.trim().split('-');
    let trace = parts.next()?;
    let span = parts.next()?;
    let sampled = parts.next().and_then(b3_sampled);
    Some(TraceContext {
        trace_id: trace_id_64_or_128(trace)?,
        span_id: id(span)?,
        sampled,
        tracestate: None,
    })
}

fn parse_b3_multi(
    trace: &str,
    span: &str,
    sampled: Option<&str>,
    flags: Option<&str>,
) -> Option<TraceContext> {
    let debug = flags == Some("1");
    Some(TraceContext {
        trace_id: trace_id_64_or_128(trace)?,
        span_id: id(span)?,
        sampled: if debug {
            Some(true)
        } else {
            sampled.and_then(b3_sampled)
        },
        tracestate: None,
    })
}

fn b3_sampled(value: &str) -> Option<bool> {
    match value {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// B3 allows 64-bit trace ids; they are left-padded to 128 bits.
fn trace_id_64_or_128(text: &str) -> Option<[u8; 16]> {
    match text.len() {
        32 => id(text),
        16 => {
            let short: [u8; 8] = id(text)?;
            let mut full = [0u8; 16];
            full[8..].copy_from_slice(&short);
            Some(full)
        }
        _ => None,
    }
}

/// Lower- or upper-case hex of exactly N bytes, not all zero.
fn id<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    (out != [0u8; N]).then_some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn w3c_traceparent_round_trips_with_tracestate() {
        let h = headers(&[
            ("traceparent", &format!("00-{TRACE}-00f067aa0ba902b7-01")),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]);
        let (context, formats) = extract(&h);
        let context = context.unwrap();
        assert_eq!(context.trace_id_hex(), TRACE);
        assert_eq!(context.sampled, Some(true));
        assert!(formats.w3c && !formats.b3_multi);
        let child = context.child([1, 2, 3, 4, 5, 6, 7, 8], true);
        let mut out = Vec::new();
        inject(&child, formats, |k, v| out.push((k, v)));
        assert_eq!(
            out,
            vec![
                ("traceparent", format!("00-{TRACE}-0102030405060708-01")),
                ("tracestate", "congo=t61rcWkgMzE".to_string()),
            ]
        );
    }

    #[test]
    fn b3_single_and_multi_with_short_trace_ids() {
        let (single, formats) = extract(&headers(&[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7-1")]));
        let single = single.unwrap();
        assert_eq!(single.trace_id_hex(), "0000000000000000a3ce929d0e0e4736");
        assert_eq!(single.sampled, Some(true));
        assert!(formats.b3_single);
        let (multi, _) = extract(&headers(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
        ]));
        assert_eq!(multi.unwrap().sampled, Some(false));
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in [
            format!("00-{TRACE}-0000000000000000-01"),
            format!("ff-{TRACE}-00f067aa0ba902b7-01"),
            "00-xyz-00f067aa0ba902b7-01".to_string(),
            format!("00-{TRACE}-00f067aa0ba902b7-01-extra"),
        ] {
            assert_eq!(extract(&headers(&[("traceparent", &bad)])).0, None, "{bad}");
        }
        assert_eq!(
            extract(&headers(&[("b3", "1")])).0,
            None,
            "a bare decision has no ids"
        );
    }

    #[test]
    fn no_incoming_format_means_w3c_out() {
        let context = TraceContext {
            trace_id: [7; 16],
            span_id: [9; 8],
            sampled: Some(false),
            tracestate: None,
        };
        let mut names = Vec::new();
        inject(&context, Formats::default(), |k, _| names.push(k));
        assert_eq!(names, vec!["traceparent"]);
    }
}
