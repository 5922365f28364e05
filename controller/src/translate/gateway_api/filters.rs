//! HTTPRoute filters -> IR filters, and Service references shared by backends and mirrors.

use ferry_model::{
    Cors, Filter, HeaderMods, Meta, Mirror, PathRewrite, Redirect, RedirectPort, Rewrite, Str,
    StringMatch,
};
use gateway_api::apis::experimental::httproutes::{
    HttpRouteRulesFilters, HttpRouteRulesFiltersCors, HttpRouteRulesFiltersExternalAuth,
    HttpRouteRulesFiltersExternalAuthProtocol as ExternalAuthProtocol,
    HttpRouteRulesFiltersRequestMirror, HttpRouteRulesFiltersRequestRedirect,
    HttpRouteRulesFiltersRequestRedirectPathType as RedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme as Scheme, HttpRouteRulesFiltersType as FilterType,
    HttpRouteRulesFiltersUrlRewrite, HttpRouteRulesFiltersUrlRewritePathType as RewritePathType,
};

use super::rules::RefFailure;
use super::GROUP;
use crate::translate::report::Condition;
use crate::translate::Context;

/// Request and response header modifiers are distinct generated types of the same shape.
macro_rules! modifier_mods {
    ($modifier:expr) => {{
        let m = $modifier.as_ref();
        header_mods(
            m.and_then(|m| m.set.as_ref())
                .into_iter()
                .flatten()
                .map(|h| (&h.name, &h.value)),
            m.and_then(|m| m.add.as_ref())
                .into_iter()
                .flatten()
                .map(|h| (&h.name, &h.value)),
            m.and_then(|m| m.remove.as_ref()).into_iter().flatten(),
        )
    }};
}

pub(super) struct RuleFilters {
    pub filters: Vec<Filter>,
    pub redirect: Option<Redirect>,
    pub cors: Option<Cors>,
    /// `ExternalAuth` with protocol HTTP: each request is checked first.
    pub ext_auth: Option<ferry_model::ExtAuth>,
    /// A filter Ferry cannot apply (ExtensionRef, ExternalAuth over gRPC): the spec forbids skipping
    /// it, so the rule answers 500 instead of forwarding requests it should have checked.
    pub unsupported: Option<String>,
}

