//! One access-log line per request on stdout, JSON by default or Istio's text layout.
//!
//! Request tasks append formatted lines to a shared buffer; a background thread writes it
//! out every 100 ms. Nobody waits on anybody per line (no channel wake-up, no syscall on the
//! request path), and when stdout cannot keep up the buffer's cap drops lines and counts
//! them instead of growing or blocking requests.

use prometheus::IntCounter;
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often buffered lines are written out (Envoy flushes access logs every second).
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Buffered bytes beyond which new lines are dropped.
const MAX_BUFFERED: usize = 8 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
    Text,
    Off,
}

impl std::str::FromStr for AccessLogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "access log format {other:?}: expected json, text or off"
            )),
        }
    }
}

/// The fields of one line; names follow Istio's JSON access log.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub start_time: String,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub response_code: u16,
    pub response_flags: &'a str,
    /// The cause the proxy gave when it answered itself (`x-ferry-cause`), else "-".
    pub response_code_details: &'a str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: u64,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<&'a str>,
    pub route_name: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub trace_id: Option<String>,
    pub user_agent: Option<&'a str>,
    pub x_forwarded_for: Option<&'a str>,
    pub downstream_remote_address: Option<String>,
    pub downstream_local_address: Option<String>,
    /// The client's SPIFFE ID over mesh mTLS (Envoy's %DOWNSTREAM_PEER_URI_SAN%).
    pub downstream_peer_uri_san: Option<&'a str>,
    /// The endpoint's SPIFFE ID over mesh mTLS (Envoy's %UPSTREAM_PEER_URI_SAN%).
    pub upstream_peer_uri_san: Option<&'a str>,
}

pub struct AccessLog {
    format: AccessLogFormat,
    pending: Arc<Mutex<Vec<u8>>>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Starts the writer thread; None when the log is off.
    pub fn start(format: AccessLogFormat, dropped: IntCounter) -> Option<AccessLog> {
        if format == AccessLogFormat::Off {
            return None;
        }
        let pending = Arc::new(Mutex::new(Vec::with_capacity(256 * 1024)));
        let shared = pending.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_periodically(&shared))
            .ok()?;
        Some(AccessLog {
            format,
            pending,
            dropped,
        })
    }

    pub fn log(&self, entry: &Entry<'_>) {
        let line = match self.format {
            AccessLogFormat::Json => serde_json::to_vec(entry).unwrap_or_default(),
            AccessLogFormat::Text => text_line(entry).into_bytes(),
            AccessLogFormat::Off => return,
        };
        let mut pending = self.pending.lock().expect("access log lock");
        if pending.len() + line.len() >= MAX_BUFFERED {
            drop(pending);
            self.dropped.inc();
            return;
        }
        pending.extend_from_slice(&line);
        pending.push(b'\n');
    }
}

/// Swaps the shared buffer for an empty one and writes what it held, forever.
fn write_periodically(pending: &Mutex<Vec<u8>>) {
    let mut out = std::io::stdout().lock();
    let mut batch = Vec::with_capacity(256 * 1024);
    loop {
        std::thread::sleep(FLUSH_INTERVAL);
        std::mem::swap(&mut *pending.lock().expect("access log lock"), &mut batch);
        if !batch.is_empty() {
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
        }
    }
}

/// Istio's default text layout, with the trace id where Istio prints the upstream transport
/// failure reason; absent values print as "-".
fn text_line(e: &Entry<'_>) -> String {
    let or_dash = |v: Option<&str>| v.unwrap_or("-").to_string();
    format!(
        "[{}] \"{} {} {}\" {} {} {} \"{}\" {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} {} {} {} {}",
        e.start_time,
        e.method,
        e.path,
        e.protocol,
        e.response_code,
        e.response_flags,
        e.response_code_details.replace(' ', "_"),
        or_dash(e.trace_id.as_deref()),
        e.bytes_received,
        e.bytes_sent,
        e.duration,
        or_dash(e.x_forwarded_for),
        or_dash(e.user_agent),
        or_dash(e.request_id),
        e.authority,
        e.upstream_host.map_or("-".to_string(), |a| a.to_string()),
        or_dash(e.upstream_cluster),
        or_dash(e.downstream_local_address.as_deref()),
        or_dash(e.downstream_remote_address.as_deref()),
        or_dash(e.route_name),
        "-",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            start_time: "2026-11-22T10:00:00.000Z".into(),
            method: "GET",
            authority: "shop.example",
            path: "/cart?x=1",
            protocol: "HTTP/1.1",
            response_code: 503,
            response_flags: "UO",
            response_code_details: "UO Service/shop/cart: overflow",
            bytes_received: 0,
            bytes_sent: 12,
            duration: 3,
            upstream_host: None,
            upstream_cluster: Some("shop/cart:80"),
            route_name: Some("VirtualService/shop/cart#0"),
            request_id: Some("abc"),
            trace_id: None,
            user_agent: Some("curl/8"),
            x_forwarded_for: None,
            downstream_remote_address: Some("127.0.0.1:5555".into()),
            downstream_local_address: None,
            downstream_peer_uri_san: None,
            upstream_peer_uri_san: None,
        }
    }

    #[test]
    fn text_line_follows_istio_layout() {
        let line = text_line(&entry());
        assert!(
            line.starts_with(
                "[2026-11-22T10:00:00.000Z] \"GET /cart?x=1 HTTP/1.1\" 503 UO UO_Service/shop/cart:_overflow \"-\" 0 12 3"
            ),
            "{line}"
        );
        assert!(
            line.contains("\"abc\" \"shop.example\" \"-\" shop/cart:80"),
            "{line}"
        );
    }

    #[test]
    fn json_names_istio_fields() {
        let value = serde_json::to_value(entry()).unwrap();
        assert_eq!(value["response_flags"], "UO");
        assert_eq!(value["request_id"], "abc");
        assert_eq!(value["upstream_host"], serde_json::Value::Null);
    }
}
