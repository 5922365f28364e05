//! One Ingress path as routes, with what its ingress-nginx annotations ask for: the path
//! match (regex or not), rewrites and headers, a fixed redirect, CORS, retries, the
//! per-Ingress backend settings, and a canary's variants.

use ferry_model::{
    Action, BackendTarget, Filter, HeaderMods, PathMatch, PathRewrite, Redirect, RedirectPort,
    Rewrite, RouteMatch, RoutePolicy, WeightedBackend,
};

use super::nginx::canary::Pick;
use super::nginx::{Canary, FixedRedirect, Settings};

/// A path of an Ingress rule.
pub struct PathSpec<'a> {
    pub value: &'a str,
    pub exact: bool,
    /// A case-insensitive regex anchored at the start (`use-regex` on an Ingress of the
    /// host).
    pub regex: bool,
}

/// The canary a main route shares its traffic with.
pub struct CanaryTarget<'a> {
    pub canary: &'a Canary,
    pub target: BackendTarget,
}

/// A route's match, filters, action and policy, and its precedence among variants.
pub struct Built {
    pub matcher: RouteMatch,
    pub filters: Vec<Filter>,
    pub action: Action,
    pub policy: RoutePolicy,
    pub precedence: i64,
}

pub fn path_match(path: &PathSpec) -> RouteMatch {
    let (path_match, ignore_path_case) = if path.regex {
        // nginx `location ~* ^PATH`: case-insensitive, anchored at the start only.
        (
            PathMatch::Regex(format!("(?:{}).*", path.value).into()),
            true,
        )
    } else if path.exact {
        (PathMatch::Exact(path.value.into()), false)
    } else {
        (PathMatch::SegmentPrefix(path.value.into()), false)
    };
    RouteMatch {
        path: path_match,
        ignore_path_case,
        ..RouteMatch::default()
    }
}

/// The routes of one path: one, or one per canary variant.
pub fn build(
    settings: &Settings,
    name: &str,
    path: &PathSpec,
    main: BackendTarget,
    canary: Option<CanaryTarget>,
) -> Vec<Built> {
    let matcher = path_match(path);
    let filters = filters(settings, path);
    let policy = policy(settings, name);
    if let Some(redirect) = &settings.redirect {
        let action = Action::Redirect(fixed_redirect(redirect));
        return vec![built(matcher, Vec::new(), action, access_only(&policy), 0)];
    }
    let Some(canary) = canary else {
        let action = forward(&[(1, main)]);
        return vec![built(matcher, filters, action, policy, 0)];
    };
    canary
        .canary
        .variants()
        .into_iter()
        .map(|variant| {
            let backends = match variant.pick {
                Pick::Canary => vec![(1, canary.target.clone())],
                Pick::Main => vec![(1, main.clone())],
                Pick::Weighted => weighted(canary.canary, &main, &canary.target),
            };
            let mut matcher = matcher.clone();
            matcher.headers = variant.headers.into();
            let action = forward(&backends);
            built(
                matcher,
                filters.clone(),
                action,
                policy.clone(),
                variant.precedence,
            )
        })
        .collect()
}

fn built(
    matcher: RouteMatch,
    filters: Vec<Filter>,
    action: Action,
    policy: RoutePolicy,
    precedence: i64,
) -> Built {
    Built {
        matcher,
        filters,
        action,
        policy,
        precedence,
    }
}

fn weighted(
    canary: &Canary,
    main: &BackendTarget,
    target: &BackendTarget,
) -> Vec<(u32, BackendTarget)> {
    let main_weight = canary.total - canary.weight;
    [(main_weight, main.clone()), (canary.weight, target.clone())]
        .into_iter()
        .filter(|(weight, _)| *weight > 0)
        .collect()
}

fn forward(backends: &[(u32, BackendTarget)]) -> Action {
    let backends: Vec<WeightedBackend> = backends
        .iter()
        .map(|(weight, target)| WeightedBackend {
            weight: *weight,
            target: target.clone(),
            filters: Vec::new().into(),
        })
        .collect();
    Action::Forward(backends.into())
}