pub(super) fn convert(
    cx: &mut Context<'_>,
    filters: &[HttpRouteRulesFilters],
    meta: &Meta,
    field: &str,
    failure: &mut RefFailure,
) -> RuleFilters {
    let mut out = RuleFilters {
        filters: Vec::new(),
        redirect: None,
        cors: None,
        ext_auth: None,
        unsupported: None,
    };
    for (index, filter) in filters.iter().enumerate() {
        let field = format!("{field}.filters[{index}]");
        match filter.r#type {
            FilterType::RequestHeaderModifier => {
                let mods = modifier_mods!(filter.request_header_modifier);
                out.filters.push(Filter::RequestHeaders(mods));
            }
            FilterType::ResponseHeaderModifier => {
                let mods = modifier_mods!(filter.response_header_modifier);
                out.filters.push(Filter::ResponseHeaders(mods));
            }
            FilterType::RequestRedirect => {
                if let Some(r) = filter.request_redirect.as_ref() {
                    out.redirect = Some(redirect(cx, r, meta, &field));
                }
            }
            FilterType::UrlRewrite => {
                if let Some(rewrite) = filter.url_rewrite.as_ref() {
                    out.filters.push(Filter::Rewrite(url_rewrite(rewrite)));
                }
            }
            FilterType::RequestMirror => {
                if let Some(m) = filter.request_mirror.as_ref() {
                    match mirror(cx, m, meta) {
                        Ok(mirror) => out.filters.push(Filter::Mirror(mirror)),
                        Err((reason, message)) => {
                            failure.get_or_insert((reason, format!("{field}: {message}")));
                        }
                    }
                }
            }
            FilterType::Cors => out.cors = filter.cors.as_ref().map(cors),
            FilterType::ExternalAuth => {
                let converted = match filter.external_auth.as_ref() {
                    Some(auth) => external_auth(cx, auth, meta),
                    None => Err(("InvalidFilter", "externalAuth is missing".to_string())),
                };
                match converted {
                    Ok(auth) => out.ext_auth = Some(auth),
                    Err((reason, message)) => {
                        let message = format!(
                            "{message}: requests this rule matches are answered 500 (the \
                             filter must not be skipped)"
                        );
                        out.unsupported
                            .get_or_insert(format!("{field}: ExternalAuth not applied"));
                        cx.reports.push(
                            meta,
                            Condition::warn("Accepted", reason, message).field(field),
                        );
                    }
                }
            }
            FilterType::ExtensionRef => {
                let message = format!(
                    "filter type {:?} is not supported yet: requests this rule matches are \
                     answered 500 (the filter must not be skipped)",
                    filter.r#type
                );
                out.unsupported
                    .get_or_insert(format!("{field}: {:?} filter not supported", filter.r#type));
                cx.reports.push(
                    meta,
                    Condition::warn("Accepted", "UnsupportedValue", message).field(field),
                );
            }
        }
    }
    out
}

/// `ExternalAuth` with protocol HTTP: Envoy's HTTP ext_authz to the referenced Service.
/// gRPC (Envoy's ext_authz protobuf) and forwarding the body are not supported yet.
fn external_auth(
    cx: &mut Context<'_>,
    auth: &HttpRouteRulesFiltersExternalAuth,
    meta: &Meta,
) -> Result<ferry_model::ExtAuth, (&'static str, String)> {
    if auth.protocol == ExternalAuthProtocol::Grpc {
        let message =
            "externalAuth.protocol GRPC (Envoy's ext_authz over gRPC) is not supported yet";
        return Err(("UnsupportedValue", message.into()));
    }
    if auth
        .forward_body
        .as_ref()
        .and_then(|b| b.max_size)
        .unwrap_or(0)
        > 0
    {
        let message = "externalAuth.forwardBody is not supported yet";
        return Err(("UnsupportedValue", message.into()));
    }
    let cluster = resolve_service_ref(cx, meta, (&auth.backend_ref).into())
        .map_err(|(reason, message)| (reason, format!("externalAuth.backendRef: {message}")))?;
    let http = auth.http.as_ref();
    let lower = |list: Option<&Vec<String>>| -> std::sync::Arc<[Str]> {
        list.into_iter()
            .flatten()
            .map(|h| h.to_ascii_lowercase().into())
            .collect()
    };
    Ok(ferry_model::ExtAuth {
        protocol: ferry_model::ExtAuthProtocol::Envoy,
        cluster: Some(cluster),
        path_prefix: http.and_then(|h| h.path.as_deref()).unwrap_or("").into(),
        request_headers: lower(http.and_then(|h| h.allowed_headers.as_ref())),
        // None listed: every header of the answer but Host (the spec's default).
        response_headers: match lower(http.and_then(|h| h.allowed_response_headers.as_ref())) {
            listed if listed.is_empty() => vec!["*".into()].into(),
            listed => listed,
        },
        ..ferry_model::ExtAuth::default()
    })
}

/// Header names are case-insensitive; they are kept lower-case so HTTP/2 can carry them.
pub(crate) fn header_mods<'h>(
    set: impl Iterator<Item = (&'h String, &'h String)>,
    add: impl Iterator<Item = (&'h String, &'h String)>,
    remove: impl Iterator<Item = &'h String>,
) -> HeaderMods {
    let pairs =
        |it: &mut dyn Iterator<Item = (&'h String, &'h String)>| -> std::sync::Arc<[(Str, Str)]> {
            it.map(|(n, v)| (n.to_ascii_lowercase().into(), v.as_str().into()))
                .collect()
        };
    HeaderMods {
        set: pairs(&mut { set }),
        add: pairs(&mut { add }),
        remove: remove.map(|n| n.to_ascii_lowercase().into()).collect(),
    }
}

