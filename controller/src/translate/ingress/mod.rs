//! Kubernetes Ingress: host rules, Exact/Prefix paths, default backends, on one port, with
//! ingress-nginx's annotations (nginx/) applied, reported or refused.

use ferry_model::{Action, BackendTarget, Meta, Route, RouteMatch, WeightedBackend};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

mod backend_tls;
mod basic_auth;
mod canaries;
pub(crate) mod class;
mod error_pages;
pub mod nginx;
mod passthrough;
mod routes;

use super::report::Condition;
use super::table::{PortProtocol, RouteOrder};
use super::tls::secret_certificate;
use super::{meta_of, Context};

/// An Ingress Ferry serves, with its annotations read.
struct Served<'i> {
    load: usize,
    ingress: &'i Ingress,
    meta: Meta,
    settings: nginx::Settings,
    /// Of class `nginx`: ingress-nginx's defaults apply.
    nginx_class: bool,
}

pub(crate) fn translate(cx: &mut Context<'_>) {
    let port = cx.options.ingress_port;
    if port == 0 {
        return; // this proxy serves no Ingress (an egress gateway)
    }
    let served: Vec<Served> = cx
        .inputs
        .ingresses
        .iter()
        .enumerate()
        .filter_map(|(load, ingress)| {
            let served = class::served(cx.inputs, ingress, &cx.options.ingress_class)?;
            read_annotations(cx, load, ingress, served.nginx)
        })
        .collect();
    let mut canaries = canaries::index(cx, &served);
    let regex_hosts = nginx::regex_hosts(served.iter().map(|s| (s.ingress, &s.settings)));
    let mut defaults = Vec::new();
    for main in served.iter().filter(|s| s.settings.canary.is_none()) {
        let meta = &main.meta;
        if let Err(message) = cx.table.listener(port, meta, PortProtocol::Http) {
            let condition = Condition::warn("Accepted", "PortConflict", message);
            cx.reports.push(meta, condition.field("spec"));
            continue;
        }
        let mut tls_hosts = serve_tls(cx, main.ingress, meta);
        if main.settings.ssl_passthrough {
            let passed = passthrough::add(cx, main.ingress, meta, main.load);
            // Their TLS connections are the backend's: no terminated route for them.
            if tls_hosts.iter().any(|h| h == "*") {
                tls_hosts = nginx::hosts_of(main.ingress);
            }
            tls_hosts.retain(|h| !passed.contains(&h.to_ascii_lowercase()));
        }
        let hosts = Hosts {
            tls: tls_hosts,
            regex: &regex_hosts,
        };
        add_rules(cx, main, &hosts, &mut canaries);
        if let Some(backend) = main
            .ingress
            .spec
            .as_ref()
            .and_then(|s| s.default_backend.as_ref())
        {
            let route = default_route(cx, backend, main);
            defaults.push((RouteOrder::age_of(&main.ingress.metadata), main.load, route));
        }
        cx.reports.push(
            meta,
            Condition::ok("Accepted", "Accepted", format!("served on port {port}")),
        );
    }
    canaries::report_unused(cx, &canaries);
    class::report_unapplied(cx);
    // A default backend answers whatever no rule matched, on every host: it sorts last.
    defaults.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let tls_port = cx.options.ingress_tls_port;
    let tls_served = tls_port != 0 && cx.table.is_https(tls_port);
    let ports = std::iter::once(port).chain(tls_served.then_some(tls_port));
    for port in ports.collect::<Vec<_>>() {
        add_defaults(cx, port, &defaults);
    }
}

/// Reads the ingress-nginx annotations and reports each one not applied; an Ingress with a
/// refused or unenforced one is reported and not served.
fn read_annotations<'i>(
    cx: &mut Context<'_>,
    load: usize,
    ingress: &'i Ingress,
    nginx_class: bool,
) -> Option<Served<'i>> {
    let meta = meta_of("Ingress", &ingress.metadata);
    let (settings, mut findings) = nginx::read(ingress);
    let mut settings = match nginx_class {
        true => settings.with_nginx_defaults(),
        false => settings,
    };
    let (requests, connections) = class::limit_statuses(cx.inputs, ingress);
    settings.limit_req_status = Some(requests);
    settings.limit_conn_status = Some(connections);
    basic_auth::resolve(cx, &meta.namespace, &mut settings, &mut findings);
    error_pages::resolve(cx, &meta.namespace, &mut settings, &mut findings);
    if settings.backend_protocol.originates_tls() {
        findings.extend(backend_tls::findings(
            cx.inputs,
            &meta,
            &settings.backend_tls,
        ));
    }
    if settings.canary.is_some() {
        findings.extend(nginx::canary_ignores(ingress));
    }
    let mut blocked = Vec::new();
    for finding in &findings {
        let field = nginx::registry::field(&finding.name);
        let condition = Condition::warn("Valid", finding.reason, finding.message.clone());
        cx.reports.push(&meta, condition.field(field));
        if finding.blocks {
            blocked.push(finding.name.as_str());
        }
    }
    if !blocked.is_empty() {
        let message = format!(
            "not served: annotation(s) {} must be removed or supported first",
            blocked.join(", ")
        );
        // A warning, not an error: an error rejects the whole snapshot, and only this
        // Ingress is to stay unserved.
        let condition = Condition::warn("Accepted", "NotEnforced", message);
        cx.reports
            .push(&meta, condition.field("metadata.annotations"));
        return None;
    }
    Some(Served {
        load,
        ingress,
        meta,
        settings,
        nginx_class,
    })
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

