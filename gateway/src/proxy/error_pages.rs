//! ingress-nginx's `custom-http-errors` with its `default-backend`: an upstream answer with
//! one of the route's codes is not relayed; the client gets the error backend's answer to a
//! `GET /` (HEAD for a HEAD) that names what happened in `X-Code`, `X-Format` (the client's
//! Accept), `X-Original-URI`, `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`,
//! `X-Service-Port` and `X-Request-ID`, as nginx's `error_page` location does. Both HTTP
//! paths call [`page`] once the upstream's status is known (after retries).

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};

use super::decide::{Decision, Reply};
use crate::compiled::{CompiledCluster, CompiledRoute, CompiledSnapshot};

const TIMEOUT: Duration = Duration::from_secs(5);
/// Error pages larger than this are cut (they are small HTML or JSON documents).
const MAX_PAGE: usize = 1 << 20;

/// What the error backend is told of the request.
pub struct Original<'a> {
    pub host: &'a str,
    /// Path and query, as the client sent them.
    pub uri: &'a str,
    pub accept: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub head: bool,
}

/// Whether the route replaces an upstream answer of `status` with an error page.
pub fn intercepts(route: Option<&CompiledRoute>, status: u16) -> bool {
    route
        .and_then(|r| r.route.policy.error_pages.as_ref())
        .is_some_and(|pages| pages.codes.contains(&status))
}

/// The reply for an upstream answer of `status` that `route` replaces: the error backend's
/// answer, or `status` with a plain body when the error backend gives none.
pub async fn page(
    snapshot: &CompiledSnapshot,
    route: &CompiledRoute,
    upstream: Option<&CompiledCluster>,
    status: u16,
    original: &Original<'_>,
) -> Reply {
    let meta = &route.route.meta;
    let unavailable = |why: String| {
        Decision::reply(
            status,
            format!("EP {meta}: no custom error page for {status}: {why}"),
        )
    };
    let Some(pages) = route.route.policy.error_pages.as_ref() else {
        return unavailable("no error backend".into());
    };
    let Some((_, endpoint)) = snapshot
        .cluster(&pages.cluster)
        .and_then(|c| c.pick(None, &[]))
    else {
        return unavailable(format!("no ready endpoints in {}", pages.cluster));
    };
    let request = match page_request(route, upstream, status, original, endpoint.address) {
        Ok(request) => request,
        Err(e) => return unavailable(e),
    };
    let response =
        match tokio::time::timeout(TIMEOUT, super::ext_auth::client().request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return unavailable(e.to_string()),
            Err(_) => return unavailable("no answer in time".into()),
        };
    let page_status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = Limited::new(response.into_body(), MAX_PAGE).collect();
    let body = match tokio::time::timeout(TIMEOUT, body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ => return unavailable("the page did not arrive whole".into()),
    };
    let cause = format!(
        "EP {meta}: upstream answered {status}; custom error page from {}",
        pages.cluster
    );
    let mut reply = Decision::reply(page_status, cause);
    reply.body = String::from_utf8_lossy(&body).into_owned();
    reply.relay_headers(&headers, |_| true);
    reply
}

fn page_request(
    route: &CompiledRoute,
    upstream: Option<&CompiledCluster>,
    status: u16,
    original: &Original<'_>,
    address: std::net::SocketAddr,
) -> Result<http::Request<Empty<Bytes>>, String> {
    let meta = &route.route.meta;
    let method = if original.head { "HEAD" } else { "GET" };
    let (service, port) = upstream
        .map(|c| {
            (
                c.cluster.service.name.to_string(),
                service_port(&c.cluster.name),
            )
        })
        .unwrap_or_default();
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("http://{address}/"))
        .header("host", original.host)
        .header("x-code", status.to_string())
        .header("x-format", original.accept.unwrap_or("text/html"))
        .header("x-original-uri", original.uri)
        .header("x-namespace", &*meta.namespace)
        .header("x-ingress-name", &*meta.name)
        .header("x-service-name", service)
        .header("x-service-port", port);
    if let Some(id) = original.request_id {
        builder = builder.header("x-request-id", id);
    }
    if let Some(ip) = original.client_ip {
        builder = builder.header("x-forwarded-for", ip.to_string());
    }
    builder.body(Empty::new()).map_err(|e| e.to_string())
}

/// The Service port of a cluster named `namespace/name:port[@variant]`.
fn service_port(cluster: &str) -> String {
    let base = cluster.split('@').next().unwrap_or(cluster);
    base.rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_service_port_is_read_from_the_cluster_name() {
        assert_eq!(super::service_port("web/app:8080"), "8080");
        assert_eq!(super::service_port("web/app:80@Ingress/web/shop"), "80");
        assert_eq!(super::service_port("odd"), "");
    }
}
