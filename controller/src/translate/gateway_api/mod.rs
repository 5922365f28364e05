//! Gateway API: GatewayClass, Gateway listeners and HTTPRoute attachment.

mod backend_tls;
mod filters;
mod frontend;
pub mod grpc;
pub(crate) mod mesh;
mod not_applied;
mod rules;
pub mod stream;

use ferry_model::{Meta, ServerCertificate, Str};
use gateway_api::apis::experimental::httproutes::{HttpRoute, HttpRouteParentRefs};
use gateway_api::apis::standard::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutes,
    GatewayListenersAllowedRoutesNamespacesFrom as From, GatewayListenersTlsCertificateRefs,
    GatewayListenersTlsMode as TlsMode,
};

use super::hosts::intersect_all;
use super::report::Condition;
use super::table::{PortProtocol, RouteOrder};
use super::tls::{secret_certificate, CertificateProblem};
use super::{meta_of, Context, CONTROLLER_NAME};
use filters::grant_allows;
pub(crate) use filters::header_mods;
pub(crate) use rules::checked_regex;
use rules::CompiledRule;

pub(crate) const GROUP: &str = "gateway.networking.k8s.io";

/// One HTTP listener of a served Gateway.
struct GatewayListener<'a> {
    gateway: Meta,
    listener: &'a GatewayListeners,
    /// False for a listener whose references did not resolve (a missing certificate): routes
    /// still attach to it, as the spec's attachedRoutes counts them, but it serves nothing.
    programmed: bool,
}

pub(crate) fn translate(cx: &mut Context<'_>) {
    let classes = served_classes(cx);
    not_applied::report(cx, &classes);
    backend_tls::report(cx);
    let listeners = served_listeners(cx, &classes);
    let served = Served { classes, listeners };
    for route in &cx.inputs.http_routes {
        attach_route(cx, &served, route, "HTTPRoute");
    }
    for route in &cx.inputs.grpc_routes {
        match grpc::as_http_route(route) {
            Ok(http) => attach_route(cx, &served, &http, "GRPCRoute"),
            Err(message) => {
                let meta = meta_of("GRPCRoute", &route.metadata);
                let (field, message) = message.split_once(": ").unwrap_or(("spec", &message));
                let condition = Condition::error("Accepted", "UnsupportedValue", message);
                cx.reports.push(&meta, condition.field(field.to_string()));
            }
        }
    }
    let tls = cx
        .inputs
        .tls_routes
        .iter()
        .map(|r| ("TLSRoute", &r.metadata, stream::tls_as_http_route(r)));
    let tcp = cx
        .inputs
        .tcp_routes
        .iter()
        .map(|r| ("TCPRoute", &r.metadata, stream::tcp_as_http_route(r)));
    let connection_routes: Vec<_> = tls.chain(tcp).collect();
    for (kind, metadata, route) in connection_routes {
        match route {
            Ok(http) => attach_route(cx, &served, &http, kind),
            Err(message) => {
                let meta = meta_of(kind, metadata);
                let condition = Condition::error("Accepted", "UnsupportedValue", message);
                cx.reports.push(&meta, condition.field("spec"));
            }
        }
    }
    stream::report_shadowed_tcp_routes(cx);
}

/// What this proxy serves of the Gateway API: class names and usable listeners.
struct Served<'a> {
    classes: Vec<String>,
    listeners: Vec<GatewayListener<'a>>,
}

impl Served<'_> {
    /// True when the named Gateway exists and is ours, even if none of its listeners is usable.
    fn gateway(&self, cx: &Context<'_>, namespace: &str, name: &str) -> bool {
        cx.inputs.gateways.iter().any(|g| {
            g.metadata.namespace.as_deref() == Some(namespace)
                && g.metadata.name.as_deref() == Some(name)
                && self.classes.contains(&g.spec.gateway_class_name)
                && in_scope(cx, g)
        })
    }
}

/// GatewayClass names this controller serves: `ferry`, and any class naming our controller.
fn served_classes(cx: &mut Context<'_>) -> Vec<String> {
    let ours = cx.inputs.gateway_classes.iter();
    for class in ours.filter(|c| c.spec.controller_name == CONTROLLER_NAME) {
        let meta = meta_of("GatewayClass", &class.metadata);
        let accepted = Condition::ok("Accepted", "Accepted", "handled by Ferry");
        cx.reports.push(&meta, accepted);
    }
    served_class_names(cx.inputs)
}