/// Gateway API CORS: origins are exact, `*`, or with a `*` wildcard in the host part.
fn cors(c: &HttpRouteRulesFiltersCors) -> Cors {
    let origin = |o: &String| {
        if o != "*" && o.contains('*') {
            let pattern = regex::escape(o).replace("\\*", "[^/]*");
            StringMatch::Regex(pattern.into())
        } else {
            StringMatch::Exact(o.as_str().into())
        }
    };
    let list = |l: &Option<Vec<String>>| l.iter().flatten().map(|v| v.as_str().into()).collect();
    Cors {
        allow_origins: c.allow_origins.iter().flatten().map(origin).collect(),
        allow_methods: list(&c.allow_methods),
        allow_headers: list(&c.allow_headers),
        expose_headers: list(&c.expose_headers),
        max_age_seconds: c.max_age.map(|m| m.max(0) as u64),
        allow_credentials: c.allow_credentials.unwrap_or(false),
        forward_refused_preflights: false,
    }
}

fn redirect(
    cx: &mut Context<'_>,
    r: &HttpRouteRulesFiltersRequestRedirect,
    meta: &Meta,
    field: &str,
) -> Redirect {
    let scheme = r.scheme.as_ref().map(|s| match s {
        Scheme::Http => "http",
        Scheme::Https => "https",
    });
    // Spec: explicit port; else the scheme's well-known port; else the listener's port.
    // The CRD bounds both (port 1-65535, statusCode 301/302/303/307/308); files skip the
    // API server's schema, so an out-of-range value is reported and the default used (a
    // cast would wrap it into another port or status).
    let mut invalid = |what: &str, value: i64| {
        let message = format!("{what} {value} is out of range; the default is used");
        let field = format!("{field}.requestRedirect.{what}");
        cx.reports.push(
            meta,
            Condition::warn("Accepted", "UnsupportedValue", message).field(field),
        );
    };
    let valid_port = r
        .port
        .and_then(|p| u16::try_from(p).ok().filter(|p| *p > 0));
    if let (Some(p), None) = (r.port, valid_port) {
        invalid("port", i64::from(p));
    }
    let valid_status = r
        .status_code
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| [301, 302, 303, 307, 308].contains(c));
    if let (Some(c), None) = (r.status_code, valid_status) {
        invalid("statusCode", c);
    }
    let port = match (valid_port, scheme) {
        (Some(p), _) => RedirectPort::Explicit(p),
        (None, Some(_)) => RedirectPort::SchemeDefault,
        (None, None) => RedirectPort::Listener,
    };
    let path = r.path.as_ref().and_then(|p| match p.r#type {
        RedirectPathType::ReplaceFullPath => p
            .replace_full_path
            .clone()
            .map(|v| PathRewrite::Full(v.into())),
        RedirectPathType::ReplacePrefixMatch => p
            .replace_prefix_match
            .clone()
            .map(|v| PathRewrite::Prefix(v.into())),
    });
    Redirect {
        scheme: scheme.map(Into::into),
        host: r.hostname.clone().map(Into::into),
        port,
        path,
        status: valid_status.unwrap_or(302),
    }
}

fn url_rewrite(r: &HttpRouteRulesFiltersUrlRewrite) -> Rewrite {
    let path = r.path.as_ref().and_then(|p| match p.r#type {
        RewritePathType::ReplaceFullPath => p
            .replace_full_path
            .clone()
            .map(|v| PathRewrite::Full(v.into())),
        RewritePathType::ReplacePrefixMatch => p
            .replace_prefix_match
            .clone()
            .map(|v| PathRewrite::Prefix(v.into())),
    });
    Rewrite {
        host: r.hostname.clone().map(Into::into),
        path,
    }
}

