//! One Ingress as HTTPRoutes (one per rule host) and, for its limits, a
//! LocalRateLimitPolicy.

use ferry_model::StringMatch;
use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress, IngressBackend};
use serde_json::{json, Value};

use super::{note, MigrateOptions, Migration, Source};
use crate::translate::ingress_nginx::canary::HeaderRule;
use crate::translate::ingress_nginx::{BackendProtocol, Canary};
use crate::Inputs;

/// The TLS hosts of an Ingress with their Secrets (`*` for an entry without hosts).
pub fn tls_hosts(ingress: &Ingress) -> Vec<(String, String)> {
    let entries = ingress
        .spec
        .as_ref()
        .and_then(|s| s.tls.as_deref())
        .unwrap_or(&[]);
    let mut out = Vec::new();
    for entry in entries {
        let Some(secret) = &entry.secret_name else {
            continue;
        };
        let hosts = entry
            .hosts
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| vec!["*".into()]);
        out.extend(hosts.into_iter().map(|h| (h, secret.clone())));
    }
    out
}

/// The HTTPS listener of a host (listener names are DNS labels).
pub fn https_listener(host: &str) -> String {
    match host {
        "*" => "https".into(),
        host => format!("https-{}", slug(host)),
    }
}

fn slug(text: &str) -> String {
    let slug: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug.trim_matches('-').to_string()
}

/// Whether `main` serves a host and path of the canary `canary`.
pub fn has_main(main: &Source, canary: &Source) -> bool {
    paths(canary.ingress).iter().any(|(host, path)| {
        paths(main.ingress)
            .iter()
            .any(|(h, p)| h == host && p.path == path.path && p.path_type == path.path_type)
    })
}

fn paths(ingress: &Ingress) -> Vec<(String, HTTPIngressPath)> {
    let rules = ingress
        .spec
        .as_ref()
        .and_then(|s| s.rules.as_deref())
        .unwrap_or(&[]);
    rules
        .iter()
        .flat_map(|rule| {
            let host = rule.host.clone().unwrap_or_else(|| "*".into());
            let paths = rule
                .http
                .as_ref()
                .map(|h| h.paths.clone())
                .unwrap_or_default();
            paths.into_iter().map(move |p| (host.clone(), p))
        })
        .collect()
}

pub fn convert(
    inputs: &Inputs,
    source: &Source,
    canaries: &[&Source],
    options: &MigrateOptions,
    out: &mut Migration,
) {
    settings_notes(source, out);
    let tls = tls_hosts(source.ingress);
    let rules = source
        .ingress
        .spec
        .as_ref()
        .and_then(|s| s.rules.as_deref())
        .unwrap_or(&[]);
    let mut route_names = Vec::new();
    for rule in rules {
        let host = rule.host.clone().unwrap_or_else(|| "*".into());
        let paths = rule
            .http
            .as_ref()
            .map(|h| h.paths.as_slice())
            .unwrap_or(&[]);
        let has_tls = tls.iter().any(|(h, _)| *h == host || h == "*");
        let redirect = source.settings.force_ssl_redirect
            || (has_tls && source.settings.ssl_redirect.unwrap_or(false));
        let mut parents = Vec::new();
        if !redirect {
            parents.push(parent(source, "http"));
        }
        if has_tls {
            let listener = tls
                .iter()
                .find(|(h, _)| *h == host)
                .map_or("*", |(h, _)| h.as_str());
            parents.push(parent(source, &https_listener(listener)));
        }
        let name = format!(
            "{}-{}",
            source.name,
            if host == "*" {
                "any".into()
            } else {
                slug(&host)
            }
        );
        let mut rules_out = Vec::new();
        if let Some(root) = &source.settings.app_root {
            rules_out.push(json!({
                "matches": [{"path": {"type": "Exact", "value": "/"}}],
                "filters": [{"type": "RequestRedirect", "requestRedirect": {
                    "path": {"type": "ReplaceFullPath", "replaceFullPath": root}, "statusCode": 302}}],
            }));
        }
        for path in paths {
            let canary = canaries.iter().copied().find(|c| {
                paths_of(c).iter().any(|(h, p)| {
                    *h == host && p.path == path.path && p.path_type == path.path_type
                })
            });
            rules_out.extend(path_rules(inputs, source, path, canary, out));
        }
        if redirect {
            out.objects.push(https_redirect(
                source,
                &format!("{name}-to-https"),
                &host,
                options.https_port,
            ));
        }
        if parents.is_empty() {
            continue;
        }
        let mut spec = json!({"parentRefs": parents, "rules": rules_out});
        if host != "*" {
            spec["hostnames"] = json!([host]);
        }
        out.objects.push(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": source.namespace},
            "spec": spec,
        }));
        route_names.push(name);
    }
    if let Some(backend) = source
        .ingress
        .spec
        .as_ref()
        .and_then(|s| s.default_backend.as_ref())
    {
        if let Some(backend_ref) = backend_ref(inputs, source, backend, 1, out) {
            let name = format!("{}-default", source.name);
            out.objects.push(json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": name, "namespace": source.namespace},
                "spec": {"parentRefs": [parent(source, "http")], "rules": [{"backendRefs": [backend_ref]}]},
            }));
            route_names.push(name);
        }
    }
    if let Some(policy) = rate_limit_policy(source, &route_names, out) {
        out.objects.push(policy);
    }
}