/// The names of the GatewayClasses Ferry serves: `ferry`, and any class naming its controller.
pub(crate) fn served_class_names(inputs: &crate::Inputs) -> Vec<String> {
    let ours = inputs.gateway_classes.iter();
    let named = ours.filter(|c| c.spec.controller_name == CONTROLLER_NAME);
    let names = named.filter_map(|c| c.metadata.name.clone());
    std::iter::once("ferry".to_string()).chain(names).collect()
}

fn served_listeners<'a>(cx: &mut Context<'a>, classes: &[String]) -> Vec<GatewayListener<'a>> {
    let mut served = Vec::new();
    for gateway in &cx.inputs.gateways {
        if !classes.contains(&gateway.spec.gateway_class_name) || !in_scope(cx, gateway) {
            continue;
        }
        served.extend(gateway_listeners(cx, gateway));
    }
    served
}

fn in_scope(cx: &Context<'_>, gateway: &Gateway) -> bool {
    let Some(only) = &cx.options.only_gateway else {
        return true;
    };
    let namespace = gateway.metadata.namespace.as_deref().unwrap_or_default();
    let name = gateway.metadata.name.as_deref().unwrap_or_default();
    only.split_once('/') == Some((namespace, name))
}

fn gateway_listeners<'a>(cx: &mut Context<'a>, gateway: &'a Gateway) -> Vec<GatewayListener<'a>> {
    let meta = meta_of("Gateway", &gateway.metadata);
    if let Some(problem) = crate::deploy::parameters_error(cx.inputs, gateway) {
        let field = "spec.infrastructure.parametersRef".to_string();
        let invalid = Condition::error("Accepted", "InvalidParameters", problem).field(field);
        cx.reports.push(&meta, invalid);
        let programmed = Condition::warn("Programmed", "Invalid", "the Gateway is not accepted");
        cx.reports.push(&meta, programmed);
        return Vec::new();
    }
    for key in crate::deploy::unread_parameters(cx.inputs, gateway) {
        let message = format!(
            "parametersRef ConfigMap key {key} is not read (Ferry reads {})",
            crate::deploy::PARAMETER_KEYS.join(", ")
        );
        let field = "spec.infrastructure.parametersRef".to_string();
        let condition = Condition::warn("Valid", "NotYetSupported", message).field(field);
        cx.reports.push(&meta, condition);
    }
    let mut listeners = Vec::new();
    for (index, listener) in gateway.spec.listeners.iter().enumerate() {
        let earlier = &gateway.spec.listeners[..index];
        let field = format!("spec.listeners[{index}]");
        match program_listener(cx, &meta, listener, &field, earlier) {
            Ok(()) => {
                report_invalid_route_kinds(cx, &meta, listener, &field);
                listeners.push(GatewayListener {
                    gateway: meta.clone(),
                    listener,
                    programmed: true,
                })
            }
            Err(condition) => {
                let condition = match condition.field {
                    Some(_) => condition,
                    None => condition.field(field),
                };
                if condition.condition == "ResolvedRefs" {
                    listeners.push(GatewayListener {
                        gateway: meta.clone(),
                        listener,
                        programmed: false,
                    });
                }
                let parent = format!("listener {}", listener.name);
                let frontend = |f: &String| f.starts_with("spec.tls.frontend");
                if condition.condition == "ResolvedRefs"
                    && condition.field.as_ref().is_some_and(frontend)
                {
                    // The spec's listener condition for a client validation without a usable CA.
                    let message = format!("no usable client CA: {}", condition.message);
                    let not_accepted = Condition::warn("Accepted", "NoValidCACertificate", message);
                    cx.reports.push(&meta, not_accepted.parent(parent.clone()));
                }
                // A listener that is not served says so on its own (Programmed False), whatever
                // condition explains why; a bad certificate among good ones does not do this.
                let programmed =
                    Condition::warn("Programmed", "Invalid", condition.message.clone());
                cx.reports.push(&meta, programmed.parent(parent.clone()));
                cx.reports.push(&meta, condition.parent(parent));
            }
        }
    }
    let programmed = listeners.iter().filter(|l| l.programmed).count();
    push_gateway_conditions(cx, &meta, programmed, gateway.spec.listeners.len());
    listeners
}

