//! External authentication: before a request is forwarded, an HTTP service is asked about
//! it, in one of two protocols — nginx's `auth_request` ([`nginx`], ingress-nginx
//! `auth-url`) or Envoy's HTTP ext_authz ([`envoy`], Gateway API `ExternalAuth`). Either
//! way the request never goes out unchecked: no answer is a refusal. Both HTTP paths call
//! [`authorize`] after `decide`.

mod envoy;
mod nginx;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use ferry_model::{ExtAuth, ExtAuthProtocol};
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::decide::Reply;
use super::facts::RequestFacts;
use crate::compiled::CompiledSnapshot;

/// The whole check, answer included.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Request headers never passed to the auth service (hop-by-hop, body framing: the check
/// has no body).
const NOT_PASSED: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "content-length",
    "expect",
    "host",
];

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// One pooled client for every check (and for error pages): `http://`, or `https://`
/// verified against the system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set).
pub(super) fn client() -> &'static Client<Connector, Empty<Bytes>> {
    static CLIENT: OnceLock<Client<Connector, Empty<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert); // a system bundle may hold certificates webpki rejects
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .build();
        Client::builder(TokioExecutor::new()).build(connector)
    })
}

/// For a forwarded request whose route asks for external authentication: the answer's
/// header edits join the request's, or the reply the client gets instead.
pub async fn authorize(
    snapshot: &CompiledSnapshot,
    forward: &mut super::decide::Forward,
    req: &RequestFacts<'_>,
) -> Option<Reply> {
    let custom = forward.custom_authz.take();
    if forward.route.route.policy.ext_auth.is_none() && custom.is_none() {
        return None; // most requests: nothing more to do
    }
    let route = forward.route.clone();
    // A CUSTOM AuthorizationPolicy's provider first (Istio evaluates CUSTOM before the rest).
    let custom = custom.and_then(|i| snapshot.source.authorization.get(i));
    if let Some(policy) = custom {
        let Some(provider) = policy.provider.as_ref() else {
            let cause = format!("UAEX {}: CUSTOM policy without a provider", policy.meta);
            return Some(super::decide::Decision::reply(403, cause).for_route(&route));
        };
        match envoy::check(snapshot, provider, req, &policy.meta).await {
            Ok(edits) => forward.auth_edits.extend(edits),
            Err(reply) => return Some(reply.for_route(&route)),
        }
    }
    if forward.access_granted {
        return None; // `satisfy any`: another access check passed
    }
    let auth = route.route.policy.ext_auth.as_ref()?;
    let meta = &route.route.meta;
    let verdict = match auth.protocol {
        ExtAuthProtocol::Nginx => {
            let scheme = if req.tls.is_some() { "https" } else { "http" };
            nginx::check(auth, req, scheme, meta).await
        }
        ExtAuthProtocol::Envoy => envoy::check(snapshot, auth, req, meta).await,
    };
    match verdict {
        Ok(edits) => {
            forward.auth_edits.extend(edits);
            None
        }
        Err(reply) => Some(reply.for_route(&route)),
    }
}

/// `http://address` of an endpoint of the auth service's cluster. A cluster reached over
/// TLS or mesh mTLS is an error: the check client speaks plain HTTP/1.1, and a check that
/// cannot be made refuses the request.
fn service_base(snapshot: &CompiledSnapshot, auth: &ExtAuth) -> Result<String, String> {
    let Some(name) = &auth.cluster else {
        return Ok(auth.url.to_string());
    };
    let cluster = snapshot
        .cluster(name)
        .ok_or_else(|| format!("cluster {name} missing"))?;
    if cluster.tls.is_some() {
        return Err(format!(
            "{name} is reached over TLS, which the check client does not speak"
        ));
    }
    let (_, endpoint) = cluster
        .pick(None, &[])
        .ok_or_else(|| format!("no ready endpoints in {name}"))?;
    if endpoint.mtls.is_some() {
        return Err(format!(
            "{name} needs mesh mTLS, which the check client does not speak"
        ));
    }
    Ok(format!("http://{}", endpoint.address))
}
