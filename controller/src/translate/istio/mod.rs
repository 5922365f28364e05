//! Istio networking: Gateway servers selected by labels, VirtualServices bound to them.

mod auto_passthrough;
pub(crate) mod destination;
pub(crate) mod entries;
mod http;
pub(crate) mod mesh;
mod mesh_stream;
mod policy;
pub(crate) mod sidecar;
mod stream;

use ferry_model::{Action, Meta, Redirect, RedirectPort, Route, ServerCertificate, Str};
use std::collections::BTreeSet;

use super::hosts::intersect;
use super::labels::pairs_cover;
use super::report::Condition;
use super::table::{PortProtocol, RouteOrder};
use super::tls::secret_certificate;
use super::{meta_of, Context};
use crate::inputs::istio::{Gateway, Server, VirtualService};

/// An Istio Gateway this proxy serves, reduced to its HTTP servers.
struct ServedGateway {
    /// `namespace/name`, as VirtualService `gateways` entries name it.
    key: String,
    servers: Vec<ServedServer>,
}

struct ServedServer {
    port: u16,
    protocol: PortProtocol,
    /// (namespace restriction, host): `None` = any namespace.
    hosts: Vec<(Option<String>, String)>,
    /// `tls.httpsRedirect` on a plain server: every route there answers 301 to https.
    https_redirect: bool,
    /// `tls.mode: AUTO_PASSTHROUGH`: routed by the mesh's `outbound_` server names.
    auto_passthrough: bool,
}

/// One http[] entry expanded per match, with the gateways the match is limited to.
pub(super) struct CompiledHttp {
    pub rule: usize,
    pub matched: usize,
    pub route: Route,
    pub gateways: Vec<String>,
}

impl CompiledHttp {
    /// Istio is first-match: VirtualServices by creation time (then input order), entries
    /// and matches in document order.
    pub(super) fn order(&self, age: &(bool, String), load: usize) -> RouteOrder {
        RouteOrder {
            family: 1,
            age: age.clone(),
            load,
            rule: self.rule,
            matched: self.matched,
            ..RouteOrder::default()
        }
    }
}

pub(crate) fn translate(cx: &mut Context<'_>) {
    validate_destination_rules(cx);
    let gateways: Vec<ServedGateway> = cx
        .inputs
        .istio_gateways
        .iter()
        .filter(|g| pairs_cover(&g.spec.selector, &cx.options.gateway_labels))
        .map(|g| served_gateway(cx, g))
        .collect();
    if gateways.is_empty() {
        return;
    }
    // Several VirtualServices for one host merge in creation order (document order as tie-break).
    let mut services: Vec<(usize, &VirtualService)> =
        cx.inputs.virtual_services.iter().enumerate().collect();
    services.sort_by_key(|(load, vs)| (RouteOrder::age_of(&vs.metadata), *load));
    for (load, vs) in services {
        translate_virtual_service(cx, &gateways, vs, load);
    }
}

/// Reports invalid DestinationRule policies even when no route uses the rule yet.
fn validate_destination_rules(cx: &mut Context<'_>) {
    for dr in &cx.inputs.destination_rules {
        let subsets =
            std::iter::once(None).chain(dr.spec.subsets.iter().map(|s| Some(s.name.as_str())));
        for subset in subsets {
            if let Err((field, message)) = destination::cluster_policy(dr, subset, 0) {
                let meta = meta_of("DestinationRule", &dr.metadata);
                cx.reports.push(
                    &meta,
                    Condition::error("Valid", "Invalid", message).field(field),
                );
            }
        }
    }
}

fn served_gateway(cx: &mut Context<'_>, gateway: &Gateway) -> ServedGateway {
    let meta = meta_of("Gateway.networking.istio.io", &gateway.metadata);
    let mut servers = Vec::new();
    for (index, server) in gateway.spec.servers.iter().enumerate() {
        let field = format!("spec.servers[{index}]");
        match serve_server(cx, &meta, server, &field) {
            Ok(served) if served.auto_passthrough => {
                auto_passthrough::place(cx, &meta, &served, &field);
                servers.push(served)
            }
            Ok(served) => servers.push(served),
            Err(condition) => cx.reports.push(&meta, condition),
        }
    }
    cx.reports.push(
        &meta,
        Condition::ok(
            "Valid",
            "Accepted",
            format!("{} server(s) served", servers.len()),
        ),
    );
    ServedGateway {
        key: format!("{}/{}", meta.namespace, meta.name),
        servers,
    }
}

