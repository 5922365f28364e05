//! Istio's external authorization providers: `extensionProviders` of the mesh config (the
//! `mesh` key of the `istio` ConfigMap in the root namespace, as istiod reads it), named by
//! CUSTOM AuthorizationPolicies. `envoyExtAuthzHttp` providers on a Kubernetes Service are
//! served by the proxies' external-auth engine; anything Ferry cannot apply (a gRPC
//! provider, the request body in the check, a host no Service has) is an error the policy
//! fails closed on.

use std::collections::BTreeMap;

use ferry_model::{ExtAuth, ExtAuthProtocol, Str};
use serde::Deserialize;

use super::duration::parse_ms;
use super::Context;

/// The ConfigMap istiod reads the mesh config from, and its key.
const MESH_CONFIG_MAP: &str = "istio";
const MESH_KEY: &str = "mesh";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MeshConfig {
    #[serde(default)]
    extension_providers: Vec<Provider>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Provider {
    name: String,
    #[serde(default)]
    envoy_ext_authz_http: Option<HttpProvider>,
    #[serde(default)]
    envoy_ext_authz_grpc: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpProvider {
    service: String,
    port: u32,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    fail_open: bool,
    #[serde(default)]
    status_on_error: Option<String>,
    #[serde(default)]
    include_request_headers_in_check: Vec<String>,
    #[serde(default)]
    include_additional_headers_in_check: BTreeMap<String, String>,
    #[serde(default)]
    headers_to_upstream_on_allow: Vec<String>,
    #[serde(default)]
    headers_to_downstream_on_deny: Vec<String>,
    #[serde(default)]
    headers_to_downstream_on_allow: Vec<String>,
    #[serde(default)]
    headers_to_upstream_on_deny: Vec<String>,
    #[serde(default)]
    include_request_body_in_check: Option<serde_json::Value>,
    #[serde(default)]
    include_headers_in_check: Vec<String>,
}

/// The provider `name` of the mesh config, as the proxies' engine runs it; the error says
/// why it cannot be (the policy then fails closed).
pub fn provider(cx: &mut Context<'_>, name: &str) -> Result<ExtAuth, String> {
    let mesh = mesh_config(cx)?;
    let Some(provider) = mesh
        .extension_providers
        .into_iter()
        .find(|p| p.name == name)
    else {
        return Err(format!(
            "no extensionProviders entry named {name:?} in the mesh config (ConfigMap {}/{MESH_CONFIG_MAP}, key {MESH_KEY})",
            cx.options.root_namespace
        ));
    };
    if provider.envoy_ext_authz_grpc.is_some() {
        return Err(format!(
            "provider {name:?} is envoyExtAuthzGrpc, which Ferry does not speak yet"
        ));
    }
    let Some(http) = provider.envoy_ext_authz_http else {
        return Err(format!("provider {name:?} is not an ext_authz provider"));
    };
    http_provider(cx, name, http)
}

fn mesh_config(cx: &Context<'_>) -> Result<MeshConfig, String> {
    let root = &cx.options.root_namespace;
    let map = cx.inputs.config_maps.iter().find(|m| {
        m.metadata.name.as_deref() == Some(MESH_CONFIG_MAP)
            && m.metadata.namespace.as_deref() == Some(root.as_str())
    });
    let text = map
        .and_then(|m| m.data.as_ref()?.get(MESH_KEY))
        .filter(|t| !t.is_empty());
    let Some(text) = text else {
        return Err(format!(
            "no mesh config (ConfigMap {root}/{MESH_CONFIG_MAP} with key {MESH_KEY}) names extension providers"
        ));
    };
    serde_yaml::from_str(text).map_err(|e| format!("ConfigMap {root}/{MESH_CONFIG_MAP}: {e}"))
}

fn http_provider(cx: &mut Context<'_>, name: &str, http: HttpProvider) -> Result<ExtAuth, String> {
    if http.include_request_body_in_check.is_some() {
        return Err(format!(
            "provider {name:?}: includeRequestBodyInCheck is not supported yet"
        ));
    }
    let unapplied = [
        (
            "headersToDownstreamOnAllow",
            &http.headers_to_downstream_on_allow,
        ),
        ("headersToUpstreamOnDeny", &http.headers_to_upstream_on_deny),
    ];
    if let Some((field, _)) = unapplied.iter().find(|(_, list)| !list.is_empty()) {
        return Err(format!("provider {name:?}: {field} is not supported yet"));
    }
    let (namespace, service) = service_of(&http.service)
        .ok_or_else(|| format!("provider {name:?}: service {:?} is not a Kubernetes Service host (name.namespace.svc.cluster.local)", http.service))?;
    let cluster = cx
        .catalog
        .resolve(&namespace, &service, Some(http.port), None)
        .map_err(|e| format!("provider {name:?}: {e}"))?;
    let timeout_ms = match &http.timeout {
        Some(t) => Some(parse_ms(t).map_err(|e| format!("provider {name:?}: timeout: {e}"))?),
        None => None,
    };
    let status_on_error = match http.status_on_error.as_deref() {
        Some(s) => Some(
            s.parse::<u16>()
                .ok()
                .filter(|c| (200..=599).contains(c))
                .ok_or_else(|| format!("provider {name:?}: statusOnError {s:?} is not a status"))?,
        ),
        None => None,
    };
    let lower = |list: &[String]| -> std::sync::Arc<[Str]> {
        list.iter().map(|h| h.to_ascii_lowercase().into()).collect()
    };
    let mut request_headers: Vec<String> = http.include_request_headers_in_check.clone();
    request_headers.extend(http.include_headers_in_check.iter().cloned());
    Ok(ExtAuth {
        protocol: ExtAuthProtocol::Envoy,
        cluster: Some(cluster),
        path_prefix: http.path_prefix.unwrap_or_default().into(),
        request_headers: lower(&request_headers),
        response_headers: lower(&http.headers_to_upstream_on_allow),
        denial_headers: lower(&http.headers_to_downstream_on_deny),
        check_headers: http
            .include_additional_headers_in_check
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase().into(), v.as_str().into()))
            .collect(),
        timeout_ms,
        fail_open: http.fail_open,
        status_on_error,
        ..ExtAuth::default()
    })
}

