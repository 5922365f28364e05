//! Kubernetes Ingress: host rules, Exact/Prefix paths, default backends, on one port.

use ferry_model::{Action, BackendTarget, Meta, PathMatch, Route, RouteMatch, WeightedBackend};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::report::Condition;
use super::table::{PortProtocol, RouteOrder};
use super::tls::secret_certificate;
use super::{meta_of, Context};

pub(crate) fn translate(cx: &mut Context<'_>) {
    let port = cx.options.ingress_port;
    if port == 0 {
        return; // this proxy serves no Ingress (an egress gateway)
    }
    let served: Vec<(usize, &Ingress)> = cx
        .inputs
        .ingresses
        .iter()
        .enumerate()
        .filter(|(_, i)| class_served(i, &cx.options.ingress_class))
        .collect();
    let mut defaults = Vec::new();
    for (load, ingress) in &served {
        let meta = meta_of("Ingress", &ingress.metadata);
        if let Err(message) = cx.table.listener(port, &meta, PortProtocol::Http) {
            let condition = Condition::warn("Accepted", "PortConflict", message);
            cx.reports.push(&meta, condition.field("spec"));
            continue;
        }
        let tls_hosts = serve_tls(cx, ingress, &meta);
        add_rules(cx, ingress, &meta, *load, &tls_hosts);
        if let Some(backend) = ingress
            .spec
            .as_ref()
            .and_then(|s| s.default_backend.as_ref())
        {
            let route = default_route(cx, backend, &meta);
            defaults.push((RouteOrder::age_of(&ingress.metadata), *load, route));
        }
        cx.reports.push(
            &meta,
            Condition::ok("Accepted", "Accepted", format!("served on port {port}")),
        );
    }
    // A default backend answers whatever no rule matched, on every host: it sorts last.
    defaults.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let tls_port = cx.options.ingress_tls_port;
    let tls_served = tls_port != 0 && cx.table.is_https(tls_port);
    let ports = std::iter::once(port).chain(tls_served.then_some(tls_port));
    for port in ports.collect::<Vec<_>>() {
        add_defaults(cx, port, &defaults);
    }
}

fn add_defaults(cx: &mut Context<'_>, port: u16, defaults: &[((bool, String), usize, Route)]) {
    let mut hosts = cx.table.hosts_on(port);
    if !hosts.iter().any(|h| h == "*") {
        hosts.push("*".into());
    }
    for (age, load, route) in defaults {
        for host in &hosts {
            let order = RouteOrder {
                family: 2,
                rank: [i64::MAX; 5],
                age: age.clone(),
                load: *load,
                ..RouteOrder::default()
            };
            cx.table.add(port, host, order, route.clone());
        }
    }
}

fn class_served(ingress: &Ingress, class: &str) -> bool {
    let spec_class = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    let annotation = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/ingress.class"))
        .map(String::as_str);
    match spec_class.or(annotation) {
        None => true,
        Some(c) => c == class,
    }
}

/// Declares the TLS port with the certificates of `spec.tls` and returns the hosts served
/// there (`*` when an entry lists none). A bad Secret is reported; its hosts stay cleartext.
fn serve_tls(cx: &mut Context<'_>, ingress: &Ingress, meta: &Meta) -> Vec<String> {
    let port = cx.options.ingress_tls_port;
    let entries = ingress
        .spec
        .as_ref()
        .and_then(|s| s.tls.as_deref())
        .unwrap_or(&[]);
    let mut hosts = Vec::new();
    if port == 0 {
        return hosts;
    }
    for (index, entry) in entries.iter().enumerate() {
        let field = format!("spec.tls[{index}].secretName");
        let names: Vec<String> = match entry.hosts.as_deref() {
            Some(listed) if !listed.is_empty() => listed.to_vec(),
            _ => vec!["*".into()],
        };
        let Some(secret) = entry.secret_name.as_deref() else {
            let condition = Condition::warn(
                "Valid",
                "InvalidCertificateRef",
                "a TLS entry needs secretName",
            );
            cx.reports.push(meta, condition.field(field));
            continue;
        };
        let server_names = names.iter().map(|n| n.as_str().into()).collect();
        let certificate = match secret_certificate(cx, &meta.namespace, secret, server_names) {
            Ok(certificate) => certificate,
            Err((reason, message)) => {
                cx.reports
                    .push(meta, Condition::warn("Valid", reason, message).field(field));
                continue;
            }
        };
        if let Err(message) = cx.table.listener(port, meta, PortProtocol::Https) {
            cx.reports.push(
                meta,
                Condition::warn("Accepted", "PortConflict", message).field(field),
            );
            continue;
        }
        cx.table.certificate(port, certificate);
        hosts.extend(names);
    }
    hosts
}