fn paths_of(source: &Source) -> Vec<(String, HTTPIngressPath)> {
    paths(source.ingress)
}

fn parent(source: &Source, section: &str) -> Value {
    json!({"name": source.gateway, "sectionName": section})
}

/// Settings Gateway API has no field for.
fn settings_notes(source: &Source, out: &mut Migration) {
    let s = &source.settings;
    let mut add = |annotation: &str, message: &str, security: bool| {
        let field = crate::translate::ingress_nginx::registry::field(annotation);
        out.notes.push(note(source, &field, message, security));
    };
    if s.connect_timeout_ms.is_some() {
        add(
            "proxy-connect-timeout",
            "no Gateway API field (a DestinationRule's connectionPool.tcp.connectTimeout does it)",
            false,
        );
    }
    if s.error_pages.is_some() {
        add("default-backend", "Gateway API has no default backend or error pages: requests for a backend without endpoints get 503 and upstream errors are relayed as they are", false);
    }
    if s.max_connections.is_some() {
        add("limit-connections", "no Gateway API or LocalRateLimitPolicy field for requests in progress per client: not converted", false);
    }
    for (annotation, set) in [
        ("proxy-read-timeout", s.read_timeout_ms.is_some()),
        ("proxy-send-timeout", s.send_timeout_ms.is_some()),
    ] {
        if set {
            add(annotation, "no Gateway API field for a gap between two reads or writes (HTTPRoute timeouts bound the whole request)", false);
        }
    }
    if s.hash_on.is_some() {
        add("affinity", "no Gateway API field in the standard channel (a DestinationRule's consistentHash does it)", false);
    }
    if s.max_body_bytes().is_some() {
        add(
            "proxy-body-size",
            "no Gateway API field (ferry gateway --max-request-body limits every route)",
            false,
        );
    }
    if s.backend_protocol == BackendProtocol::H2c {
        add(
            "backend-protocol",
            "set appProtocol: kubernetes.io/h2c on the Service's port instead",
            false,
        );
    }
}