/// The Gateway stays Accepted when some listeners are not (reason ListenersNotValid, as the
/// spec allows); it is Programmed only if at least one listener is.
fn push_gateway_conditions(cx: &mut Context<'_>, meta: &Meta, programmed: usize, declared: usize) {
    let accepted = if programmed == declared {
        Condition::ok("Accepted", "Accepted", "served by Ferry")
    } else {
        let message = format!(
            "{} of {declared} listener(s) not valid; see listener conditions",
            declared - programmed
        );
        Condition::ok("Accepted", "ListenersNotValid", message)
    };
    cx.reports.push(meta, accepted);
    let message = format!("{programmed} listener(s) programmed");
    let programmed = if programmed > 0 || declared == 0 {
        Condition::ok("Programmed", "Programmed", message)
    } else {
        Condition::warn("Programmed", "Invalid", "no listener can be programmed")
    };
    cx.reports.push(meta, programmed);
}

/// Declares one listener's port (and certificates) in the route table, or says which listener
/// condition keeps it from being programmed: Accepted (unsupported), Conflicted, ResolvedRefs.
fn program_listener(
    cx: &mut Context<'_>,
    gateway: &Meta,
    listener: &GatewayListeners,
    field: &str,
    earlier: &[GatewayListeners],
) -> Result<(), Condition> {
    let protocol = listener_protocol(listener, field)?;
    let port = u16::try_from(listener.port)
        .map_err(|_| Condition::warn("Accepted", "UnsupportedValue", "port out of range"))?;
    conflict_with_earlier(listener, earlier)?;
    let (certificates, validation) = match protocol {
        PortProtocol::Http | PortProtocol::TlsPassthrough | PortProtocol::Tcp => (Vec::new(), None),
        // The Gateway's client certificate validation binds every port that terminates TLS.
        PortProtocol::Https | PortProtocol::TlsTerminate => (
            listener_certificates(cx, gateway, listener, field)?,
            frontend_validation(cx, gateway, port)?,
        ),
    };
    cx.table
        .listener(port, gateway, protocol)
        .map_err(|message| Condition::warn("Conflicted", "ProtocolConflict", message))?;
    // An HTTP listener's hostname owns its requests (see RouteTable::host); a TLS listener's
    // narrows its routes' server names instead, and a TCP listener has none.
    let hostname = listener.hostname.as_deref().filter(|h| !h.is_empty());
    if let Some(hostname) = hostname.filter(|_| !protocol.is_stream()) {
        cx.table.host(port, hostname);
    }
    for certificate in certificates {
        cx.table.certificate(port, certificate);
    }
    if let Some(validation) = validation {
        cx.table
            .client_validation(port, validation)
            .map_err(|message| Condition::warn("Conflicted", "ProtocolConflict", message))?;
    }
    Ok(())
}

/// The Gateway's `spec.tls.frontend` client validation for an HTTPS port.
fn frontend_validation(
    cx: &Context<'_>,
    gateway: &Meta,
    port: u16,
) -> Result<Option<ferry_model::ClientValidation>, Condition> {
    let Some(object) = cx
        .inputs
        .gateways
        .iter()
        .find(|g| meta_of("Gateway", &g.metadata) == *gateway)
    else {
        return Ok(None);
    };
    frontend::validation_for(cx, object, gateway, port)
}

fn listener_protocol(listener: &GatewayListeners, field: &str) -> Result<PortProtocol, Condition> {
    let mode = listener.tls.as_ref().and_then(|t| t.mode.as_ref());
    match listener.protocol.as_str() {
        "HTTP" => Ok(PortProtocol::Http),
        "HTTPS" if mode == Some(&TlsMode::Passthrough) => Err(Condition::warn(
            "Accepted",
            "UnsupportedValue",
            "an HTTPS listener terminates TLS; for Passthrough use protocol TLS with TLSRoutes",
        )
        .field(format!("{field}.tls.mode"))),
        "HTTPS" => Ok(PortProtocol::Https),
        "TLS" if mode == Some(&TlsMode::Passthrough) => Ok(PortProtocol::TlsPassthrough),
        // The spec's default mode is Terminate.
        "TLS" => Ok(PortProtocol::TlsTerminate),
        "TCP" => Ok(PortProtocol::Tcp),
        other => Err(Condition::warn(
            "Accepted",
            "UnsupportedProtocol",
            format!("protocol {other} is not supported (HTTP, HTTPS, TLS and TCP are)"),
        )
        .field(format!("{field}.protocol"))),
    }
}

