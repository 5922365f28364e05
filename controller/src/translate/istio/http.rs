//! VirtualService http[] entries -> IR routes, in document order (Istio is first-match).

use ferry_model::{
    Action, BackendTarget, Filter, HeaderMatch, Meta, Mirror, PathMatch, PathRewrite, QueryMatch,
    Redirect, RedirectPort, Rewrite, Route, RouteMatch, Str, StringMatch, WeightedBackend,
};
use std::collections::BTreeMap;

use super::{gateway_key, CompiledHttp};
use crate::inputs::istio::{
    self, Destination, HttpRoute, MatchRequest, RouteDestination, VirtualService,
};
use crate::translate::gateway_api::header_mods;
use crate::translate::report::Condition;
use crate::translate::services::{service_of_host, SubsetRef};
use crate::translate::Context;

pub(super) fn compile(cx: &mut Context<'_>, vs: &VirtualService, meta: &Meta) -> Vec<CompiledHttp> {
    let mut out = Vec::new();
    for (index, http) in vs.spec.http.iter().enumerate() {
        let field = format!("spec.http[{index}]");
        let Some(action) = action(cx, http, meta, &field) else {
            continue;
        };
        let policy = match super::policy::route_policy(http, &field) {
            Ok(policy) => policy,
            Err((field, message)) => {
                cx.reports.push(
                    meta,
                    Condition::error("Valid", "Invalid", message).field(field),
                );
                continue;
            }
        };
        let filters = filters(cx, http, meta);
        let matches = if http.matches.is_empty() {
            vec![MatchRequest::default()]
        } else {
            http.matches.clone()
        };
        for (m_index, m) in matches.iter().enumerate() {
            let m_field = format!("{field}.match[{m_index}]");
            if !from_this_source(cx, m) {
                continue; // sourceLabels / sourceNamespace name other workloads
            }
            let matcher = match route_match(m, &m_field) {
                Ok(matcher) => matcher,
                Err(condition) => {
                    cx.reports.push(meta, condition);
                    continue;
                }
            };
            let route = Route {
                meta: meta.clone(),
                name: format!(
                    "{}/{}/http/{index}/match/{m_index}",
                    meta.namespace, meta.name
                )
                .into(),
                matcher,
                filters: filters.clone().into(),
                action: action.clone(),
                policy: policy.clone(),
            };
            // `mesh` names the sidecars, not a Gateway of the VirtualService's namespace.
            let gateways = m
                .gateways
                .iter()
                .map(|g| match g.as_str() {
                    "mesh" => g.clone(),
                    _ => gateway_key(g, &meta.namespace),
                })
                .collect();
            out.push(CompiledHttp {
                rule: index,
                matched: m_index,
                route,
                gateways,
            });
        }
    }
    out
}

fn action(cx: &mut Context<'_>, http: &HttpRoute, meta: &Meta, field: &str) -> Option<Action> {
    if let Some(r) = &http.redirect {
        return match redirect(r, &format!("{field}.redirect")) {
            Ok(redirect) => Some(Action::Redirect(redirect)),
            Err(condition) => {
                cx.reports.push(meta, condition);
                None
            }
        };
    }
    if let Some(d) = &http.direct_response {
        let body = d
            .body
            .as_ref()
            .and_then(|b| b.string.clone().or(b.bytes.clone()))
            .unwrap_or_default();
        let Some(status) = u16::try_from(d.status)
            .ok()
            .filter(|s| (200..600).contains(s))
        else {
            let message = format!("status {} is not an HTTP status from 200 to 599", d.status);
            let field = format!("{field}.directResponse.status");
            cx.reports.push(
                meta,
                Condition::error("Valid", "InvalidValue", message).field(field),
            );
            return None;
        };
        return Some(Action::Direct {
            status,
            body: body.into(),
        });
    }
    if http.route.is_empty() {
        let message = "an http route needs route, redirect or directResponse";
        cx.reports.push(
            meta,
            Condition::error("Valid", "Invalid", message).field(field.to_string()),
        );
        return None;
    }
    Some(Action::Forward(
        weighted_backends(cx, meta, &http.route, field).into(),
    ))
}