fn path_rules(
    inputs: &Inputs,
    source: &Source,
    path: &HTTPIngressPath,
    canary: Option<&Source>,
    out: &mut Migration,
) -> Vec<Value> {
    let settings = &source.settings;
    let value = path.path.clone().unwrap_or_else(|| "/".into());
    let regex = settings.use_regex || (source.host_regex && !is_literal(&value));
    if source.host_regex && !regex && value != "/" {
        let message = format!("ingress-nginx reads {value:?} as a regex on this host (another Ingress of it says use-regex): it also matched longer names and any case; converted as a PathPrefix");
        out.notes.push(note(source, "spec.rules", &message, false));
    }
    let (path_match, rewrite) =
        match path_and_rewrite(settings, regex, &value, path.path_type == "Exact") {
            Ok(converted) => converted,
            Err(message) => {
                out.notes
                    .push(note(source, "metadata.annotations", &message, false));
                return Vec::new();
            }
        };
    let mut filters = filters(settings, rewrite);
    if let Some(redirect) = &settings.redirect {
        filters = vec![fixed_redirect(&redirect.url, redirect.status)];
        return vec![json!({"matches": [{"path": path_match}], "filters": filters})];
    }
    let Some(main) = backend_ref(inputs, source, &path.backend, 1, out) else {
        return Vec::new();
    };
    let rule = |headers: Vec<Value>, backends: Vec<Value>| {
        let mut m = json!({"path": path_match});
        if !headers.is_empty() {
            m["headers"] = headers.into();
        }
        let mut rule = json!({"matches": [m], "backendRefs": backends});
        if !filters.is_empty() {
            rule["filters"] = filters.clone().into();
        }
        policy_fields(settings, &mut rule);
        rule
    };
    let Some(canary) = canary else {
        return vec![rule(Vec::new(), vec![main])];
    };
    let settings_of_canary = canary.settings.canary.as_ref().expect("a canary");
    let Some(canary_ref) = backend_ref(inputs, canary, &canary_backend(canary, path), 1, out)
    else {
        return vec![rule(Vec::new(), vec![main])];
    };
    canary_rules(settings_of_canary, &main, &canary_ref)
        .into_iter()
        .map(|(headers, backends)| rule(headers, backends))
        .collect()
}

fn canary_backend(canary: &Source, path: &HTTPIngressPath) -> IngressBackend {
    paths(canary.ingress)
        .into_iter()
        .find(|(_, p)| p.path == path.path && p.path_type == path.path_type)
        .map(|(_, p)| p.backend)
        .unwrap_or_default()
}

/// Header, cookie and weight rules, as the translator's variants (same precedence: a rule
/// with more header matches wins in Gateway API too).
fn canary_rules(
    canary: &Canary,
    main: &Value,
    canary_ref: &Value,
) -> Vec<(Vec<Value>, Vec<Value>)> {
    let header = |name: &str, value: StringMatch| match value {
        StringMatch::Exact(v) => json!({"name": name, "value": v.to_string()}),
        StringMatch::Regex(v) => {
            json!({"type": "RegularExpression", "name": name, "value": v.to_string()})
        }
        _ => json!({"name": name, "value": ""}),
    };
    let mut out = Vec::new();
    if let Some((name, rule)) = &canary.header {
        match rule {
            HeaderRule::AlwaysNever => {
                out.push((
                    vec![header(name, StringMatch::Exact("always".into()))],
                    vec![canary_ref.clone()],
                ));
                out.push((
                    vec![header(name, StringMatch::Exact("never".into()))],
                    vec![main.clone()],
                ));
            }
            HeaderRule::Value(v) => out.push((
                vec![header(name, StringMatch::Exact(v.as_str().into()))],
                vec![canary_ref.clone()],
            )),
            HeaderRule::Pattern(p) => out.push((
                vec![header(name, StringMatch::Regex(p.as_str().into()))],
                vec![canary_ref.clone()],
            )),
        }
    }
    for variant in canary.variants().into_iter().filter(|v| v.precedence == 1) {
        let headers = variant
            .headers
            .iter()
            .map(|h| header(&h.name, h.value.clone()))
            .collect();
        let to = match variant.pick {
            crate::translate::ingress_nginx::canary::Pick::Canary => canary_ref.clone(),
            _ => main.clone(),
        };
        out.push((headers, vec![to]));
    }
    let mut weighted_main = main.clone();
    weighted_main["weight"] = (canary.total - canary.weight).into();
    let mut weighted_canary = canary_ref.clone();
    weighted_canary["weight"] = canary.weight.into();
    out.push((Vec::new(), vec![weighted_main, weighted_canary]));
    out
}