/// Listeners of one Gateway conflict when they share a port but not a protocol, or share
/// port, protocol and hostname. The earlier listener in the list wins, as the spec suggests.
fn conflict_with_earlier(
    listener: &GatewayListeners,
    earlier: &[GatewayListeners],
) -> Result<(), Condition> {
    let same_port = earlier.iter().filter(|e| e.port == listener.port);
    for other in same_port {
        let (reason, message) = if other.protocol != listener.protocol {
            let message = format!(
                "listener {} already serves port {} as {}",
                other.name, other.port, other.protocol
            );
            ("ProtocolConflict", message)
        } else if other.hostname == listener.hostname {
            let host = listener.hostname.as_deref().unwrap_or("(any)");
            let message = format!(
                "listener {} already serves hostname {host} on port {}",
                other.name, other.port
            );
            ("HostnameConflict", message)
        } else {
            continue;
        };
        return Err(Condition::warn("Conflicted", reason, message));
    }
    Ok(())
}

/// The certificates of an HTTPS listener (TLS mode Terminate). Any bad reference makes
/// ResolvedRefs False; the listener is programmed only while at least one certificate is good.
fn listener_certificates(
    cx: &mut Context<'_>,
    gateway: &Meta,
    listener: &GatewayListeners,
    field: &str,
) -> Result<Vec<ServerCertificate>, Condition> {
    let tls = listener.tls.as_ref();
    let refs = tls
        .and_then(|t| t.certificate_refs.as_deref())
        .unwrap_or_default();
    if refs.is_empty() {
        return Err(Condition::warn(
            "ResolvedRefs",
            "InvalidCertificateRef",
            format!(
                "a {} listener terminating TLS needs tls.certificateRefs",
                listener.protocol
            ),
        )
        .field(format!("{field}.tls.certificateRefs")));
    }
    let server_names: Vec<Str> = vec![listener.hostname.as_deref().unwrap_or("*").into()];
    let mut good = Vec::new();
    let mut first_problem = None;
    for (index, reference) in refs.iter().enumerate() {
        match certificate_ref(cx, gateway, reference, server_names.clone()) {
            Ok(certificate) => good.push(certificate),
            Err((reason, message)) => {
                let field = format!("{field}.tls.certificateRefs[{index}]");
                first_problem.get_or_insert((reason, message, field));
            }
        }
    }
    if let Some((reason, message, field)) = first_problem {
        let condition = Condition::warn("ResolvedRefs", reason, message).field(field);
        if good.is_empty() {
            return Err(condition);
        }
        let condition = condition.parent(format!("listener {}", listener.name));
        cx.reports.push(gateway, condition);
    }
    Ok(good)
}

fn certificate_ref(
    cx: &Context<'_>,
    gateway: &Meta,
    reference: &GatewayListenersTlsCertificateRefs,
    server_names: Vec<Str>,
) -> Result<ServerCertificate, CertificateProblem> {
    let group = reference.group.as_deref().unwrap_or("");
    let kind = reference.kind.as_deref().unwrap_or("Secret");
    if !matches!(group, "" | "core") || kind != "Secret" {
        let message =
            format!("certificate reference kind {group}/{kind} is not supported (Secret only)");
        return Err(("InvalidCertificateRef", message));
    }
    let namespace = reference.namespace.as_deref().unwrap_or(&gateway.namespace);
    if namespace != &*gateway.namespace
        && !grant_allows(cx, gateway, namespace, "Secret", &reference.name)
    {
        let message = format!(
            "no ReferenceGrant in {namespace} allows Gateway from {} to Secret {}",
            gateway.namespace, reference.name
        );
        return Err(("RefNotPermitted", message));
    }
    secret_certificate(cx, namespace, &reference.name, server_names)
}