/// Declares one server's port (and certificate) in the route table, or says why it is not
/// served. HTTPS needs `tls.mode: SIMPLE` with a `credentialName` Secret in the gateway
/// proxy's namespace (the Gateway's own when that is not known).
fn serve_server(
    cx: &mut Context<'_>,
    meta: &Meta,
    server: &Server,
    field: &str,
) -> Result<ServedServer, Condition> {
    let Ok(port) = u16::try_from(server.port.number) else {
        return Err(
            Condition::error("Valid", "UnsupportedValue", "port number out of range")
                .field(format!("{field}.port.number")),
        );
    };
    let hosts = server_hosts(&server.hosts, &meta.namespace);
    let protocol = server.port.protocol.to_ascii_uppercase();
    let mut validation = None;
    let tls_mode = server.tls.as_ref().and_then(|t| t.mode.as_deref());
    let (port_protocol, certificates) = match protocol.as_str() {
        "HTTP" | "HTTP2" | "GRPC" | "" => (PortProtocol::Http, Vec::new()),
        "HTTPS" if tls_mode == Some("ISTIO_MUTUAL") => (PortProtocol::Https, Vec::new()),
        "HTTPS" => {
            let names = hosts.iter().map(|(_, h)| Str::from(h.as_str())).collect();
            let certificates = server_certificates(cx, meta, server, field, names)?;
            validation = client_validation(cx, meta, server, field)?;
            (PortProtocol::Https, certificates)
        }
        // Istio's default mode is PASSTHROUGH.
        "TLS" if matches!(tls_mode, None | Some("PASSTHROUGH")) => {
            (PortProtocol::TlsPassthrough, Vec::new())
        }
        "TLS" if tls_mode == Some("AUTO_PASSTHROUGH") => (PortProtocol::TlsPassthrough, Vec::new()),
        "TLS" => {
            let names = hosts.iter().map(|(_, h)| Str::from(h.as_str())).collect();
            let certificates = server_certificates(cx, meta, server, field, names)?;
            validation = client_validation(cx, meta, server, field)?;
            (PortProtocol::TlsTerminate, certificates)
        }
        "TCP" | "MONGO" | "MYSQL" | "REDIS" => (PortProtocol::Tcp, Vec::new()),
        other => {
            let message =
                format!("server protocol {other} is not supported (HTTP, HTTPS, GRPC, HTTP2, TLS and TCP are); server ignored");
            return Err(Condition::warn("Valid", "UnsupportedProtocol", message)
                .field(format!("{field}.port.protocol")));
        }
    };
    cx.table
        .listener(port, meta, port_protocol)
        .map_err(|message| {
            Condition::warn(
                "Valid",
                "PortConflict",
                format!("{message}; server ignored"),
            )
            .field(format!("{field}.port"))
        })?;
    if tls_mode == Some("ISTIO_MUTUAL") {
        cx.table.mesh_tls(port, meta).map_err(|message| {
            Condition::warn(
                "Valid",
                "PortConflict",
                format!("{message}; server ignored"),
            )
            .field(format!("{field}.tls.mode"))
        })?;
    } else if !certificates.is_empty() {
        if let Some(held) = cx.table.mesh_tls_of(port) {
            let message = format!(
                "port {port} terminates the mesh's mTLS ({held} asks for ISTIO_MUTUAL): it \
                 presents the workload certificate only; server ignored"
            );
            return Err(Condition::warn("Valid", "PortConflict", message)
                .field(format!("{field}.tls.mode")));
        }
    }
    for certificate in certificates {
        cx.table.certificate(port, certificate);
    }
    if let Some(validation) = validation {
        cx.table
            .client_validation(port, validation)
            .map_err(|message| {
                Condition::warn("Valid", "PortConflict", message).field(format!("{field}.tls.mode"))
            })?;
    } else if matches!(
        port_protocol,
        PortProtocol::Https | PortProtocol::TlsTerminate
    ) {
        if let Some(held) = cx.table.validates_clients(port) {
            let message = format!(
                "port {port} verifies client certificates ({} asks for it): clients of this \
                 server must present one too",
                held.source
            );
            cx.reports.push(
                meta,
                Condition::warn("Valid", "PortConflict", message)
                    .field(format!("{field}.tls.mode")),
            );
        }
    }
    let https_redirect = port_protocol == PortProtocol::Http
        && server.tls.as_ref().is_some_and(|t| t.https_redirect);
    Ok(ServedServer {
        port,
        protocol: port_protocol,
        hosts,
        https_redirect,
        auto_passthrough: tls_mode == Some("AUTO_PASSTHROUGH"),
    })
}