fn mirror(
    cx: &mut Context<'_>,
    m: &HttpRouteRulesFiltersRequestMirror,
    meta: &Meta,
) -> Result<Mirror, (&'static str, String)> {
    let cluster = resolve_service_ref(cx, meta, (&m.backend_ref).into())?;
    let per_million = match (&m.fraction, m.percent) {
        (Some(f), _) => {
            let denominator = f.denominator.unwrap_or(100).max(1) as u64;
            (f.numerator.max(0) as u64 * 1_000_000 / denominator).min(1_000_000) as u32
        }
        (None, Some(p)) => (p.clamp(0, 100) as u32) * 10_000,
        (None, None) => 1_000_000,
    };
    Ok(Mirror {
        cluster,
        per_million,
    })
}

/// The fields of a backendRef or mirror backendRef (distinct generated types, same shape).
pub(super) struct ServiceRef<'r> {
    pub group: Option<&'r str>,
    pub kind: Option<&'r str>,
    pub name: &'r str,
    pub namespace: Option<&'r str>,
    pub port: Option<i32>,
}

macro_rules! service_ref_from {
    ($t:ty) => {
        impl<'r> From<&'r $t> for ServiceRef<'r> {
            fn from(r: &'r $t) -> Self {
                ServiceRef {
                    group: r.group.as_deref(),
                    kind: r.kind.as_deref(),
                    name: &r.name,
                    namespace: r.namespace.as_deref(),
                    port: r.port,
                }
            }
        }
    };
}

service_ref_from!(gateway_api::apis::experimental::httproutes::HttpRouteRulesBackendRefs);
service_ref_from!(
    gateway_api::apis::experimental::httproutes::HttpRouteRulesFiltersRequestMirrorBackendRef
);
service_ref_from!(
    gateway_api::apis::experimental::httproutes::HttpRouteRulesFiltersExternalAuthBackendRef
);

/// Resolves a Gateway API reference to a Service port, enforcing ReferenceGrants for
/// cross-namespace references. Errors carry the spec's ResolvedRefs reason.
pub(super) fn resolve_service_ref(
    cx: &mut Context<'_>,
    route: &Meta,
    reference: ServiceRef<'_>,
) -> Result<Str, (&'static str, String)> {
    let ServiceRef {
        group,
        kind,
        name,
        namespace,
        port,
    } = reference;
    let group = group.unwrap_or("");
    let kind = kind.unwrap_or("Service");
    if !matches!(group, "" | "core") || kind != "Service" {
        return Err((
            "InvalidKind",
            format!("backend kind {group}/{kind} is not supported"),
        ));
    }
    let namespace = namespace.unwrap_or(&route.namespace);
    if namespace != &*route.namespace && !grant_allows(cx, route, namespace, "Service", name) {
        let message = format!(
            "no ReferenceGrant in {namespace} allows HTTPRoute from {} to Service {name}",
            route.namespace
        );
        return Err(("RefNotPermitted", message));
    }
    let Some(port) = port.and_then(|p| u32::try_from(p).ok()) else {
        return Err((
            "UnsupportedValue",
            format!("Service {namespace}/{name}: port is required"),
        ));
    };
    cx.catalog
        .resolve(namespace, name, Some(port), None)
        .map_err(|e| ("BackendNotFound", e.to_string()))
}

/// Whether a ReferenceGrant in `to_namespace` lets `from` (a Gateway API object) refer to the
/// core object `to_kind`/`to_name` there.
pub(super) fn grant_allows(
    cx: &Context<'_>,
    from: &Meta,
    to_namespace: &str,
    to_kind: &str,
    to_name: &str,
) -> bool {
    cx.inputs.reference_grants.iter().any(|grant| {
        grant.metadata.namespace.as_deref() == Some(to_namespace)
            && grant.spec.from.iter().any(|f| {
                f.group == GROUP
                    && f.kind == from.kind.as_ref()
                    && f.namespace == from.namespace.as_ref()
            })
            && grant.spec.to.iter().any(|t| {
                matches!(t.group.as_str(), "" | "core")
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|n| n == to_name)
            })
    })
}