/// Attaches an HTTPRoute (or a GRPCRoute in its HTTPRoute form; `kind` says which).
fn attach_route(cx: &mut Context<'_>, served: &Served<'_>, route: &HttpRoute, kind: &str) {
    let meta = meta_of(kind, &route.metadata);
    let rules = RouteRules::compile(cx, route, &meta);
    if matches!(kind, "TLSRoute" | "TCPRoute") {
        stream::report_service_parents(cx, route, &meta);
    }
    let hostnames = route.spec.hostnames.clone().unwrap_or_default();
    for (index, parent) in route.spec.parent_refs.iter().flatten().enumerate() {
        if !is_gateway_ref(parent) {
            continue;
        }
        let gateway_ns = parent.namespace.as_deref().unwrap_or(&meta.namespace);
        let parent_name = parent_label(gateway_ns, parent);
        let ours: Vec<_> = served
            .listeners
            .iter()
            .filter(|l| &*l.gateway.namespace == gateway_ns && *l.gateway.name == parent.name)
            .collect();
        if ours.is_empty() && !served.gateway(cx, gateway_ns, &parent.name) {
            continue; // a Gateway of another controller: not ours to report on
        }
        let field = format!("spec.parentRefs[{index}]");
        let outcome = attach_to_parent(cx, &ours, parent, &meta, &hostnames);
        let condition = match outcome {
            Ok(targets) => {
                let served = isolated(&ours, targets);
                rules.add(cx, &served, &meta, route);
                Condition::ok("Accepted", "Accepted", "attached to the Gateway")
            }
            Err((reason, message)) => Condition::warn("Accepted", reason, message).field(field),
        };
        cx.reports
            .push(&meta, condition.parent(parent_name.clone()));
        report_refs(cx, &meta, rules.ref_failure(), &parent_name);
    }
}

/// How a parentRef is named in reports: Gateway, plus sectionName and port when given,
/// since one route may reference several listeners of one Gateway.
pub fn parent_label(namespace: &str, parent: &HttpRouteParentRefs) -> String {
    let mut label = format!("Gateway {namespace}/{}", parent.name);
    if let Some(section) = &parent.section_name {
        label.push_str(&format!(" sectionName={section}"));
    }
    if let Some(port) = parent.port {
        label.push_str(&format!(" port={port}"));
    }
    label
}

fn is_gateway_ref(parent: &HttpRouteParentRefs) -> bool {
    parent.group.as_deref().unwrap_or(GROUP) == GROUP
        && parent.kind.as_deref().unwrap_or("Gateway") == "Gateway"
}

type Rejection = (&'static str, String);

/// A hostname a route serves through one listener.
struct Target<'a> {
    listener: &'a GatewayListeners,
    programmed: bool,
    host: String,
}

/// The (port, hostname) pairs a route is served on: through programmed listeners, and only
/// where its listener is the most specific of its port for that hostname (listener
/// isolation: a request goes to the most specific listener that matches it, and only that
/// listener's routes may serve it).
fn isolated(listeners: &[&GatewayListener<'_>], targets: Vec<Target<'_>>) -> Vec<Placement> {
    targets
        .into_iter()
        .filter(|t| t.programmed && most_specific_for(listeners, t) == Some(&*t.listener.name))
        .map(|t| Placement {
            // Listeners with a port out of range were refused before (listener()).
            port: u16::try_from(t.listener.port).unwrap_or_default(),
            terminate: terminates_connections(t.listener),
            host: t.host,
        })
        .collect()
}

/// Where a route is served: a port and hostname, through a listener that terminates TLS
/// before relaying connections (TLS mode Terminate) or not.
pub(super) struct Placement {
    pub port: u16,
    pub host: String,
    pub terminate: bool,
}

/// A TLS listener in mode Terminate (the spec's default for TLS).
fn terminates_connections(listener: &GatewayListeners) -> bool {
    let mode = listener.tls.as_ref().and_then(|t| t.mode.as_ref());
    listener.protocol == "TLS" && mode != Some(&TlsMode::Passthrough)
}

fn most_specific_for<'l>(
    listeners: &[&'l GatewayListener<'_>],
    target: &Target<'_>,
) -> Option<&'l str> {
    let pattern =
        |l: &GatewayListener<'_>| l.listener.hostname.clone().unwrap_or_else(|| "*".into());
    // Exact names before wildcards, longer wildcards before shorter, `*` last.
    let specificity = |pattern: &str| match pattern.strip_prefix('*') {
        None => (2, pattern.len()),
        Some(suffix) => (u8::from(!suffix.is_empty()), suffix.len()),
    };
    listeners
        .iter()
        .filter(|l| l.listener.port == target.listener.port)
        .filter(|l| super::hosts::covers(&pattern(l), &target.host))
        .max_by_key(|l| specificity(&pattern(l)))
        .map(|l| l.listener.name.as_str())
}