/// The path match and the rewrite that reproduce nginx's: the common `PATH(/|$)(.*)` with
/// `rewrite-target: /$2` is a prefix replaced by `/`; a target without groups replaces the
/// whole path; any other group use has no Gateway API form.
fn path_and_rewrite(
    settings: &crate::translate::ingress_nginx::Settings,
    regex: bool,
    value: &str,
    exact: bool,
) -> Result<(Value, Option<Value>), String> {
    if !regex {
        let kind = if exact { "Exact" } else { "PathPrefix" };
        return Ok((json!({"type": kind, "value": value}), None));
    }
    let target = settings.rewrite_target.as_deref();
    if let Some(prefix) = value.strip_suffix("(/|$)(.*)").filter(|p| is_literal(p)) {
        let path = json!({"type": "PathPrefix", "value": prefix});
        return match target {
            Some("/$2") => Ok((
                path,
                Some(json!({"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"})),
            )),
            Some(t) if !t.contains('$') => Ok((
                path,
                Some(json!({"type": "ReplaceFullPath", "replaceFullPath": t})),
            )),
            Some(t) => Err(format!(
                "rewrite-target {t:?} with groups of {value:?} has no Gateway API form"
            )),
            None => Ok((path, None)),
        };
    }
    let regex = json!({"type": "RegularExpression", "value": format!("(?i)(?:{value}).*")});
    match target {
        None => Ok((regex, None)),
        Some(t) if !t.contains('$') => Ok((
            regex,
            Some(json!({"type": "ReplaceFullPath", "replaceFullPath": t})),
        )),
        Some(t) => Err(format!(
            "rewrite-target {t:?} with groups of {value:?} has no Gateway API form"
        )),
    }
}

/// A path without regex syntax.
fn is_literal(path: &str) -> bool {
    !path.contains(['(', '[', '*', '+', '?', '|', '\\', '^', '$'])
}

fn filters(
    settings: &crate::translate::ingress_nginx::Settings,
    rewrite: Option<Value>,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url_rewrite = serde_json::Map::new();
    if let Some(path) = rewrite {
        url_rewrite.insert("path".into(), path);
    }
    if let Some(host) = &settings.upstream_vhost {
        url_rewrite.insert("hostname".into(), host.clone().into());
    }
    if !url_rewrite.is_empty() {
        out.push(json!({"type": "URLRewrite", "urlRewrite": url_rewrite}));
    }
    if let Some(prefix) = &settings.x_forwarded_prefix {
        out.push(
            json!({"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": "X-Forwarded-Prefix", "value": prefix}]}}),
        );
    }
    if let Some(cors) = &settings.cors {
        let origins: Vec<String> = cors
            .allow_origins
            .iter()
            .map(|o| match o {
                StringMatch::Exact(v) => v.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        let mut filter = json!({
            "allowOrigins": origins,
            "allowMethods": cors.allow_methods.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            "allowHeaders": cors.allow_headers.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            "allowCredentials": cors.allow_credentials,
        });
        if !cors.expose_headers.is_empty() {
            filter["exposeHeaders"] = cors
                .expose_headers
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .into();
        }
        if let Some(age) = cors.max_age_seconds {
            filter["maxAge"] = age.into();
        }
        out.push(json!({"type": "CORS", "cors": filter}));
    }
    out
}

/// Retries and the request timeout of `proxy-next-upstream`.
fn policy_fields(settings: &crate::translate::ingress_nginx::Settings, rule: &mut Value) {
    let Some(next) = &settings.next_upstream else {
        return;
    };
    if let Some(ms) = next.timeout_ms {
        rule["timeouts"] = json!({"request": format!("{ms}ms")});
    }
    if next.tries > 1 {
        let mut retry = json!({"attempts": next.tries - 1});
        if !next.retry_on.status_codes.is_empty() {
            retry["codes"] = next.retry_on.status_codes.to_vec().into();
        }
        rule["retry"] = retry;
    }
}

fn fixed_redirect(url: &str, status: u16) -> Value {
    let mut redirect = json!({"statusCode": status});
    let rest = match url.split_once("://") {
        Some((scheme, rest)) => {
            redirect["scheme"] = scheme.into();
            rest
        }
        None => {
            redirect["path"] = json!({"type": "ReplaceFullPath", "replaceFullPath": url});
            return json!({"type": "RequestRedirect", "requestRedirect": redirect});
        }
    };
    let (authority, path) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    match authority
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
    {
        Some((host, port)) => {
            redirect["hostname"] = host.into();
            redirect["port"] = port.parse::<u16>().unwrap_or(0).into();
        }
        None => redirect["hostname"] = authority.into(),
    }
    redirect["path"] = json!({"type": "ReplaceFullPath", "replaceFullPath": path});
    json!({"type": "RequestRedirect", "requestRedirect": redirect})
}

fn https_redirect(source: &Source, name: &str, host: &str, https_port: u16) -> Value {
    let mut spec = json!({
        "parentRefs": [parent(source, "http")],
        "rules": [{"filters": [{"type": "RequestRedirect", "requestRedirect": {
            "scheme": "https", "port": https_port, "statusCode": 308}}]}],
    });
    if host != "*" {
        spec["hostnames"] = json!([host]);
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": source.namespace},
        "spec": spec,
    })
}