fn server_certificates(
    cx: &Context<'_>,
    meta: &Meta,
    server: &Server,
    field: &str,
    server_names: Vec<Str>,
) -> Result<Vec<ServerCertificate>, Condition> {
    let tls_field = format!("{field}.tls");
    let unsupported = |message: &str, at: &str| {
        Condition::warn(
            "Valid",
            "UnsupportedValue",
            format!("{message}; server ignored"),
        )
        .field(format!("{tls_field}{at}"))
    };
    let Some(tls) = &server.tls else {
        return Err(unsupported(
            "an HTTPS server needs tls.mode SIMPLE and tls.credentialName",
            "",
        ));
    };
    match tls.mode.as_deref().unwrap_or("PASSTHROUGH") {
        "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL" => {}
        "ISTIO_MUTUAL" => {
            return Err(unsupported(
                "ISTIO_MUTUAL is taken by HTTPS servers; on a TLS server (relaying the decrypted \
             bytes) it is not supported yet (use MUTUAL with a client CA)",
                ".mode",
            ))
        }
        other => {
            return Err(unsupported(
                &format!("TLS mode {other} is not supported (SIMPLE only)"),
                ".mode",
            ))
        }
    }
    let names: Vec<&String> = tls
        .credential_name
        .iter()
        .chain(&tls.credential_names)
        .collect();
    if names.is_empty() {
        let message = if tls.server_certificate.is_some() {
            "certificate files (serverCertificate/privateKey) are not supported; use credentialName"
        } else {
            "modes SIMPLE, MUTUAL and OPTIONAL_MUTUAL need credentialName"
        };
        return Err(unsupported(message, ".credentialName"));
    }
    // Istio reads credentialName in the gateway workload's namespace. Standalone, that is not
    // known and the Gateway's own namespace is used; from the controller it is the proxy's
    // authenticated namespace, so no proxy receives another namespace's private keys.
    let secret_namespace = cx
        .options
        .workload_namespace
        .clone()
        .unwrap_or_else(|| meta.namespace.to_string());
    names
        .into_iter()
        .map(|name| {
            secret_certificate(cx, &secret_namespace, name, server_names.clone()).map_err(
                |(_, message)| {
                    Condition::warn(
                        "Valid",
                        "ReferencedResourceNotFound",
                        format!("{message}; server ignored"),
                    )
                    .field(format!("{tls_field}.credentialName"))
                },
            )
        })
        .collect()
}

/// MUTUAL / OPTIONAL_MUTUAL: the client CA from the credentialName Secret (`ca.crt`), or from
/// a `<name>-cacert` Secret (`cacert` or `ca.crt`), read where the certificate is. Without a
/// CA the server is not served (never served without the check).
fn client_validation(
    cx: &mut Context<'_>,
    meta: &Meta,
    server: &Server,
    field: &str,
) -> Result<Option<ferry_model::ClientValidation>, Condition> {
    let Some(tls) = &server.tls else {
        return Ok(None);
    };
    let optional = match tls.mode.as_deref() {
        Some("MUTUAL") => false,
        Some("OPTIONAL_MUTUAL") => true,
        _ => {
            if !tls.subject_alt_names.is_empty() {
                let message = "subjectAltNames apply to client certificates (MUTUAL, \
                               OPTIONAL_MUTUAL) only; not used in this mode";
                let condition = Condition::warn("Valid", "UnsupportedValue", message)
                    .field(format!("{field}.tls.subjectAltNames"));
                cx.reports.push(meta, condition);
            }
            return Ok(None);
        }
    };
    // Checks Ferry does not make would let through certificates the server refuses: the
    // server is not served rather than served looser than written.
    let stricter = [
        ("caCrl", tls.ca_crl.is_some()),
        (
            "verifyCertificateSpki",
            tls.verify_certificate_spki.is_some(),
        ),
        (
            "verifyCertificateHash",
            tls.verify_certificate_hash.is_some(),
        ),
        ("caCertificates", tls.ca_certificates.is_some()),
    ];
    if let Some((name, _)) = stricter.iter().find(|(_, set)| *set) {
        let message = format!(
            "{name} is not supported for client certificates yet (the CA comes from \
             credentialName); server ignored"
        );
        return Err(Condition::warn("Valid", "UnsupportedValue", message)
            .field(format!("{field}.tls.{name}")));
    }
    let namespace = cx
        .options
        .workload_namespace
        .clone()
        .unwrap_or_else(|| meta.namespace.to_string());
    let name = tls
        .credential_name
        .as_deref()
        .or(tls.credential_names.first().map(String::as_str))
        .unwrap_or_default();
    let ca = super::tls::client_ca(cx, &namespace, name).map_err(|message| {
        Condition::warn(
            "Valid",
            "ReferencedResourceNotFound",
            format!("{message}; server ignored"),
        )
        .field(format!("{field}.tls.credentialName"))
    })?;
    Ok(Some(ferry_model::ClientValidation {
        source: meta.clone(),
        ca_pem: ca.into(),
        optional,
        subject_alt_names: tls
            .subject_alt_names
            .iter()
            .map(|s| Str::from(s.as_str()))
            .collect(),
    }))
}