/// A route's destinations as weighted backends (all weights 1 when none is given); one that
/// does not resolve stays as an invalid target (503), reported with its field.
pub(super) fn weighted_backends(
    cx: &mut Context<'_>,
    meta: &Meta,
    route: &[RouteDestination],
    field: &str,
) -> Vec<WeightedBackend> {
    let unweighted = route.iter().all(|d| d.weight.is_none());
    route
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let weight = if unweighted {
                1
            } else {
                d.weight.unwrap_or(0).max(0) as u32
            };
            let target = match destination(cx, &meta.namespace, &d.destination) {
                Ok(cluster) => BackendTarget::Cluster(cluster),
                Err(message) => {
                    let field = format!("{field}.route[{i}].destination");
                    cx.reports.push(
                        meta,
                        Condition::warn("Valid", "ReferenceNotFound", message.clone()).field(field),
                    );
                    BackendTarget::Invalid {
                        status: 503,
                        reason: message.into(),
                    }
                }
            };
            let filters = d.headers.as_ref().map(header_filters).unwrap_or_default();
            WeightedBackend {
                weight,
                target,
                filters: filters.into(),
            }
        })
        .collect()
}

fn redirect(r: &istio::Redirect, field: &str) -> Result<Redirect, Condition> {
    let invalid = |what: &str, message: String| {
        Condition::error("Valid", "InvalidValue", message).field(format!("{field}.{what}"))
    };
    let port = match (r.port, r.derive_port.as_deref()) {
        (Some(p), _) => RedirectPort::Explicit(
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| invalid("port", format!("port {p} is not from 1 to 65535")))?,
        ),
        (None, Some("FROM_PROTOCOL_DEFAULT")) => RedirectPort::SchemeDefault,
        _ => RedirectPort::FromRequest,
    };
    let code = r.redirect_code.unwrap_or(301);
    let status = u16::try_from(code)
        .ok()
        .filter(|s| (300..400).contains(s))
        .ok_or_else(|| invalid("redirectCode", format!("{code} is not a 3xx status")))?;
    Ok(Redirect {
        scheme: r.scheme.clone().map(Into::into),
        host: r.authority.clone().map(Into::into),
        port,
        path: r.uri.clone().map(|u| PathRewrite::Full(u.into())),
        status,
    })
}

fn filters(cx: &mut Context<'_>, http: &HttpRoute, meta: &Meta) -> Vec<Filter> {
    let mut filters = http
        .headers
        .as_ref()
        .map(header_filters)
        .unwrap_or_default();
    if let Some(r) = &http.rewrite {
        let path = match (&r.uri, &r.uri_regex_rewrite) {
            (Some(uri), _) => Some(PathRewrite::Prefix(uri.as_str().into())),
            (None, Some(rx)) => Some(PathRewrite::Regex {
                pattern: rx.pattern.as_str().into(),
                substitution: rx.rewrite.as_str().into(),
            }),
            (None, None) => None,
        };
        filters.push(Filter::Rewrite(Rewrite {
            host: r.authority.clone().map(Into::into),
            path,
        }));
    }
    let mirrors = http
        .mirror
        .iter()
        .map(|d| (d, http.mirror_percentage.as_ref()))
        .chain(
            http.mirrors
                .iter()
                .map(|m| (&m.destination, m.percentage.as_ref())),
        );
    for (destination, percent) in mirrors {
        match self::destination(cx, &meta.namespace, destination) {
            Ok(cluster) => {
                let per_million =
                    percent.map_or(1_000_000, |p| (p.value.clamp(0.0, 100.0) * 10_000.0) as u32);
                filters.push(Filter::Mirror(Mirror {
                    cluster,
                    per_million,
                }));
            }
            Err(message) => cx
                .reports
                .push(meta, Condition::warn("Valid", "ReferenceNotFound", message)),
        }
    }
    filters
}

