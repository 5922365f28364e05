//! Who may open a push stream or get a certificate, and for which scope.
//!
//! Every request on the controller's port carries the proxy's ServiceAccount token
//! (`Authorization: Bearer`); the authenticator says whose it is. A proxy is then served only
//! what its identity may have: a sidecar its own namespace's mesh scope, a gateway the
//! Gateway its ServiceAccount runs (same namespace, ServiceAccount named after the Gateway as
//! the chart creates it, or `<gateway>-ferry` as the controller deploys it), and TLS private keys only from its
//! own namespace; the keys of Ingress TLS hosts (cluster-wide, as any ingress controller
//! reads them) only to gateways in the controller's own namespace, where the chart runs them.

use ferry_model::push::Scope;
use futures::future::BoxFuture;
use prometheus::{IntCounterVec, Opts, Registry};

use crate::ca::tokens::{Caller, TokenReviewer};

/// Says whose a token is. The controller uses the API server's TokenReview.
pub trait Authenticate: Send + Sync {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, String>>;
}

impl Authenticate for TokenReviewer {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, String>> {
        Box::pin(self.review(token))
    }
}

/// Why a request was refused, as the metric labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token.
    NoToken,
    /// The token was not accepted (unknown, expired, wrong audience, not a ServiceAccount).
    BadToken,
    /// The identity may not have the scope it asked for.
    NotEntitled,
    /// The request itself was unusable (bad hello, bad CSR, too large).
    BadRequest,
    /// Too many connections.
    Overloaded,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NoToken => "no_token",
            Refusal::BadToken => "bad_token",
            Refusal::NotEntitled => "not_entitled",
            Refusal::BadRequest => "bad_request",
            Refusal::Overloaded => "overloaded",
        }
    }
}

pub fn refusal_counter(registry: &Registry) -> IntCounterVec {
    let counter = IntCounterVec::new(
        Opts::new(
            "ferry_controller_refused_total",
            "Requests on the controller's port refused, by reason",
        ),
        &["reason"],
    )
    .expect("valid metric");
    registry
        .register(Box::new(counter.clone()))
        .expect("registered once");
    counter
}

/// The bearer token of a request, if any.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then_some(token)
}

/// Whether `caller` may subscribe to `scope`; on success the scope comes back with the
/// caller's namespace set, which limits the private keys its snapshot may carry.
pub fn entitled_scope(
    caller: &Caller,
    scope: &Scope,
    ingress_namespace: &str,
) -> Result<Scope, String> {
    if let Some(namespace) = &scope.mesh_namespace {
        if **namespace != *caller.namespace {
            return Err(format!(
                "{caller} asked for the mesh scope of namespace {namespace}: a sidecar gets \
                 its own namespace's only"
            ));
        }
        if !scope.gateway.is_empty() {
            return Err(format!("{caller}: a sidecar scope cannot name a Gateway"));
        }
    }
    if let Some((namespace, name)) = scope.gateway.split_once('/') {
        let accounts = [name.to_string(), crate::deploy::object_name(name)];
        if namespace != caller.namespace || !accounts.contains(&caller.service_account) {
            return Err(format!(
                "{caller} asked for Gateway {}: only ServiceAccount {namespace}/{name} may \
                 serve it",
                scope.gateway
            ));
        }
    } else if !scope.gateway.is_empty() {
        return Err(format!("Gateway {:?} is not namespace/name", scope.gateway));
    }
    let mut entitled = scope.clone();
    entitled.workload_namespace = Some(caller.namespace.as_str().into());
    if entitled.ingress_tls_port != 0 && caller.namespace != ingress_namespace {
        tracing::warn!(
            %caller,
            "Ingress TLS hosts are served by gateways in namespace {ingress_namespace} only; \
             this proxy gets Ingress plain HTTP"
        );
        entitled.ingress_tls_port = 0;
    }
    Ok(entitled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(namespace: &str, service_account: &str) -> Caller {
        Caller {
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    #[test]
    fn sidecars_get_their_namespace_and_gateways_their_own_gateway() {
        let mesh = Scope {
            mesh_namespace: Some("weather".into()),
            ..Scope::default()
        };
        let granted = entitled_scope(&caller("weather", "default"), &mesh, "ferry").unwrap();
        assert_eq!(granted.workload_namespace.as_deref(), Some("weather"));
        assert!(entitled_scope(&caller("shop", "default"), &mesh, "ferry").is_err());

        let gateway = Scope {
            gateway: "infra/public".into(),
            ..Scope::default()
        };
        assert!(entitled_scope(&caller("infra", "public"), &gateway, "ferry").is_ok());
        assert!(entitled_scope(&caller("infra", "public-ferry"), &gateway, "ferry").is_ok());
        assert!(entitled_scope(&caller("infra", "other-ferry"), &gateway, "ferry").is_err());
        assert!(entitled_scope(&caller("infra", "default"), &gateway, "ferry").is_err());
        assert!(entitled_scope(&caller("weather", "public"), &gateway, "ferry").is_err());
        let sidecar_asking_for_gateway = Scope {
            mesh_namespace: Some("infra".into()),
            ..gateway.clone()
        };
        assert!(entitled_scope(
            &caller("infra", "public"),
            &sidecar_asking_for_gateway,
            "ferry"
        )
        .is_err());
    }

    #[test]
    fn the_namespace_set_by_the_proxy_is_replaced_by_its_identitys() {
        let scope = Scope {
            workload_namespace: Some("kube-system".into()),
            ingress_tls_port: 8443,
            ..Scope::default()
        };
        let granted = entitled_scope(&caller("edge", "ingress"), &scope, "ferry").unwrap();
        assert_eq!(granted.workload_namespace.as_deref(), Some("edge"));
        assert_eq!(
            granted.ingress_tls_port, 0,
            "Ingress keys: controller's namespace only"
        );
        let granted = entitled_scope(&caller("ferry", "gateway"), &scope, "ferry").unwrap();
        assert_eq!(granted.ingress_tls_port, 8443);
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert("authorization", "Bearer abc.def".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc.def"));
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }
}
