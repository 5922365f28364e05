//! Spans per request, exported with OTLP over HTTP (protobuf) when an endpoint is set.
//!
//! Sampling is decided here rather than by the SDK: a caller's decision (W3C flag, B3
//! sampled) is kept, otherwise `sampling_percent` of new traces are sampled, as Istio's
//! `sampling` does. Unsampled requests create no SDK span, only a new span id to propagate.

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, SdkTracerProvider, Span, Tracer};
use opentelemetry_sdk::Resource;
use std::time::{Duration, SystemTime};

use super::context::TraceContext;

#[derive(Clone, Debug)]
pub struct TracingOptions {
    /// OTLP/HTTP collector URL; `/v1/traces` is added when it has no path.
    pub endpoint: String,
    /// Share of new traces sampled, 0-100.
    pub sampling_percent: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: Tracer,
    sampling_percent: f64,
}

/// The span of one request: the context to propagate, and the SDK span when sampled.
pub struct RequestSpan {
    pub context: TraceContext,
    span: Option<Span>,
}

impl Tracing {
    /// Must run inside the Tokio runtime: the batch exporter is a task of it.
    pub fn start(options: &TracingOptions) -> Result<Tracing, String> {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(&options.endpoint))
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("OTLP exporter for {}: {e}", options.endpoint))?;
        let batch = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_millis(500))
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_resource(
                Resource::builder()
                    .with_service_name(options.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("ferry");
        Ok(Tracing {
            provider,
            tracer,
            sampling_percent: options.sampling_percent.clamp(0.0, 100.0),
        })
    }

    /// Starts the span of a request under `parent` (the caller's context, if any).
    pub fn start_span(
        &self,
        name: String,
        parent: Option<&TraceContext>,
        started: SystemTime,
    ) -> RequestSpan {
        let sampled = parent
            .and_then(|p| p.sampled)
            .unwrap_or_else(|| rand::random::<f64>() * 100.0 < self.sampling_percent);
        if !sampled {
            let context = match parent {
                Some(p) => p.child(rand::random(), false),
                None => TraceContext {
                    trace_id: rand::random::<u128>().max(1).to_be_bytes(),
                    span_id: rand::random::<u64>().max(1).to_be_bytes(),
                    sampled: Some(false),
                    tracestate: None,
                },
            };
            return RequestSpan {
                context,
                span: None,
            };
        }
        let parent_cx = parent.map_or_else(Context::new, |p| {
            Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(p.trace_id),
                SpanId::from_bytes(p.span_id),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ))
        });
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .start_with_context(&self.tracer, &parent_cx);
        let own = span.span_context();
        let context = TraceContext {
            trace_id: own.trace_id().to_bytes(),
            span_id: own.span_id().to_bytes(),
            sampled: Some(true),
            tracestate: parent.and_then(|p| p.tracestate.clone()),
        };
        RequestSpan {
            context,
            span: Some(span),
        }
    }

    /// Sends what is buffered; called on shutdown.
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

impl RequestSpan {
    /// A span that is never exported: tracing is off, only the ids are propagated.
    pub fn untraced(context: TraceContext) -> RequestSpan {
        RequestSpan {
            context,
            span: None,
        }
    }

    /// Ends the span; its name is known only now (the route matched).
    pub fn finish(
        mut self,
        name: String,
        attributes: Vec<KeyValue>,
        error: bool,
        ended: SystemTime,
    ) {
        if let Some(span) = self.span.as_mut() {
            span.update_name(name);
            span.set_attributes(attributes);
            if error {
                span.set_status(opentelemetry::trace::Status::error(""));
            }
            span.end_with_timestamp(ended);
        }
    }
}

fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let has_path = trimmed
        .split_once("://")
        .is_some_and(|(_, rest)| rest.contains('/'));
    if has_path {
        trimmed.to_string()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_url_gets_the_traces_path_only_when_it_has_none() {
        assert_eq!(traces_url("http://otel:4318"), "http://otel:4318/v1/traces");
        assert_eq!(
            traces_url("http://otel:4318/"),
            "http://otel:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://otel:4318/custom"),
            "http://otel:4318/custom"
        );
    }
}