fn header_filters(h: &istio::Headers) -> Vec<Filter> {
    let mods = |ops: &istio::HeaderOperations| {
        header_mods(ops.set.iter(), ops.add.iter(), ops.remove.iter())
    };
    let mut out = Vec::new();
    if let Some(request) = &h.request {
        out.push(Filter::RequestHeaders(mods(request)));
    }
    if let Some(response) = &h.response {
        out.push(Filter::ResponseHeaders(mods(response)));
    }
    out
}

/// Resolves a destination host (short name, `name.namespace`, or the cluster-local FQDN)
/// and optional subset to a cluster.
fn destination(cx: &mut Context<'_>, vs_ns: &str, d: &Destination) -> Result<Str, String> {
    let from = cx
        .options
        .mesh_namespace
        .as_deref()
        .unwrap_or(vs_ns)
        .to_string();
    let port = d.port.as_ref().map(|p| p.number);
    if let Some((entry, _)) = cx.catalog.entry_for_host(&d.host, &from, port) {
        let subset = match &d.subset {
            Some(subset) => Some(find_entry_subset(cx, &d.host, vs_ns, subset)?),
            None => None,
        };
        return cx
            .catalog
            .resolve_entry(entry, &d.host, port, subset)
            .map_err(|e| e.to_string());
    }
    let (namespace, name) = service_of_host(&d.host, vs_ns).ok_or_else(|| {
        format!(
            "host {} is neither a Kubernetes Service nor a ServiceEntry host",
            d.host
        )
    })?;
    let subset = match &d.subset {
        Some(subset) => Some(find_subset(cx, &namespace, &name, vs_ns, subset)?),
        None => None,
    };
    cx.catalog
        .resolve(&namespace, &name, port, subset)
        .map_err(|e| e.to_string())
}

/// The named subset of a ServiceEntry host, from a DestinationRule whose `host` names it.
fn find_entry_subset<'i>(
    cx: &Context<'i>,
    host: &str,
    vs_ns: &str,
    subset: &str,
) -> Result<SubsetRef<'i>, String> {
    let mut rules: Vec<_> = cx
        .inputs
        .destination_rules
        .iter()
        .filter(|dr| dr.spec.host.eq_ignore_ascii_case(host))
        .collect();
    rules.sort_by_key(|dr| dr.metadata.namespace.as_deref() != Some(vs_ns));
    first_defining(&rules, subset)
        .ok_or_else(|| format!("subset {subset} of {host} is not defined by any DestinationRule"))
}

/// The subset named `subset` in the first of `rules` that defines it.
fn first_defining<'i>(
    rules: &[&'i crate::inputs::istio::DestinationRule],
    subset: &str,
) -> Option<SubsetRef<'i>> {
    rules.iter().find_map(|dr| {
        let s = dr.spec.subsets.iter().find(|s| s.name == subset)?;
        Some(SubsetRef {
            name: &s.name,
            labels: &s.labels,
            rule: dr,
        })
    })
}

/// The named subset from a DestinationRule for the Service, preferring one in the
/// VirtualService's namespace, then the Service's.
fn find_subset<'i>(
    cx: &Context<'i>,
    namespace: &str,
    name: &str,
    vs_ns: &str,
    subset: &str,
) -> Result<SubsetRef<'i>, String> {
    let mut rules: Vec<_> = cx
        .inputs
        .destination_rules
        .iter()
        .filter(|dr| {
            let dr_ns = dr.metadata.namespace.as_deref().unwrap_or("default");
            service_of_host(&dr.spec.host, dr_ns).is_some_and(|(n, s)| n == namespace && s == name)
        })
        .collect();
    rules.sort_by_key(|dr| {
        let dr_ns = dr.metadata.namespace.as_deref().unwrap_or("default");
        (dr_ns != vs_ns, dr_ns != namespace)
    });
    first_defining(&rules, subset).ok_or_else(|| {
        format!("subset {subset} of {namespace}/{name} is not defined by any DestinationRule")
    })
}

