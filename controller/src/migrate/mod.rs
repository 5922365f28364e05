//! `ferry migrate`: Ingresses, with their ingress-nginx annotations, as Gateway API objects
//! that Ferry serves the same way: per namespace and class a Gateway (an HTTP listener, an
//! HTTPS listener per TLS host), per Ingress rule an HTTPRoute, and a LocalRateLimitPolicy
//! for `limit-rps` / `limit-rpm`. What has no Gateway API form is named in a [`Note`] with
//! the reason, never dropped silently.

mod route;

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;
use serde_json::{json, Value};

use crate::translate::ingress_nginx::{self as nginx, Settings};
use crate::Inputs;

pub struct MigrateOptions {
    /// The GatewayClass of the Gateways written.
    pub gateway_class: String,
    pub http_port: u16,
    pub https_port: u16,
    /// Ingress classes converted (comma-separated; class-less Ingresses always are).
    pub ingress_classes: String,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            gateway_class: "ferry".into(),
            http_port: 80,
            https_port: 443,
            ingress_classes: "ferry,nginx".into(),
        }
    }
}

/// What the conversion wrote and what it could not.
#[derive(Default)]
pub struct Migration {
    pub objects: Vec<Value>,
    pub notes: Vec<Note>,
}

/// Something of an Ingress the written objects do not carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// `Ingress namespace/name`.
    pub object: String,
    pub field: String,
    pub message: String,
    /// Access control or TLS: the written objects are more open than the Ingress.
    pub security: bool,
}

/// One Ingress to convert, with its annotations read.
pub(crate) struct Source<'i> {
    pub ingress: &'i Ingress,
    pub namespace: String,
    pub name: String,
    pub settings: Settings,
    /// The Gateway (name) its routes attach to.
    pub gateway: String,
    /// Of ingress-nginx's class.
    pub nginx_class: bool,
    /// Another Ingress of one of its hosts asks for `use-regex`: ingress-nginx reads this
    /// one's paths as regexes too.
    pub host_regex: bool,
}

pub fn migrate(inputs: &Inputs, options: &MigrateOptions) -> Migration {
    let mut out = Migration::default();
    let sources = sources(inputs, options, &mut out.notes);
    let mut gateways: BTreeMap<(String, String), Vec<&Source>> = BTreeMap::new();
    for source in sources.iter().filter(|s| s.settings.canary.is_none()) {
        let key = (source.namespace.clone(), source.gateway.clone());
        gateways.entry(key).or_default().push(source);
    }
    let canaries: Vec<&Source> = sources
        .iter()
        .filter(|s| s.settings.canary.is_some())
        .collect();
    for ((namespace, name), members) in &gateways {
        out.objects.push(gateway(namespace, name, members, options));
        if let Some(first) = members.iter().find(|m| m.nginx_class) {
            let message = format!("ingress-nginx's defaults for its class — a 1 MiB request body limit and a 5 s connect timeout — have no Gateway API form (Gateway {namespace}/{name}: ferry gateway --max-request-body; a DestinationRule's connectTimeout)");
            out.notes
                .push(note(first, "spec.ingressClassName", &message, false));
        }
        for source in members {
            route::convert(inputs, source, &canaries, options, &mut out);
        }
    }
    for canary in sources.iter().filter(|s| s.settings.canary.is_some()) {
        if !gateways
            .values()
            .flatten()
            .any(|main| route::has_main(main, canary))
        {
            out.notes.push(note(
                canary,
                "spec.rules",
                "a canary without a main Ingress serving its host and path",
                false,
            ));
        }
    }
    out
}