/// What an Ingress's rules need to know of their hosts.
struct Hosts<'h> {
    /// Served over TLS by this Ingress.
    tls: Vec<String>,
    /// Whose paths are regexes (some Ingress of the host says `use-regex`).
    regex: &'h std::collections::BTreeSet<String>,
}

fn add_rules(
    cx: &mut Context<'_>,
    main: &Served,
    hosts: &Hosts,
    canaries: &mut canaries::Canaries,
) {
    let tls_hosts = &hosts.tls;
    let rules = main
        .ingress
        .spec
        .as_ref()
        .and_then(|s| s.rules.as_deref())
        .unwrap_or(&[]);
    let settings = &main.settings;
    for (r_index, rule) in rules.iter().enumerate() {
        let host = rule.host.clone().unwrap_or_else(|| "*".into());
        let has_tls = tls_hosts.iter().any(|h| h == "*" || *h == host);
        let place = Placement {
            host: &host,
            tls: has_tls,
            // ingress-nginx sends cleartext requests for TLS hosts to HTTPS (ssl-redirect,
            // default on for its class) or for every host (force-ssl-redirect).
            redirect_cleartext: settings.force_ssl_redirect
                || (has_tls && settings.ssl_redirect.unwrap_or(main.nginx_class)),
        };
        let paths = rule
            .http
            .as_ref()
            .map(|h| h.paths.as_slice())
            .unwrap_or(&[]);
        for (p_index, path) in paths.iter().enumerate() {
            let value = path.path.clone().unwrap_or_else(|| "/".into());
            let spec = routes::PathSpec {
                value: &value,
                exact: path.path_type == "Exact",
                regex: settings.use_regex || hosts.regex.contains(&host.to_ascii_lowercase()),
            };
            let field = format!("spec.rules[{r_index}].http.paths[{p_index}].backend");
            let target = backend_target(cx, &path.backend, &main.meta, &field);
            let target = backend_settings(cx, target, main);
            let canary = canaries::take(canaries, &host, &value, spec.exact).map(|c| {
                // The canary's backend gets the main Ingress's backend settings too.
                routes::CanaryTarget {
                    target: backend_settings(cx, c.target, main),
                    ..c
                }
            });
            let limit_name = format!("Ingress/{}/{}", main.meta.namespace, main.meta.name);
            let built = routes::build(settings, &limit_name, &spec, target, canary);
            let name = format!(
                "{}/{}/rule/{r_index}/path/{p_index}",
                main.meta.namespace, main.meta.name
            );
            for (variant, route) in built.into_iter().enumerate() {
                let order = order_of(
                    main,
                    &spec,
                    route.precedence,
                    r_index,
                    p_index * 8 + variant,
                );
                let route = Route {
                    meta: main.meta.clone(),
                    name: variant_name(&name, variant).into(),
                    matcher: route.matcher,
                    filters: route.filters.into(),
                    action: route.action,
                    policy: route.policy,
                };
                place.add(cx, order, route);
            }
        }
        add_host_redirects(cx, main, &place, r_index);
    }
}

fn variant_name(name: &str, variant: usize) -> String {
    match variant {
        0 => name.to_string(),
        n => format!("{name}/variant/{n}"),
    }
}

/// Exact beats Prefix; then the longest path wins; then canary variants by precedence.
fn order_of(
    main: &Served,
    path: &routes::PathSpec,
    precedence: i64,
    rule: usize,
    matched: usize,
) -> RouteOrder {
    RouteOrder {
        family: 2,
        rank: [
            -(path.exact as i64),
            -(path.value.len() as i64),
            -precedence,
            0,
            0,
        ],
        age: RouteOrder::age_of(&main.ingress.metadata),
        load: main.load,
        name: main.meta.name.to_string(),
        rule,
        matched,
    }
}