/// `sourceLabels` and `sourceNamespace` select the client workload. The proxy translated for
/// is that client (a sidecar's own workload, a gateway's labels and namespace), so a match
/// naming another workload does not apply here and one naming this workload applies fully.
/// A gateway whose namespace is not known (standalone) matches `sourceNamespace` never.
fn from_this_source(cx: &Context<'_>, m: &MatchRequest) -> bool {
    let labels = &cx.options.gateway_labels;
    let labels_ok = m
        .source_labels
        .iter()
        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v));
    let namespace = cx
        .options
        .mesh_namespace
        .as_deref()
        .or(cx.options.workload_namespace.as_deref());
    let namespace_ok = m
        .source_namespace
        .as_deref()
        .is_none_or(|wanted| namespace == Some(wanted));
    labels_ok && namespace_ok
}

fn route_match(m: &MatchRequest, field: &str) -> Result<RouteMatch, Condition> {
    let path = match &m.uri {
        None => PathMatch::Any,
        Some(u) => match string_match(u, &format!("{field}.uri"))? {
            StringMatch::Exact(v) => PathMatch::Exact(v),
            StringMatch::Prefix(v) => PathMatch::Prefix(v),
            StringMatch::Regex(v) => PathMatch::Regex(v),
            StringMatch::Present => PathMatch::Any,
        },
    };
    let optional = |s: &Option<istio::StringMatch>, name: &str| {
        s.as_ref()
            .map(|s| string_match(s, &format!("{field}.{name}")))
            .transpose()
    };
    Ok(RouteMatch {
        path,
        ignore_path_case: m.ignore_uri_case,
        method: optional(&m.method, "method")?,
        authority: optional(&m.authority, "authority")?,
        headers: header_matches(&m.headers, &format!("{field}.headers"))?.into(),
        without_headers: header_matches(&m.without_headers, &format!("{field}.withoutHeaders"))?
            .into(),
        query_params: m
            .query_params
            .iter()
            .map(|(name, v)| {
                Ok(QueryMatch {
                    name: name.as_str().into(),
                    value: string_match(v, &format!("{field}.queryParams.{name}"))?,
                })
            })
            .collect::<Result<Vec<_>, Condition>>()?
            .into(),
        port: match m.port {
            None => None,
            Some(p) => Some(u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                let message = format!("port {p} is not from 1 to 65535");
                Condition::error("Valid", "InvalidValue", message).field(format!("{field}.port"))
            })?),
        },
    })
}

fn header_matches(
    headers: &BTreeMap<String, istio::StringMatch>,
    field: &str,
) -> Result<Vec<HeaderMatch>, Condition> {
    headers
        .iter()
        .map(|(name, v)| {
            let value = string_match(v, &format!("{field}.{name}"))?;
            Ok(HeaderMatch {
                name: name.to_ascii_lowercase().into(),
                value,
            })
        })
        .collect()
}

fn string_match(s: &istio::StringMatch, field: &str) -> Result<StringMatch, Condition> {
    match (&s.exact, &s.prefix, &s.regex) {
        (Some(v), None, None) => Ok(StringMatch::Exact(v.as_str().into())),
        (None, Some(v), None) => Ok(StringMatch::Prefix(v.as_str().into())),
        (None, None, Some(v)) => {
            crate::translate::gateway_api::checked_regex(v, &format!("{field}.regex"))?;
            Ok(StringMatch::Regex(v.as_str().into()))
        }
        (None, None, None) => Ok(StringMatch::Present),
        _ => Err(Condition::error(
            "Valid",
            "Invalid",
            "only one of exact, prefix, regex may be set",
        )
        .field(field.to_string())),
    }
}