/// Server hosts in `namespace/host` form; `*/` and no prefix mean any namespace, `./` the
/// Gateway's own.
fn server_hosts(hosts: &[String], gateway_ns: &str) -> Vec<(Option<String>, String)> {
    hosts
        .iter()
        .map(|h| match h.split_once('/') {
            Some(("*", host)) => (None, host.to_string()),
            Some((".", host)) => (Some(gateway_ns.to_string()), host.to_string()),
            Some((ns, host)) => (Some(ns.to_string()), host.to_string()),
            None => (None, h.clone()),
        })
        .collect()
}

fn translate_virtual_service(
    cx: &mut Context<'_>,
    gateways: &[ServedGateway],
    vs: &VirtualService,
    load: usize,
) {
    let meta = meta_of("VirtualService", &vs.metadata);
    let bound: Vec<&ServedGateway> = vs
        .spec
        .gateways
        .iter()
        .filter(|g| *g != "mesh")
        .map(|g| gateway_key(g, &meta.namespace))
        .filter_map(|key| gateways.iter().find(|s| s.key == key))
        .collect();
    if bound.is_empty() {
        return;
    }
    let compiled = http::compile(cx, vs, &meta);
    let age = RouteOrder::age_of(&vs.metadata);
    let mut placed = stream::place(cx, &bound, vs, &meta, load);
    for gateway in bound {
        for (port, host, https_redirect) in vhosts(gateway, &vs.spec.hosts, &meta.namespace) {
            placed = true;
            for c in compiled
                .iter()
                .filter(|c| c.gateways.is_empty() || c.gateways.contains(&gateway.key))
            {
                let order = c.order(&age, load);
                let route = match https_redirect {
                    true => redirect_to_https(&c.route),
                    false => c.route.clone(),
                };
                cx.table.add(port, &host, order, route);
            }
        }
    }
    let condition = if placed {
        Condition::ok("Valid", "Accepted", "bound to a served Gateway")
    } else {
        Condition::warn(
            "Valid",
            "NoMatchingHost",
            "no host matches a server host of the bound Gateways",
        )
        .field("spec.hosts")
    };
    cx.reports.push(&meta, condition);
}

pub(super) fn gateway_key(reference: &str, namespace: &str) -> String {
    match reference.split_once('/') {
        Some(_) => reference.to_string(),
        None => format!("{namespace}/{reference}"),
    }
}

/// The route as a plain server with `httpsRedirect` serves it: same match, 301 to https on
/// the default port, as Istio does.
fn redirect_to_https(route: &Route) -> Route {
    let redirect = Redirect {
        scheme: Some("https".into()),
        host: None,
        port: RedirectPort::SchemeDefault,
        path: None,
        status: 301,
    };
    Route {
        filters: Default::default(),
        action: Action::Redirect(redirect),
        policy: Default::default(),
        ..route.clone()
    }
}

/// (port, hostname, https redirect) where a VirtualService's hosts meet a gateway's server
/// hosts.
fn vhosts(
    gateway: &ServedGateway,
    vs_hosts: &[String],
    vs_ns: &str,
) -> BTreeSet<(u16, String, bool)> {
    let mut out = BTreeSet::new();
    for server in gateway.servers.iter().filter(|s| !s.protocol.is_stream()) {
        for (ns, server_host) in &server.hosts {
            if ns.as_deref().is_some_and(|ns| ns != vs_ns) {
                continue;
            }
            for host in vs_hosts {
                if let Some(h) = intersect(server_host, host) {
                    out.insert((server.port, h, server.https_redirect));
                }
            }
        }
    }
    out
}
