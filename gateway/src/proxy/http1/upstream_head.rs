//! The upstream request head: request line, the client's end-to-end headers, the route's
//! header filters and rewrites, and the forwarding headers, in the order Pingora's path applies
//! them. Written once per request; each try only adds the final line.

use ferry_model::Filter;

use super::head::RequestHead;
use super::write::{self, HeaderEdits};
use super::{Conn, Http1Proxy};
use crate::header_lookup;
use crate::proxy::{ip_text, RequestCtx};
use crate::rewrite::{apply_header_mods, rewrite_path, EditHeaders};
use crate::telemetry::context as trace_context;

impl Http1Proxy {
    /// The upstream request head, less its final line (`Connection: close` may join it per
    /// try): request line, end-to-end headers, route filters, forwarding headers.
    pub(super) fn build_upstream_head(&self, conn: &mut Conn, ctx: &RequestCtx) {
        conn.edits.clear();
        if ctx.inbound.is_some() && ctx.peer_identity.is_none() {
            // Only a mesh peer's x-forwarded-client-cert reaches the app.
            conn.edits.remove("x-forwarded-client-cert");
        }
        crate::proxy::jwt::apply(&ctx.auth_edits, &mut conn.edits);
        request_id_header(conn, ctx);
        self.route_filters_and_path(conn, ctx);
    }

    /// Route filters (header modifiers, rewrites), then the forwarding headers over them as
    /// Pingora's path orders them; writes the head.
    fn route_filters_and_path(&self, conn: &mut Conn, ctx: &RequestCtx) {
        let bytes = &conn.buf[..conn.head.len];
        let (path, query) = conn.head.path_and_query(bytes);
        let mut new_path = None;
        if conn.head.host.is_none() && conn.head.authority.is_none() {
            // HTTP/1.0 without Host: the upstream request is HTTP/1.1, which needs one; the
            // target's authority is then the address the client connected to (RFC 9112 3.3).
            if let Some(local) = conn.local {
                conn.edits.set_own("host", local.to_string());
            }
        }
        if let Some(route) = &ctx.route {
            for filter in route.filters_for(ctx.backend) {
                match filter {
                    Filter::RequestHeaders(mods) => apply_header_mods(&mut conn.edits, mods),
                    Filter::Rewrite(rewrite) => {
                        if let Some(rewrite) = &rewrite.path {
                            let current = new_path.as_deref().unwrap_or(path);
                            new_path =
                                Some(rewrite_path(rewrite, &route.route.matcher.path, current));
                        }
                        if let Some(host) = &rewrite.host {
                            conn.edits.set("host", host);
                        }
                    }
                    Filter::ResponseHeaders(_) | Filter::Mirror(_) => {}
                }
            }
        }
        trace_headers(&mut conn.edits, ctx);
        forwarding_headers(&mut conn.edits, &conn.head, bytes, conn.client, conn.tls);
        let out = &mut conn.out;
        out.clear();
        out.extend_from_slice(conn.head.method.of(bytes));
        out.push(b' ');
        match &new_path {
            Some(path) => {
                out.extend_from_slice(path.as_bytes());
                if let Some(query) = query {
                    out.push(b'?');
                    out.extend_from_slice(query.as_bytes());
                }
            }
            None => {
                let target = conn.head.target.of(bytes);
                if !target.starts_with(b"/") {
                    out.push(b'/'); // absolute form without a path
                }
                out.extend_from_slice(target);
            }
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        write::write_headers(
            out,
            bytes,
            &conn.head.headers,
            &conn.edits,
            conn.head.connection_names_others,
        );
    }
}

/// A random (v4) UUID as text, written without the `fmt` machinery.
pub(super) fn new_request_id() -> String {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut text)
        .to_string()
}

/// A request without an id gets the one this proxy gave it, as Pingora's path adds it before
/// the route's filters run.
fn request_id_header(conn: &mut Conn, ctx: &RequestCtx) {
    let lookup = conn.head.lookup(&conn.buf[..conn.head.len]);
    if header_lookup::first_text(&lookup, "x-request-id").is_none_or(str::is_empty) {
        if let Some(id) = &ctx.request_id {
            conn.edits.set_own("x-request-id", id.clone());
        }
    }
}

/// With tracing on, the trace headers upstream name this proxy's span, over what a route
/// filter set (`observe::propagate` on Pingora's path).
fn trace_headers(edits: &mut HeaderEdits, ctx: &RequestCtx) {
    if let (true, Some(span)) = (ctx.tracing, &ctx.span) {
        trace_context::inject(&span.context, ctx.trace_formats, |name, value| {
            edits.set_own(name, value)
        });
    }
}

/// X-Forwarded-For gets the client appended and X-Forwarded-Proto the scheme (over whatever a
/// filter set, as on Pingora's path); an absolute-form target's authority replaces Host (RFC
/// 9112 3.2.2).
fn forwarding_headers(
    edits: &mut HeaderEdits,
    head: &RequestHead,
    bytes: &[u8],
    client: Option<std::net::SocketAddr>,
    tls: bool,
) {
    if let Some(client) = client {
        let ip = ip_text(client.ip());
        let value = match header_lookup::joined(&head.lookup(bytes), "x-forwarded-for") {
            Some(existing) => format!("{existing}, {ip}"),
            None => ip,
        };
        edits.set_own("x-forwarded-for", value);
    }
    edits.set_own("x-forwarded-proto", if tls { "https" } else { "http" });
    if let Some(authority) = head.authority {
        edits.set_own("host", authority.text(bytes).to_string());
    }
}