/// (port, hostname) pairs the route serves through this parent, or why it serves none.
fn attach_to_parent<'a>(
    cx: &Context<'_>,
    listeners: &[&'a GatewayListener<'a>],
    parent: &HttpRouteParentRefs,
    route: &Meta,
    hostnames: &[String],
) -> Result<Vec<Target<'a>>, Rejection> {
    let selected: Vec<_> = listeners
        .iter()
        .filter(|l| {
            parent
                .section_name
                .as_ref()
                .is_none_or(|s| *s == l.listener.name)
        })
        .filter(|l| parent.port.is_none_or(|p| p == l.listener.port))
        .collect();
    if selected.is_empty() {
        return Err((
            "NoMatchingParent",
            "no listener matches sectionName/port".into(),
        ));
    }
    let allowed: Vec<_> = selected
        .iter()
        .filter(|l| route_allowed(cx, l, route))
        .collect();
    if allowed.is_empty() {
        return Err((
            "NotAllowedByListeners",
            "no listener allows routes from this namespace/kind".into(),
        ));
    }
    let targets: Vec<Target> = allowed
        .iter()
        .flat_map(|l| {
            intersect_all(l.listener.hostname.as_deref(), hostnames)
                .into_iter()
                .map(move |host| Target {
                    listener: l.listener,
                    programmed: l.programmed,
                    host,
                })
        })
        .collect();
    if targets.is_empty() {
        return Err((
            "NoMatchingListenerHostname",
            "no hostname intersects a listener hostname".into(),
        ));
    }
    Ok(targets)
}

fn route_allowed(cx: &Context<'_>, l: &GatewayListener<'_>, route: &Meta) -> bool {
    let allowed = l.listener.allowed_routes.as_ref();
    supported_kinds(l.listener).contains(&&*route.kind)
        && namespace_allowed(cx, allowed, &l.gateway.namespace, &route.namespace)
}

/// The route kinds a listener of this protocol serves.
fn route_kinds(listener: &GatewayListeners) -> &'static [&'static str] {
    match listener.protocol.as_str() {
        "TLS" => &["TLSRoute"],
        "TCP" => &["TCPRoute"],
        _ => &["HTTPRoute", "GRPCRoute"],
    }
}

/// The kinds of `allowedRoutes.kinds` Ferry serves on this listener (all it serves when the
/// field is absent): the listener's `supportedKinds`.
pub(crate) fn supported_kinds(listener: &GatewayListeners) -> Vec<&'static str> {
    route_kinds(listener)
        .iter()
        .copied()
        .filter(|kind| kind_allowed(listener.allowed_routes.as_ref(), kind))
        .collect()
}

/// A kind in `allowedRoutes.kinds` Ferry does not serve makes the listener's ResolvedRefs
/// False (InvalidRouteKinds); the kinds it does serve still attach.
fn report_invalid_route_kinds(
    cx: &mut Context<'_>,
    gateway: &Meta,
    listener: &GatewayListeners,
    field: &str,
) {
    let kinds = listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.kinds.as_ref());
    let served = route_kinds(listener);
    let invalid: Vec<String> = kinds
        .into_iter()
        .flatten()
        .filter(|k| {
            k.group.as_deref().unwrap_or(GROUP) != GROUP || !served.contains(&k.kind.as_str())
        })
        .map(|k| format!("{}/{}", k.group.as_deref().unwrap_or(GROUP), k.kind))
        .collect();
    if invalid.is_empty() {
        return;
    }
    let message = format!(
        "route kinds not served on {} listener: {} (served: {})",
        with_article(&listener.protocol),
        invalid.join(", "),
        served.join(", ")
    );
    let condition = Condition::warn("ResolvedRefs", "InvalidRouteKinds", message)
        .field(format!("{field}.allowedRoutes.kinds"))
        .parent(format!("listener {}", listener.name));
    cx.reports.push(gateway, condition);
}