fn sources<'i>(
    inputs: &'i Inputs,
    options: &MigrateOptions,
    notes: &mut Vec<Note>,
) -> Vec<Source<'i>> {
    let mut out = Vec::new();
    for ingress in &inputs.ingresses {
        let Some(served) =
            crate::translate::ingress_class::served(inputs, ingress, &options.ingress_classes)
        else {
            continue;
        };
        let (mut settings, findings) = nginx::read(ingress);
        let (requests, connections) =
            crate::translate::ingress_class::limit_statuses(inputs, ingress);
        (settings.limit_req_status, settings.limit_conn_status) =
            (Some(requests), Some(connections));
        if served.nginx {
            // Its HTTPS redirect has a Gateway API form; its other defaults are one note
            // per Gateway (see `migrate`).
            settings.ssl_redirect.get_or_insert(true);
        }
        let class = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.clone())
            .unwrap_or_else(|| "ingress".into());
        let source = Source {
            ingress,
            namespace: ingress
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: ingress.metadata.name.clone().unwrap_or_default(),
            settings,
            gateway: class,
            nginx_class: served.nginx,
            host_regex: false,
        };
        let mut blocked = findings.iter().any(|f| f.blocks);
        if let Some((annotation, message)) = unconvertible_access(&source.settings) {
            // Written without it, the routes would let in whom the Ingress keeps out.
            let field = nginx::registry::field(annotation);
            notes.push(note(&source, &field, message, true));
            blocked = true;
        }
        for finding in findings {
            let field = nginx::registry::field(&finding.name);
            let message = match finding.blocks {
                true => format!("{} — the Ingress is not converted", finding.message),
                false => finding.message,
            };
            notes.push(note(&source, &field, &message, finding.blocks));
        }
        if !blocked {
            out.push(source);
        }
    }
    // ingress-nginx reads every path of a host as a regex once one Ingress there asks.
    let regex_hosts = nginx::regex_hosts(out.iter().map(|s| (s.ingress, &s.settings)));
    for source in &mut out {
        let hosts = nginx::hosts_of(source.ingress);
        source.host_regex = hosts.iter().any(|h| regex_hosts.contains(h));
    }
    out
}

/// Access control of the Ingress that Gateway API cannot say: such an Ingress is left as it
/// is (Ferry serves Ingresses and Gateway API side by side).
fn unconvertible_access(settings: &Settings) -> Option<(&'static str, &'static str)> {
    if settings.ext_auth.is_some() {
        return Some(("auth-url", "external authentication is not converted: Gateway API's ExternalAuth filter speaks Envoy's ext_authz protocol (the request's method and path), not nginx's auth_request (a GET to a fixed URL with X-Original-URL) that this auth service answers; the Ingress is not converted, keep it as it is"));
    }
    if settings.ssl_passthrough {
        return Some(("ssl-passthrough", "TLS passthrough is a Gateway listener of protocol TLS (mode Passthrough) with a TLSRoute per host, which this converter does not write yet: the Ingress is not converted; keep it as it is"));
    }
    if settings.basic_auth_secret.is_some() {
        return Some(("auth-type", "basic authentication has no Gateway API form: the Ingress is not converted; keep it as it is"));
    }
    if settings.backend_protocol.originates_tls() {
        return Some(("backend-protocol", "TLS to the backend is not converted (a BackendTLSPolicy verifies with a CA in a ConfigMap; proxy-ssl-* have no form): the Ingress is not converted; keep it as it is"));
    }
    if !settings.allow_sources.is_empty() || !settings.deny_sources.is_empty() {
        return Some(("whitelist-source-range", "source ranges have no Gateway API form: the Ingress is not converted; keep it as it is"));
    }
    None
}

pub(crate) fn note(source: &Source, field: &str, message: &str, security: bool) -> Note {
    Note {
        object: format!("Ingress {}/{}", source.namespace, source.name),
        field: field.to_string(),
        message: message.to_string(),
        security,
    }
}

/// The Gateway of one namespace and class: HTTP, and HTTPS for each TLS host.
fn gateway(namespace: &str, name: &str, members: &[&Source], options: &MigrateOptions) -> Value {
    let mut listeners = vec![json!({
        "name": "http", "port": options.http_port, "protocol": "HTTP",
        "allowedRoutes": {"namespaces": {"from": "Same"}},
    })];
    let mut seen = std::collections::BTreeSet::new();
    for source in members {
        for (host, secret) in route::tls_hosts(source.ingress) {
            if !seen.insert(host.clone()) {
                continue;
            }
            let mut listener = json!({
                "name": route::https_listener(&host), "port": options.https_port, "protocol": "HTTPS",
                "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secret}]},
                "allowedRoutes": {"namespaces": {"from": "Same"}},
            });
            if host != "*" {
                listener["hostname"] = host.into();
            }
            listeners.push(listener);
        }
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"gatewayClassName": options.gateway_class, "listeners": listeners},
    })
}

/// The objects as one YAML stream, with the notes as comments on top.
pub fn to_yaml(migration: &Migration) -> String {
    let mut text = String::new();
    for note in &migration.notes {
        let mark = if note.security {
            "NOT CONVERTED (security)"
        } else {
            "not converted"
        };
        text.push_str(&format!(
            "# {mark}: {} {}: {}\n",
            note.object, note.field, note.message
        ));
    }
    let docs: Vec<String> = migration
        .objects
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("JSON values serialize"))
        .collect();
    text.push_str(&docs.join("---\n"));
    text
}