fn filters(settings: &Settings, path: &PathSpec) -> Vec<Filter> {
    let mut out = Vec::new();
    let path_rewrite = settings
        .rewrite_target
        .as_ref()
        .map(|target| PathRewrite::Regex {
            // nginx's `rewrite`: the whole path becomes the target, `$n` its groups.
            pattern: format!("(?i)^(?:{}).*$", path.value).into(),
            substitution: nginx_groups_to_re2(target).into(),
        });
    let host = settings.upstream_vhost.as_deref().map(Into::into);
    if path_rewrite.is_some() || host.is_some() {
        out.push(Filter::Rewrite(Rewrite {
            host,
            path: path_rewrite,
        }));
    }
    if let Some(prefix) = &settings.x_forwarded_prefix {
        out.push(Filter::RequestHeaders(HeaderMods {
            set: vec![("x-forwarded-prefix".into(), prefix.as_str().into())].into(),
            ..HeaderMods::default()
        }));
    }
    out
}

/// nginx names groups `$1`; the rewrite engine takes RE2's `\1`.
fn nginx_groups_to_re2(target: &str) -> String {
    let mut out = String::with_capacity(target.len());
    let mut chars = target.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('$', Some(d)) if d.is_ascii_digit() => out.push('\\'),
            _ => out.push(c),
        }
    }
    out
}

fn policy(settings: &Settings, name: &str) -> RoutePolicy {
    let retry = settings
        .next_upstream
        .as_ref()
        .map(|next| ferry_model::RetryPolicy {
            attempts: next.tries.saturating_sub(1),
            retry_on: next.retry_on.clone(),
            backoff_base_ms: 0,
            backoff_max_ms: 0,
        });
    RoutePolicy {
        timeout_ms: settings.next_upstream.as_ref().and_then(|n| n.timeout_ms),
        retry: retry.filter(|r| r.attempts > 0),
        cors: settings.cors.clone(),
        source_ranges: source_ranges(settings),
        rate_limits: rate_limits(settings, name).into(),
        concurrency_limit: settings
            .max_connections
            .map(|max| ferry_model::ConcurrencyLimit {
                name: format!("{name}/connections").into(),
                max,
                status: settings.limit_conn_status.unwrap_or(503),
                exempt: settings.limit_exempt.clone().into(),
            }),
        max_request_body_bytes: settings.max_body_bytes(),
        basic_auth: settings.basic_auth.clone(),
        ext_auth: settings.ext_auth.clone(),
        satisfy_any: settings.satisfy_any,
        error_pages: settings.error_pages.clone(),
        ..RoutePolicy::default()
    }
}

/// ingress-nginx's limits, per client address, answered 503 as ingress-nginx does (its
/// `limit-req-status-code` default); a LocalRateLimitPolicy chooses its own status.
fn rate_limits(settings: &Settings, name: &str) -> Vec<ferry_model::RateLimit> {
    settings
        .limits
        .iter()
        .map(|(requests, window_ms, burst)| ferry_model::RateLimit {
            name: format!("{name}/{}", if *window_ms == 1000 { "rps" } else { "rpm" }).into(),
            requests: *requests,
            window_ms: *window_ms,
            burst: *burst,
            key: ferry_model::RateLimitKey::ClientIp,
            status: settings.limit_req_status.unwrap_or(503),
            exempt: settings.limit_exempt.clone().into(),
        })
        .collect()
}

/// `whitelist-source-range` / `denylist-source-range`: they hold for every route of the
/// Ingress, its redirects included.
pub fn source_ranges(settings: &Settings) -> Option<ferry_model::SourceRanges> {
    let (allow, deny) = (&settings.allow_sources, &settings.deny_sources);
    (!allow.is_empty() || !deny.is_empty()).then(|| ferry_model::SourceRanges {
        allow: allow.clone().into(),
        deny: deny.clone().into(),
    })
}