/// `[namespace/]name.namespace.svc.cluster.local` (or `name.namespace[.svc]`): the
/// Service's namespace and name.
fn service_of(host: &str) -> Option<(String, String)> {
    let (given_namespace, host) = match host.split_once('/') {
        Some((ns, rest)) => (Some(ns), rest),
        None => (None, host),
    };
    let host = host.strip_suffix(".cluster.local").unwrap_or(host);
    let host = host.strip_suffix(".svc").unwrap_or(host);
    let parts: Vec<&str> = host.split('.').collect();
    match (parts.as_slice(), given_namespace) {
        ([name, namespace], _) => Some((namespace.to_string(), name.to_string())),
        ([name], Some(namespace)) => Some((namespace.to_string(), name.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::service_of;

    #[test]
    fn provider_services_name_a_kubernetes_service() {
        let s = |ns: &str, n: &str| Some((ns.to_string(), n.to_string()));
        assert_eq!(
            service_of("ext-authz.foo.svc.cluster.local"),
            s("foo", "ext-authz")
        );
        assert_eq!(
            service_of("foo/ext-authz.foo.svc.cluster.local"),
            s("foo", "ext-authz")
        );
        assert_eq!(service_of("ext-authz.foo"), s("foo", "ext-authz"));
        assert_eq!(service_of("foo/ext-authz"), s("foo", "ext-authz"));
        assert_eq!(service_of("auth.example.com"), None);
        assert_eq!(service_of("ext-authz"), None);
    }
}