/// A backendRef for an Ingress backend (a named port resolved through the Service).
fn backend_ref(
    inputs: &Inputs,
    source: &Source,
    backend: &IngressBackend,
    weight: u32,
    out: &mut Migration,
) -> Option<Value> {
    let Some(service) = &backend.service else {
        out.notes.push(note(
            source,
            "spec.rules",
            "resource backends have no Gateway API form",
            false,
        ));
        return None;
    };
    let port = service.port.as_ref();
    let number = port.and_then(|p| p.number).or_else(|| {
        let name = port.and_then(|p| p.name.as_deref())?;
        inputs
            .services
            .iter()
            .find(|s| {
                s.metadata.namespace.as_deref() == Some(&source.namespace)
                    && s.metadata.name.as_deref() == Some(&service.name)
            })?
            .spec
            .as_ref()?
            .ports
            .as_ref()?
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.port)
    });
    let Some(number) = number else {
        let message = format!(
            "the port of Service {} is named but the Service is not among the inputs",
            service.name
        );
        out.notes.push(note(source, "spec.rules", &message, false));
        return None;
    };
    let mut reference = json!({"name": service.name, "port": number});
    if weight != 1 {
        reference["weight"] = weight.into();
    }
    Some(reference)
}

/// `limit-rps` / `limit-rpm` as a LocalRateLimitPolicy per limit on the Ingress's routes.
fn rate_limit_policy(source: &Source, routes: &[String], out: &mut Migration) -> Option<Value> {
    if source.settings.limits.len() > 1 {
        let field = crate::translate::ingress_nginx::registry::field("limit-rpm");
        let message = "one limit per route in a LocalRateLimitPolicy: limit-rps is converted, limit-rpm is not";
        out.notes.push(note(source, &field, message, false));
    }
    let (requests, window_ms, burst) = *source.settings.limits.first()?;
    let unit = if window_ms == 1000 {
        "Second"
    } else {
        "Minute"
    };
    let targets: Vec<Value> = routes
        .iter()
        .map(|r| json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": r}))
        .collect();
    let mut spec = json!({
        "targetRefs": targets,
        "limit": {"requests": requests, "unit": unit},
        "burst": burst,
        "key": {"type": "ClientIP"},
        "statusCode": source.settings.limit_req_status.unwrap_or(503),
    });
    if !source.settings.limit_exempt.is_empty() {
        let ranges: Vec<String> = source
            .settings
            .limit_exempt
            .iter()
            .map(|b| format!("{}/{}", b.network, b.prefix))
            .collect();
        spec["exemptSourceRanges"] = ranges.into();
    }
    Some(json!({
        "apiVersion": "policy.ferry.dev/v1alpha1",
        "kind": "LocalRateLimitPolicy",
        "metadata": {"name": format!("{}-limit", source.name), "namespace": source.namespace},
        "spec": spec,
    }))
}
