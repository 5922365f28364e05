//! Controller mode: follow the controller's push stream for this proxy's scope.
//!
//! The gateway dials the controller over TLS with its ServiceAccount token
//! ([`crate::control_channel`]), says hello (name + scope), applies every snapshot it
//! receives and answers ACK or NACK, and sends a summary of its traffic every few seconds
//! (the dashboard's live graph). When the controller is unreachable or the stream
//! breaks, the engine keeps serving its last snapshot and the gateway reconnects with
//! exponential backoff (jittered, capped), as Envoy and ztunnel do with xDS.

use bytes::Bytes;
use ferry_model::push::{
    encode_line, ControllerFrame, LineDecoder, ProxyFrame, Scope, SUBSCRIBE_PATH,
};
use ferry_model::summary::SUMMARY_INTERVAL_MS;
use futures::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use crate::control_channel::ControlChannel;
use crate::engine::Engine;
use crate::telemetry::edges::EdgeRecorder;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct SyncOptions {
    pub controller: ControlChannel,
    /// Unique proxy name, e.g. `pod.namespace`.
    pub proxy: String,
    pub scope: Scope,
}

/// Runs until the process ends.
pub async fn follow(options: SyncOptions, engine: Arc<Engine>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let outcome = session(&options, &engine).await;
        match &outcome {
            Ok(received) => tracing::warn!(
                controller = %options.controller.address,
                "controller stream ended after {received} snapshot(s); reconnecting"
            ),
            Err(e) => tracing::warn!(
                controller = %options.controller.address,
                "controller unreachable ({e}); serving the last snapshot, retrying in {backoff:?}"
            ),
        }
        if matches!(outcome, Ok(n) if n > 0) {
            backoff = FIRST_BACKOFF; // it worked: the next failure starts small again
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Between half and all of `backoff`, so a fleet does not reconnect in lockstep.
fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// One stream; returns how many snapshots it delivered.
async fn session(options: &SyncOptions, engine: &Engine) -> Result<usize, String> {
    let connected = options.controller.connect().await?;
    let mut sender = connected.sender;
    let (frames_tx, frames_rx) = mpsc::unbounded_channel::<Bytes>();
    let hello = ProxyFrame::Hello {
        proxy: options.proxy.as_str().into(),
        scope: options.scope.clone(),
    };
    let _ = frames_tx.send(Bytes::from(encode_line(&hello)));
    let _summaries = AbortOnDrop(tokio::spawn(send_summaries(
        engine.metrics.edges.clone(),
        frames_tx.clone(),
    )));
    let body = StreamBody::new(Box::pin(stream::unfold(frames_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    })));
    let request = http::Request::post(format!(
        "https://{}{SUBSCRIBE_PATH}",
        options.controller.address
    ))
    .header("content-type", "application/x-ndjson")
    .header("authorization", format!("Bearer {}", connected.token))
    .body(body)
    .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let mut body = response.into_body();
    let mut decoder = LineDecoder::default();
    let mut received = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        for message in decoder.push::<ControllerFrame>(data)? {
            match message {
                ControllerFrame::Snapshot { snapshot, reports } => {
                    received += 1;
                    let answer = apply(engine, snapshot, reports).await;
                    let _ = frames_tx.send(Bytes::from(encode_line(&answer)));
                }
                ControllerFrame::Error { message } => {
                    return Err(format!("controller refused the stream: {message}"))
                }
            }
        }
    }
    if !status.is_success() {
        return Err(format!("controller answered {status}"));
    }
    Ok(received)
}

/// Sends the proxy's traffic summary every [`SUMMARY_INTERVAL_MS`] (when there was any)
/// for the controller's dashboard, until the stream ends.
async fn send_summaries(edges: Arc<EdgeRecorder>, frames: mpsc::UnboundedSender<Bytes>) {
    let mut ticks = tokio::time::interval(Duration::from_millis(SUMMARY_INTERVAL_MS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate
    loop {
        ticks.tick().await;
        let Some(summary) = edges.take() else {
            continue;
        };
        let frame = ProxyFrame::Summary { summary };
        if frames.send(Bytes::from(encode_line(&frame))).is_err() {
            return;
        }
    }
}

/// Stops a session's helper task with the session.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Applies a pushed snapshot; a version already serving (a reconnect) is only ACKed.
async fn apply(
    engine: &Engine,
    snapshot: ferry_model::Snapshot,
    reports: serde_json::Value,
) -> ProxyFrame {
    let version = snapshot.version;
    if engine.active().is_some_and(|s| s.version == version) {
        return ProxyFrame::Ack { version };
    }
    match engine.apply(snapshot, reports).await {
        Ok(_) => ProxyFrame::Ack { version },
        Err(reasons) => ProxyFrame::Nack { version, reasons },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_all_of_the_backoff() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(2));
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(2),
                "{d:?}"
            );
        }
    }
}