fn add_rules(
    cx: &mut Context<'_>,
    ingress: &Ingress,
    meta: &Meta,
    load: usize,
    tls_hosts: &[String],
) {
    let rules = ingress
        .spec
        .as_ref()
        .and_then(|s| s.rules.as_deref())
        .unwrap_or(&[]);
    let age = RouteOrder::age_of(&ingress.metadata);
    for (r_index, rule) in rules.iter().enumerate() {
        let host = rule.host.clone().unwrap_or_else(|| "*".into());
        let paths = rule
            .http
            .as_ref()
            .map(|h| h.paths.as_slice())
            .unwrap_or(&[]);
        for (p_index, path) in paths.iter().enumerate() {
            let value = path.path.clone().unwrap_or_else(|| "/".into());
            let exact = path.path_type == "Exact";
            let matcher = RouteMatch {
                path: if exact {
                    PathMatch::Exact(value.as_str().into())
                } else {
                    PathMatch::SegmentPrefix(value.as_str().into())
                },
                ..RouteMatch::default()
            };
            let field = format!("spec.rules[{r_index}].http.paths[{p_index}].backend");
            let target = backend_target(cx, &path.backend, meta, &field);
            let route = Route {
                meta: meta.clone(),
                name: format!(
                    "{}/{}/rule/{r_index}/path/{p_index}",
                    meta.namespace, meta.name
                )
                .into(),
                matcher,
                filters: Vec::new().into(),
                action: forward(target),
                policy: Default::default(),
            };
            // Exact beats Prefix; then the longest path wins.
            let rank = [-(exact as i64), -(value.len() as i64), 0, 0, 0];
            let order = RouteOrder {
                family: 2,
                rank,
                age: age.clone(),
                load,
                name: meta.name.to_string(),
                rule: r_index,
                matched: p_index,
            };
            if tls_hosts.iter().any(|h| h == "*" || *h == host) {
                cx.table.add(
                    cx.options.ingress_tls_port,
                    &host,
                    order.clone(),
                    route.clone(),
                );
            }
            cx.table.add(cx.options.ingress_port, &host, order, route);
        }
    }
}

fn default_route(cx: &mut Context<'_>, backend: &IngressBackend, meta: &Meta) -> Route {
    let target = backend_target(cx, backend, meta, "spec.defaultBackend");
    Route {
        meta: meta.clone(),
        name: format!("{}/{}/default", meta.namespace, meta.name).into(),
        matcher: RouteMatch::default(),
        filters: Vec::new().into(),
        action: forward(target),
        policy: Default::default(),
    }
}

fn forward(target: BackendTarget) -> Action {
    Action::Forward(
        vec![WeightedBackend {
            weight: 1,
            target,
            filters: Vec::new().into(),
        }]
        .into(),
    )
}

fn backend_target(
    cx: &mut Context<'_>,
    backend: &IngressBackend,
    meta: &Meta,
    field: &str,
) -> BackendTarget {
    match resolve(cx, backend, &meta.namespace) {
        Ok(cluster) => BackendTarget::Cluster(cluster),
        Err(message) => {
            cx.reports.push(
                meta,
                Condition::warn("ResolvedRefs", "BackendNotFound", message.clone())
                    .field(field.to_string()),
            );
            BackendTarget::Invalid {
                status: 503,
                reason: message.into(),
            }
        }
    }
}

fn resolve(
    cx: &mut Context<'_>,
    backend: &IngressBackend,
    namespace: &str,
) -> Result<ferry_model::Str, String> {
    let Some(service) = &backend.service else {
        return Err("resource backends are not supported".into());
    };
    let port = service.port.as_ref();
    let number = match (
        port.and_then(|p| p.number),
        port.and_then(|p| p.name.as_deref()),
    ) {
        (Some(n), _) => Some(n as u32),
        (None, Some(name)) => Some(port_by_name(cx, namespace, &service.name, name)?),
        (None, None) => None,
    };
    cx.catalog
        .resolve(namespace, &service.name, number, None)
        .map_err(|e| e.to_string())
}

fn port_by_name(
    cx: &Context<'_>,
    namespace: &str,
    service: &str,
    port: &str,
) -> Result<u32, String> {
    cx.catalog
        .service(namespace, service)
        .and_then(|s| {
            s.spec
                .as_ref()?
                .ports
                .as_ref()?
                .iter()
                .find(|p| p.name.as_deref() == Some(port))
                .map(|p| p.port as u32)
        })
        .ok_or_else(|| format!("Service {namespace}/{service} has no port named {port}"))
}