/// "an HTTP", "an HTTPS", "a TLS", "a TCP".
fn with_article(protocol: &str) -> String {
    let article = if protocol.starts_with('H') { "an" } else { "a" };
    format!("{article} {protocol}")
}

/// A listener takes the kinds of its protocol unless `allowedRoutes.kinds` narrows them.
fn kind_allowed(allowed: Option<&GatewayListenersAllowedRoutes>, kind: &str) -> bool {
    match allowed.and_then(|a| a.kinds.as_ref()) {
        Some(kinds) if !kinds.is_empty() => kinds
            .iter()
            .any(|k| k.kind == kind && k.group.as_deref().unwrap_or(GROUP) == GROUP),
        _ => true,
    }
}

fn namespace_allowed(
    cx: &Context<'_>,
    allowed: Option<&GatewayListenersAllowedRoutes>,
    gateway_ns: &str,
    route_ns: &str,
) -> bool {
    let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from.as_ref()) {
        None | Some(From::Same) => gateway_ns == route_ns,
        Some(From::All) => true,
        Some(From::Selector) => {
            let selector = namespaces.and_then(|n| n.selector.as_ref());
            let labels = cx.namespace_labels.get(route_ns);
            selector.is_some_and(|s| {
                crate::translate::labels::selector_matches(
                    s.match_labels.as_ref(),
                    s.match_expressions
                        .iter()
                        .flatten()
                        .map(|e| (e.key.as_str(), e.operator.as_str(), e.values.as_deref())),
                    labels,
                )
            })
        }
    }
}

fn add_routes(
    cx: &mut Context<'_>,
    targets: &[Placement],
    rules: &[CompiledRule],
    meta: &Meta,
    route: &HttpRoute,
) {
    let age = RouteOrder::age_of(&route.metadata);
    for Placement { port, host, .. } in targets {
        for rule in rules {
            let order = RouteOrder {
                family: 0,
                rank: rule.rank,
                age: age.clone(),
                load: 0,
                name: format!("{}/{}", meta.namespace, meta.name),
                rule: rule.rule,
                matched: rule.matched,
            };
            cx.table.add(*port, host, order, rule.route.clone());
        }
    }
}

/// What a route becomes: HTTP rules (HTTPRoute, GRPCRoute) or one connection route's
/// backends (TLSRoute, TCPRoute).
enum RouteRules {
    Http(Vec<CompiledRule>),
    Stream(stream::StreamRules),
}

impl RouteRules {
    fn compile(cx: &mut Context<'_>, route: &HttpRoute, meta: &Meta) -> Self {
        match &*meta.kind {
            "TLSRoute" | "TCPRoute" => RouteRules::Stream(stream::compile(cx, route, meta)),
            _ => RouteRules::Http(rules::compile(cx, route, meta)),
        }
    }

    fn add(&self, cx: &mut Context<'_>, targets: &[Placement], meta: &Meta, route: &HttpRoute) {
        match self {
            RouteRules::Http(rules) => add_routes(cx, targets, rules, meta, route),
            RouteRules::Stream(rules) => rules.add(cx, targets, meta, route),
        }
    }

    fn ref_failure(&self) -> Option<(&'static str, String)> {
        match self {
            RouteRules::Http(rules) => rules.iter().find_map(|r| r.ref_failure.clone()),
            RouteRules::Stream(rules) => rules.ref_failure.clone(),
        }
    }
}

/// ResolvedRefs for a parent: false with the first unresolved reference's reason.
fn report_refs(
    cx: &mut Context<'_>,
    meta: &Meta,
    failure: Option<(&'static str, String)>,
    parent: &str,
) {
    let condition = match failure {
        Some((reason, message)) => Condition::warn("ResolvedRefs", reason, message),
        None => Condition::ok("ResolvedRefs", "ResolvedRefs", "all references resolved"),
    };
    cx.reports.push(meta, condition.parent(parent.to_string()));
}