/// Who may use the Ingress's routes that carry nothing else (default backend, redirects).
pub fn access_policy(settings: &Settings) -> RoutePolicy {
    RoutePolicy {
        source_ranges: source_ranges(settings),
        basic_auth: settings.basic_auth.clone(),
        ext_auth: settings.ext_auth.clone(),
        satisfy_any: settings.satisfy_any,
        error_pages: settings.error_pages.clone(),
        ..RoutePolicy::default()
    }
}

/// What a redirect made from a route keeps of its policy: who may use it.
pub fn access_only(policy: &RoutePolicy) -> RoutePolicy {
    RoutePolicy {
        source_ranges: policy.source_ranges.clone(),
        basic_auth: policy.basic_auth.clone(),
        ext_auth: policy.ext_auth.clone(),
        satisfy_any: policy.satisfy_any,
        ..RoutePolicy::default()
    }
}

/// `permanent-redirect` / `temporal-redirect`: the URL as written.
fn fixed_redirect(redirect: &FixedRedirect) -> Redirect {
    let (scheme, rest) = match redirect.url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_string()), rest),
        None => (None, redirect.url.as_str()),
    };
    let (authority, path) = match (&scheme, rest.find('/')) {
        (None, _) => (None, rest),
        (Some(_), Some(i)) => (Some(&rest[..i]), &rest[i..]),
        (Some(_), None) => (Some(rest), "/"),
    };
    let (host, port) = match authority.map(|a| a.rsplit_once(':')) {
        Some(Some((host, port))) if port.parse::<u16>().is_ok() => (
            Some(host),
            RedirectPort::Explicit(port.parse().unwrap_or(80)),
        ),
        Some(_) => (authority, RedirectPort::SchemeDefault),
        None => (None, RedirectPort::FromRequest),
    };
    Redirect {
        scheme: scheme.map(Into::into),
        host: host.map(Into::into),
        port,
        path: Some(PathRewrite::Full(path.into())),
        status: redirect.status,
    }
}

/// Cleartext requests to a host with TLS go to HTTPS (ingress-nginx: 308).
pub fn https_redirect(tls_port: u16) -> Action {
    Action::Redirect(Redirect {
        scheme: Some("https".into()),
        host: None,
        port: RedirectPort::Explicit(tls_port),
        path: None,
        status: 308,
    })
}

/// `app-root`: `/` answers 302 to the application's root.
pub fn app_root_redirect(root: &str) -> (RouteMatch, Action) {
    let matcher = RouteMatch {
        path: PathMatch::Exact("/".into()),
        ..RouteMatch::default()
    };
    let action = Action::Redirect(Redirect {
        scheme: None,
        host: None,
        port: RedirectPort::FromRequest,
        path: Some(PathRewrite::Full(root.into())),
        status: 302,
    });
    (matcher, action)
}

/// `from-to-www-redirect`: the other form of the host answers 308 to the rule's host.
pub fn www_redirect(host: &str) -> (String, Action) {
    let other = match host.strip_prefix("www.") {
        Some(bare) => bare.to_string(),
        None => format!("www.{host}"),
    };
    let action = Action::Redirect(Redirect {
        scheme: None,
        host: Some(host.into()),
        port: RedirectPort::FromRequest,
        path: None,
        status: 308,
    });
    (other, action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_groups_become_re2_groups() {
        assert_eq!(nginx_groups_to_re2("/$2"), "/\\2");
        assert_eq!(nginx_groups_to_re2("/a$1/b$"), "/a\\1/b$");
    }

    #[test]
    fn a_fixed_redirect_keeps_the_url_as_written() {
        let r = fixed_redirect(&FixedRedirect {
            url: "https://example.com:8443/new".into(),
            status: 301,
        });
        assert_eq!(r.scheme.as_deref(), Some("https"));
        assert_eq!(r.host.as_deref(), Some("example.com"));
        assert_eq!(r.port, RedirectPort::Explicit(8443));
        assert_eq!(r.path, Some(PathRewrite::Full("/new".into())));
    }
}