/// Where a rule's routes go: the TLS port for hosts under `spec.tls`, and the cleartext
/// port — as a redirect to HTTPS when the annotations ask for one.
struct Placement<'a> {
    host: &'a str,
    tls: bool,
    redirect_cleartext: bool,
}

impl Placement<'_> {
    fn add(&self, cx: &mut Context<'_>, order: RouteOrder, route: Route) {
        let tls_port = cx.options.ingress_tls_port;
        if self.tls {
            cx.table
                .add(tls_port, self.host, order.clone(), route.clone());
        }
        let cleartext = match self.redirect_cleartext && tls_port != 0 {
            true => Route {
                action: routes::https_redirect(tls_port),
                filters: Vec::new().into(),
                policy: routes::access_only(&route.policy),
                ..route
            },
            false => route,
        };
        cx.table
            .add(cx.options.ingress_port, self.host, order, cleartext);
    }
}

/// `app-root` and `from-to-www-redirect`, once per rule host.
fn add_host_redirects(cx: &mut Context<'_>, main: &Served, place: &Placement, rule: usize) {
    let base = format!("{}/{}/rule/{rule}", main.meta.namespace, main.meta.name);
    let order = |exact: bool| RouteOrder {
        family: 2,
        rank: [-(exact as i64), i64::MIN + 1, 0, 0, 0],
        age: RouteOrder::age_of(&main.ingress.metadata),
        load: main.load,
        name: main.meta.name.to_string(),
        rule,
        matched: usize::MAX,
    };
    let route = |name: String, matcher, action| Route {
        meta: main.meta.clone(),
        name: name.into(),
        matcher,
        filters: Vec::new().into(),
        action,
        policy: routes::access_policy(&main.settings),
    };
    if let Some(root) = &main.settings.app_root {
        let (matcher, action) = routes::app_root_redirect(root);
        place.add(
            cx,
            order(true),
            route(format!("{base}/app-root"), matcher, action),
        );
    }
    if main.settings.from_to_www_redirect && place.host != "*" {
        let (other, action) = routes::www_redirect(place.host);
        let other_place = Placement {
            host: &other,
            ..*place
        };
        let matcher = ferry_model::RouteMatch::default();
        other_place.add(
            cx,
            order(false),
            route(format!("{base}/www"), matcher, action),
        );
    }
}

/// The Ingress's own backend settings (connect timeout, protocol, affinity) on a copy of
/// the Service's cluster, so other routes to that Service keep theirs.
fn backend_settings(cx: &mut Context<'_>, target: BackendTarget, main: &Served) -> BackendTarget {
    let settings = &main.settings;
    let BackendTarget::Cluster(base) = &target else {
        return target;
    };
    let changes = settings.connect_timeout_ms.is_some()
        || settings.read_timeout_ms.is_some()
        || settings.send_timeout_ms.is_some()
        || settings.backend_protocol != nginx::BackendProtocol::Http
        || settings.hash_on.is_some();
    if !changes {
        return target;
    }
    let suffix = format!("Ingress/{}/{}", main.meta.namespace, main.meta.name);
    let inputs = cx.inputs;
    let name = cx.catalog.variant(base, &suffix, |cluster| {
        if settings.backend_protocol.originates_tls() {
            let service = &cluster.service;
            let host = crate::translate::services::service_fqdn(&service.namespace, &service.name);
            let tls = &settings.backend_tls;
            cluster.tls = Some(backend_tls::origination(inputs, &main.meta, tls, &host).0);
        }
        let policy = &mut cluster.policy;
        policy.connect_timeout_ms = settings.connect_timeout_ms.or(policy.connect_timeout_ms);
        policy.read_timeout_ms = settings.read_timeout_ms.or(policy.read_timeout_ms);
        policy.send_timeout_ms = settings.send_timeout_ms.or(policy.send_timeout_ms);
        if settings.backend_protocol.is_http2() {
            cluster.protocol = ferry_model::UpstreamProtocol::H2c;
        }
        if let Some(hash) = &settings.hash_on {
            cluster.policy.load_balancer = ferry_model::LoadBalancer::ConsistentHash(hash.clone());
        }
    });
    BackendTarget::Cluster(name)
}

fn default_route(cx: &mut Context<'_>, backend: &IngressBackend, main: &Served) -> Route {
    let target = backend_target(cx, backend, &main.meta, "spec.defaultBackend");
    let target = backend_settings(cx, target, main);
    let meta = &main.meta;
    Route {
        meta: meta.clone(),
        name: format!("{}/{}/default", meta.namespace, meta.name).into(),
        matcher: RouteMatch::default(),
        filters: Vec::new().into(),
        action: forward(target),
        policy: routes::access_policy(&main.settings),
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
