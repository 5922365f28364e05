//! The push protocol between the controller and its proxies.
//!
//! A proxy opens one HTTP/2 stream to the controller (`POST /ferry.v1/subscribe`) and keeps
//! it open. Both bodies are sequences of JSON documents, one per line: the proxy writes a
//! [`ProxyFrame::Hello`] first and then one ACK or NACK per snapshot it receives; the
//! controller writes a [`ControllerFrame::Snapshot`] at once and again whenever the proxy's
//! scope changes. The same serde types as the snapshot travel on the wire, so there is no
//! second schema to keep in step; HTTP/2 gives flow control and one connection per proxy.

use serde::{Deserialize, Serialize};

use crate::summary::TrafficSummary;
use crate::{Snapshot, Str};

/// Path of the subscription stream on the controller's push port.
pub const SUBSCRIBE_PATH: &str = "/ferry.v1/subscribe";

/// What a proxy asks for: which configuration it serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    /// `namespace/name` of the Gateway API Gateway this proxy implements; empty for none.
    #[serde(default)]
    pub gateway: Str,
    /// The proxy's own labels: Istio Gateways whose selector matches them are served.
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    /// Port for Kubernetes Ingress objects (0: Ingress not served).
    #[serde(default)]
    pub ingress_port: u16,
    #[serde(default)]
    pub ingress_class: String,
    /// Port for the TLS hosts of Ingress objects (0: not served).
    #[serde(default)]
    pub ingress_tls_port: u16,
    /// Set by sidecars: the pod's namespace. The proxy then gets the mesh scope (Service
    /// ports, mesh VirtualServices) instead of gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_namespace: Option<Str>,
    /// The namespace of the proxy's authenticated ServiceAccount. Set by the controller after
    /// checking the proxy's token, never taken from the wire: it decides which Secrets (TLS
    /// private keys) the proxy's snapshot may carry.
    #[serde(skip)]
    pub workload_namespace: Option<Str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ProxyFrame {
    /// First frame on a stream. `proxy` is a stable, unique name (`pod.namespace`).
    Hello { proxy: Str, scope: Scope },
    /// The snapshot with this version is applied and serving.
    Ack { version: u64 },
    /// The snapshot with this version was refused; the previous one keeps serving.
    Nack { version: u64, reasons: Vec<String> },
    /// The proxy's traffic since its previous summary, every
    /// [`crate::summary::SUMMARY_INTERVAL_MS`] while it has any (the dashboard's live data).
    Summary { summary: TrafficSummary },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ControllerFrame {
    /// The complete configuration for the proxy's scope; `version` increases per scope.
    Snapshot {
        snapshot: Snapshot,
        /// The translator's findings for the objects in this scope (kept for `/status`).
        #[serde(default)]
        reports: serde_json::Value,
    },
    /// The stream cannot be served (bad Hello); the proxy should log it and retry later.
    Error { message: String },
}

/// Splits a byte stream into frames, one JSON document per line. Chunk boundaries of the
/// transport do not follow lines; partial lines wait for the rest. Each byte is scanned for
/// a newline once (a frame arriving in many chunks costs linear time), and a line longer
/// than the decoder's limit is an error rather than a buffer that grows without bound.
pub struct LineDecoder {
    pending: Vec<u8>,
    max_frame: usize,
}

/// Longest frame a proxy accepts: a snapshot with tens of thousands of routes fits easily.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// Longest frame the controller accepts from a proxy (a hello, an ACK, a NACK with reasons).
pub const MAX_PROXY_FRAME_BYTES: usize = 1024 * 1024;

impl Default for LineDecoder {
    fn default() -> Self {
        LineDecoder::with_limit(MAX_FRAME_BYTES)
    }
}

impl LineDecoder {
    pub fn with_limit(max_frame: usize) -> Self {
        LineDecoder {
            pending: Vec::new(),
            max_frame,
        }
    }

    /// Feeds `chunk` and returns the complete frames it finished, decoded.
    pub fn push<T: serde::de::DeserializeOwned>(&mut self, chunk: &[u8]) -> Result<Vec<T>, String> {
        // Bytes already held were scanned by an earlier call and hold no newline.
        let mut scan_from = self.pending.len();
        self.pending.extend_from_slice(chunk);
        let mut frames = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.pending[scan_from..].iter().position(|b| *b == b'\n') {
            let end = scan_from + offset;
            let line = &self.pending[start..end];
            if line.len() > self.max_frame {
                return Err(format!("frame longer than {} bytes", self.max_frame));
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                let frame = serde_json::from_slice(line).map_err(|e| format!("bad frame: {e}"))?;
                frames.push(frame);
            }
            start = end + 1;
            scan_from = start;
        }
        self.pending.drain(..start);
        if self.pending.len() > self.max_frame {
            return Err(format!("frame longer than {} bytes", self.max_frame));
        }
        Ok(frames)
    }
}

/// One frame as a line, ready to write.
pub fn encode_line<T: Serialize>(frame: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(frame).expect("frames serialize");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_single_line_json_with_a_type_tag() {
        let hello = ProxyFrame::Hello {
            proxy: "gw-1.infra".into(),
            scope: Scope {
                gateway: "infra/public".into(),
                labels: vec![("istio".into(), "ingressgateway".into())],
                ..Scope::default()
            },
        };
        let line = serde_json::to_string(&hello).unwrap();
        assert!(!line.contains('\n'));
        assert!(line.starts_with(r#"{"type":"hello""#), "{line}");
        assert_eq!(serde_json::from_str::<ProxyFrame>(&line).unwrap(), hello);
        let nack: ProxyFrame =
            serde_json::from_str(r#"{"type":"nack","version":3,"reasons":["bad regex"]}"#).unwrap();
        assert_eq!(
            nack.clone(),
            ProxyFrame::Nack {
                version: 3,
                reasons: vec!["bad regex".into()]
            }
        );
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut decoder = LineDecoder::default();
        let bytes = [
            encode_line(&ProxyFrame::Ack { version: 1 }),
            encode_line(&ProxyFrame::Ack { version: 2 }),
        ]
        .concat();
        let (a, b) = bytes.split_at(10);
        assert!(decoder.push::<ProxyFrame>(a).unwrap().is_empty());
        let frames: Vec<ProxyFrame> = decoder.push(b).unwrap();
        assert_eq!(
            frames,
            vec![
                ProxyFrame::Ack { version: 1 },
                ProxyFrame::Ack { version: 2 }
            ]
        );
        assert!(decoder.push::<ProxyFrame>(b"{not json}\n").is_err());
    }

    #[test]
    fn a_line_over_the_limit_is_refused_even_in_small_chunks() {
        let mut decoder = LineDecoder::with_limit(64);
        for _ in 0..8 {
            assert!(decoder.push::<ProxyFrame>(b"{{{{{{{{").is_ok());
        }
        assert!(decoder.push::<ProxyFrame>(b"{").is_err());
        let mut decoder = LineDecoder::with_limit(64);
        let ack = encode_line(&ProxyFrame::Ack { version: 7 });
        let frames: Vec<ProxyFrame> = decoder.push(&ack).unwrap();
        assert_eq!(frames.len(), 1);
    }
}
