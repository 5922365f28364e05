//! Values of the applied annotations. A value Ferry cannot read is a finding naming the
//! annotation; the setting then stays at ingress-nginx's default — except for access
//! control, where an unreadable value keeps the Ingress from being served.

use std::collections::BTreeMap;

use ferry_model::authz::IpBlock;
use ferry_model::{Cors, HashOn, RetryOn, StringMatch};

use super::{
    BackendProtocol, BackendTls, BasicAuthSecret, Finding, FixedRedirect, NextUpstream, Settings,
};

type Annotations<'a> = BTreeMap<&'a str, &'a str>;

pub(super) fn settings(a: &Annotations, findings: &mut Vec<Finding>) -> Settings {
    let mut bad = |name: &str, message: String, blocks: bool| {
        findings.push(Finding {
            name: name.into(),
            reason: "InvalidValue",
            message,
            blocks,
        })
    };
    let rewrite_target = a.get("rewrite-target").map(|s| s.to_string());
    let use_regex = rewrite_target.is_some() || flag(a, "use-regex", false, &mut bad);
    Settings {
        use_regex,
        rewrite_target,
        app_root: path_value(a, "app-root", &mut bad),
        x_forwarded_prefix: a.get("x-forwarded-prefix").map(|s| s.to_string()),
        ssl_redirect: a
            .contains_key("ssl-redirect")
            .then(|| flag(a, "ssl-redirect", true, &mut bad)),
        force_ssl_redirect: flag(a, "force-ssl-redirect", false, &mut bad),
        redirect: fixed_redirect(a, &mut bad),
        from_to_www_redirect: flag(a, "from-to-www-redirect", false, &mut bad),
        ssl_passthrough: flag(a, "ssl-passthrough", false, &mut bad),
        backend_protocol: backend_protocol(a, &mut bad),
        canary: super::canary::read(a, &mut bad),
        connect_timeout_ms: seconds(a, "proxy-connect-timeout", &mut bad),
        read_timeout_ms: seconds(a, "proxy-read-timeout", &mut bad),
        send_timeout_ms: seconds(a, "proxy-send-timeout", &mut bad),
        next_upstream: next_upstream(a, &mut bad),
        cors: cors(a, &mut bad),
        upstream_vhost: a.get("upstream-vhost").map(|s| s.to_string()),
        allow_sources: source_ranges(a, "whitelist-source-range", &mut bad),
        deny_sources: source_ranges(a, "denylist-source-range", &mut bad),
        hash_on: hash_on(a, &mut bad),
        limits: limits(a, &mut bad),
        max_connections: max_connections(a, &mut bad),
        // From the IngressClass's parameters (the translator fills them in).
        limit_req_status: None,
        limit_conn_status: None,
        limit_exempt: source_ranges(a, "limit-whitelist", &mut bad),
        body_size: body_size(a, &mut bad),
        basic_auth_secret: basic_auth(a, &mut bad),
        basic_auth: None,
        backend_tls: backend_tls(a, &mut bad),
        ext_auth: ext_auth(a, &mut bad),
        satisfy_any: satisfy_any(a, &mut bad),
        default_backend: a
            .get("default-backend")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        error_codes: error_codes(a, &mut bad),
        error_pages: None,
    }
}

/// `auth-url` (an `http://` or `https://` service: each request is checked by a subrequest
/// to it), with `auth-method`, `auth-signin` (where a 401 sends the browser),
/// `auth-signin-redirect-param`, `auth-request-redirect` and `auth-response-headers`. A URL
/// Ferry cannot call keeps the Ingress from being served.
fn ext_auth(a: &Annotations, bad: &mut Bad) -> Option<ferry_model::ExtAuth> {
    const WITH_AUTH_URL: &[&str] = &[
        "auth-method",
        "auth-signin",
        "auth-signin-redirect-param",
        "auth-request-redirect",
        "auth-response-headers",
    ];
    let Some(url) = a.get("auth-url").map(|u| u.trim()) else {
        for name in WITH_AUTH_URL.iter().filter(|n| a.contains_key(**n)) {
            let message = "without auth-url it does nothing (as in ingress-nginx)";
            bad(name, message.into(), false);
        }
        return None;
    };
    let usable = (url.starts_with("http://") || url.starts_with("https://"))
        && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
    if !usable {
        let message = format!(
            "{url:?} is not an http:// or https:// URL Ferry can call; the Ingress is not served"
        );
        bad("auth-url", message, true);
        return None;
    }
    let method = match a.get("auth-method").map(|m| m.trim()) {
        Some(m) if http::Method::from_bytes(m.as_bytes()).is_ok() => Some(m.into()),
        Some(m) => {
            let message = format!("{m:?} is not an HTTP method; the Ingress is not served");
            bad("auth-method", message, true);
            return None;
        }
        None => None,
    };
    let list = |name: &str| -> Vec<ferry_model::Str> {
        a.get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(Into::into)
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(ferry_model::ExtAuth {
        url: url.into(),
        method,
        request_redirect: a.get("auth-request-redirect").map(|r| r.trim().into()),
        signin: a.get("auth-signin").map(|s| s.trim().into()),
        redirect_param: a
            .get("auth-signin-redirect-param")
            .map_or("rd", |p| p.trim())
            .into(),
        response_headers: list("auth-response-headers").into(),
        ..ferry_model::ExtAuth::default()
    })
}

/// `proxy-ssl-*` for HTTPS and GRPCS backends. ingress-nginx verifies nothing unless
/// `proxy-ssl-verify: on`; Ferry does the same (and says so on the Ingress).
fn backend_tls(a: &Annotations, bad: &mut Bad) -> BackendTls {
    let https = a.get("backend-protocol").is_some_and(|p| {
        let p = p.trim();
        p.eq_ignore_ascii_case("HTTPS") || p.eq_ignore_ascii_case("GRPCS")
    });
    let names = [
        "proxy-ssl-secret",
        "proxy-ssl-verify",
        "proxy-ssl-name",
        "proxy-ssl-server-name",
    ];
    if !https {
        for name in names.iter().filter(|n| a.contains_key(**n)) {
            bad(
                name,
                "only with backend-protocol HTTPS or GRPCS (as in ingress-nginx): not applied"
                    .into(),
                false,
            );
        }
        return BackendTls::default();
    }
    let on = |name: &str, bad: &mut Bad| match a.get(name).map(|v| v.trim()) {
        None | Some("off") => false,
        Some("on") => true,
        Some(other) => {
            // A verification the user may have meant to turn on: refuse rather than guess.
            bad(
                name,
                format!("{other:?} is not on or off; the Ingress is not served"),
                true,
            );
            false
        }
    };
    let verify = on("proxy-ssl-verify", bad);
    on("proxy-ssl-server-name", bad);
    let secret = a
        .get("proxy-ssl-secret")
        .map(|s| match s.trim().split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (String::new(), s.trim().to_string()),
        });
    if verify && secret.is_none() {
        bad("proxy-ssl-verify", "on needs proxy-ssl-secret with the ca.crt to verify against; the Ingress is not served".into(), true);
    }
    BackendTls {
        secret,
        verify,
        name: a.get("proxy-ssl-name").map(|n| n.trim().to_string()),
    }
}

/// `auth-type: basic` and its Secret (an htpasswd file under the key `auth`, ingress-nginx's
/// default `auth-secret-type: auth-file`). Anything Ferry cannot enforce keeps the Ingress
/// from being served.
fn basic_auth(a: &Annotations, bad: &mut Bad) -> Option<BasicAuthSecret> {
    let Some(kind) = a.get("auth-type").map(|t| t.trim()) else {
        for name in ["auth-secret", "auth-secret-type", "auth-realm"] {
            if a.contains_key(name) {
                bad(
                    name,
                    "without auth-type it does nothing (as in ingress-nginx)".into(),
                    false,
                );
            }
        }
        return None;
    };
    if kind != "basic" {
        bad(
            "auth-type",
            format!("{kind:?}: only basic is enforced; the Ingress is not served"),
            true,
        );
        return None;
    }
    match a.get("auth-secret-type").map(|t| t.trim()) {
        None | Some("auth-file") => {}
        Some(other) => {
            let message = format!("{other:?}: only auth-file (an htpasswd file under the key auth) is read; the Ingress is not served");
            bad("auth-secret-type", message, true);
            return None;
        }
    }
    let Some(secret) = a
        .get("auth-secret")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    else {
        bad(
            "auth-secret",
            "auth-type basic needs the Secret of its users; the Ingress is not served".into(),
            true,
        );
        return None;
    };
    let (namespace, name) = match secret.split_once('/') {
        Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
        None => (None, secret.to_string()),
    };
    let realm = a
        .get("auth-realm")
        .map_or("Authentication Required", |r| r.trim());
    Some(BasicAuthSecret {
        namespace,
        name,
        realm: realm.to_string(),
    })
}

/// nginx sizes: bytes, or with a k, m or g suffix (either case); 0 lifts the limit.
fn body_size(a: &Annotations, bad: &mut Bad) -> Option<u64> {
    let value = a.get("proxy-body-size")?.trim();
    let (digits, unit) = match value.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&value[..i], c.to_ascii_lowercase()),
        _ => (value, 'b'),
    };
    let scale = match unit {
        'b' => 1,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => 0,
    };
    match digits.parse::<u64>() {
        Ok(n) if scale > 0 => Some(n.saturating_mul(scale)),
        _ => {
            bad(
                "proxy-body-size",
                format!("{value:?} is not a size such as 8m"),
                false,
            );
            None
        }
    }
}

/// `limit-rps` and `limit-rpm` (both apply when both are given), each with a burst of
/// `limit-burst-multiplier` (5) times the rate, as ingress-nginx's `limit_req ... burst=
/// nodelay`.
fn limits(a: &Annotations, bad: &mut Bad) -> Vec<(u32, u64, u32)> {
    let multiplier = match a
        .get("limit-burst-multiplier")
        .map(|m| m.trim().parse::<u32>())
    {
        None => 5,
        Some(Ok(m)) if m >= 1 => m,
        Some(_) => {
            bad(
                "limit-burst-multiplier",
                "not a whole number from 1; 5 is used".into(),
                false,
            );
            5
        }
    };
    let mut out = Vec::new();
    for (name, window_ms) in [("limit-rps", 1_000), ("limit-rpm", 60_000)] {
        let Some(value) = a.get(name) else { continue };
        match value.trim().parse::<u32>() {
            Ok(requests) if requests > 0 => {
                out.push((requests, window_ms, requests.saturating_mul(multiplier)))
            }
            _ => bad(
                name,
                format!("{value:?} is not a number of requests from 1"),
                false,
            ),
        }
    }
    out
}

/// `limit-connections`: nginx's `limit_conn` by client address — requests in progress at
/// once (nginx counts a connection while one of its requests is processed; over HTTP/2,
/// Ferry counts each request, as nginx counts each stream).
fn max_connections(a: &Annotations, bad: &mut Bad) -> Option<u32> {
    let value = a.get("limit-connections")?;
    match value.trim().parse::<u32>() {
        Ok(max) if max > 0 => Some(max),
        _ => {
            let message = format!("{value:?} is not a number of connections from 1");
            bad("limit-connections", message, false);
            None
        }
    }
}

/// `satisfy`: `all` (default) or `any`. Another value keeps the Ingress from being served
/// (it decides who gets in).
fn satisfy_any(a: &Annotations, bad: &mut Bad) -> bool {
    match a.get("satisfy").map(|v| v.trim()) {
        None | Some("all") => false,
        Some("any") => true,
        Some(other) => {
            let message = format!("{other:?} is not all or any; the Ingress is not served");
            bad("satisfy", message, true);
            false
        }
    }
}

/// `custom-http-errors`: comma-separated statuses from 400 to 599.
fn error_codes(a: &Annotations, bad: &mut Bad) -> Vec<u16> {
    let Some(value) = a.get("custom-http-errors") else {
        return Vec::new();
    };
    let mut codes = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item.parse::<u16>() {
            Ok(code) if (400..=599).contains(&code) => codes.push(code),
            _ => bad(
                "custom-http-errors",
                format!("{item:?} is not a status from 400 to 599; left out"),
                false,
            ),
        }
    }
    codes
}

type Bad<'b> = dyn FnMut(&str, String, bool) + 'b;

pub(super) fn flag(a: &Annotations, name: &str, default: bool, bad: &mut Bad) -> bool {
    match a.get(name).map(|v| v.trim()) {
        None => default,
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            bad(name, format!("{other:?} is not true or false"), false);
            default
        }
    }
}

fn path_value(a: &Annotations, name: &str, bad: &mut Bad) -> Option<String> {
    let value = a.get(name)?;
    if value.starts_with('/') {
        Some(value.to_string())
    } else {
        bad(
            name,
            format!("{value:?} is not a path starting with /"),
            false,
        );
        None
    }
}

/// ingress-nginx reads timeouts as whole seconds.
fn seconds(a: &Annotations, name: &str, bad: &mut Bad) -> Option<u64> {
    let value = a.get(name)?;
    match value.trim().trim_end_matches('s').parse::<u64>() {
        Ok(s) => Some(s * 1000),
        Err(_) => {
            bad(name, format!("{value:?} is not a number of seconds"), false);
            None
        }
    }
}

fn fixed_redirect(a: &Annotations, bad: &mut Bad) -> Option<FixedRedirect> {
    // ingress-nginx gives the permanent redirect precedence over the temporal one.
    let kinds = [
        (
            "permanent-redirect",
            "permanent-redirect-code",
            301,
            300..=308,
        ),
        (
            "temporal-redirect",
            "temporal-redirect-code",
            302,
            300..=308,
        ),
    ];
    for (name, code_name, default, codes) in kinds {
        let Some(url) = a.get(name) else { continue };
        if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with('/')) {
            bad(
                name,
                format!("{url:?} is not an http(s) URL or a path"),
                false,
            );
            continue;
        }
        let status = match a.get(code_name).map(|c| c.trim().parse::<u16>()) {
            None => default,
            Some(Ok(code)) if codes.contains(&code) => code,
            Some(_) => {
                let message = format!("not a redirect status (300-308); {default} is used");
                bad(code_name, message, false);
                default
            }
        };
        return Some(FixedRedirect {
            url: url.to_string(),
            status,
        });
    }
    None
}

fn backend_protocol(a: &Annotations, bad: &mut Bad) -> BackendProtocol {
    let Some(value) = a.get("backend-protocol") else {
        return BackendProtocol::Http;
    };
    match value.trim().to_ascii_uppercase().as_str() {
        "HTTP" | "AUTO_HTTP" => BackendProtocol::Http,
        "H2C" | "GRPC" => BackendProtocol::H2c,
        "HTTPS" => BackendProtocol::Https,
        "GRPCS" => BackendProtocol::Grpcs,
        other => {
            bad(
                "backend-protocol",
                format!("{other:?} is not one of HTTP, HTTPS, GRPC, GRPCS, H2C"),
                false,
            );
            BackendProtocol::Http
        }
    }
}

/// ingress-nginx's defaults: retry on `error timeout`, 3 tries, no time limit.
fn next_upstream(a: &Annotations, bad: &mut Bad) -> Option<NextUpstream> {
    let given = [
        "proxy-next-upstream",
        "proxy-next-upstream-tries",
        "proxy-next-upstream-timeout",
    ];
    if !given.iter().any(|name| a.contains_key(name)) {
        return None;
    }
    let mut retry_on = RetryOn {
        connect_failure: true,
        reset: true,
        ..RetryOn::default()
    };
    let mut codes = Vec::new();
    if let Some(list) = a.get("proxy-next-upstream") {
        retry_on = RetryOn::default();
        for condition in list.split_whitespace() {
            match condition {
                "error" => {
                    retry_on.connect_failure = true;
                    retry_on.reset = true;
                }
                "timeout" => retry_on.reset = true,
                "off" => {
                    return Some(NextUpstream {
                        retry_on: RetryOn::default(),
                        tries: 1,
                        timeout_ms: None,
                    })
                }
                code if code.starts_with("http_") => match code[5..].parse::<u16>() {
                    Ok(status) => codes.push(status),
                    Err(_) => bad(
                        "proxy-next-upstream",
                        format!("{code:?} is not a condition Ferry knows"),
                        false,
                    ),
                },
                other => bad(
                    "proxy-next-upstream",
                    format!("{other:?} is not a condition Ferry applies"),
                    false,
                ),
            }
        }
    }
    retry_on.status_codes = codes.into();
    let tries = match a
        .get("proxy-next-upstream-tries")
        .map(|t| t.trim().parse::<u32>())
    {
        None => 3,
        Some(Ok(0)) => 3, // nginx: 0 means no limit; Ferry keeps ingress-nginx's default
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            bad(
                "proxy-next-upstream-tries",
                "not a number of tries".into(),
                false,
            );
            3
        }
    };
    let timeout_ms = seconds(a, "proxy-next-upstream-timeout", bad).filter(|ms| *ms > 0);
    Some(NextUpstream {
        retry_on,
        tries,
        timeout_ms,
    })
}

/// `enable-cors` with ingress-nginx's defaults for what is not given.
fn cors(a: &Annotations, bad: &mut Bad) -> Option<Cors> {
    if !flag(a, "enable-cors", false, bad) {
        return None;
    }
    let list = |name: &str, default: &str| -> Vec<ferry_model::Str> {
        a.get(name)
            .copied()
            .unwrap_or(default)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Into::into)
            .collect()
    };
    let origins = list("cors-allow-origin", "*")
        .into_iter()
        .map(|origin| origin_match(&origin))
        .collect::<Vec<_>>();
    let max_age = match a.get("cors-max-age").map(|v| v.trim().parse::<u64>()) {
        None => Some(1_728_000),
        Some(Ok(seconds)) => Some(seconds),
        Some(Err(_)) => {
            bad("cors-max-age", "not a number of seconds".into(), false);
            Some(1_728_000)
        }
    };
    Some(Cors {
        allow_origins: origins.into(),
        allow_methods: list("cors-allow-methods", "GET, PUT, POST, DELETE, PATCH, OPTIONS").into(),
        allow_headers: list(
            "cors-allow-headers",
            "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization",
        )
        .into(),
        expose_headers: list("cors-expose-headers", "").into(),
        max_age_seconds: max_age,
        allow_credentials: flag(a, "cors-allow-credentials", true, bad),
        forward_refused_preflights: false,
    })
}

/// An origin entry: `*`, an exact origin, or a `*.` wildcard subdomain (ingress-nginx's).
fn origin_match(origin: &str) -> StringMatch {
    match origin.split_once("://*.") {
        Some((scheme, domain)) => StringMatch::Regex(
            format!(
                "{}://[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.{}",
                regex::escape(scheme),
                regex::escape(domain)
            )
            .into(),
        ),
        None => StringMatch::Exact(origin.into()),
    }
}

/// A comma-separated CIDR list; a bad entry blocks the Ingress (an allow list that lost
/// an entry, or a deny list that lost one, is not what the user wrote).
fn source_ranges(a: &Annotations, name: &str, bad: &mut Bad) -> Vec<IpBlock> {
    let Some(list) = a.get(name) else {
        return Vec::new();
    };
    let mut ranges = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match IpBlock::parse(entry) {
            Some(block) => ranges.push(block),
            None => {
                let message =
                    format!("{entry:?} is not an address or CIDR range; the Ingress is not served");
                bad(name, message, true)
            }
        }
    }
    ranges
}

/// `affinity: cookie` (with its `session-cookie-*`), else `upstream-hash-by`.
fn hash_on(a: &Annotations, bad: &mut Bad) -> Option<HashOn> {
    match a.get("affinity").map(|v| v.trim()) {
        Some("cookie") => {
            let name = a
                .get("session-cookie-name")
                .copied()
                .unwrap_or("INGRESSCOOKIE");
            let ttl = a
                .get("session-cookie-max-age")
                .or_else(|| a.get("session-cookie-expires"))
                .and_then(|v| v.trim().parse::<u64>().ok());
            return Some(HashOn::Cookie {
                name: name.into(),
                path: a.get("session-cookie-path").map(|p| (*p).into()),
                // ingress-nginx always issues its cookie; without an age it is a session
                // cookie, which Ferry issues with a day's lifetime.
                ttl_seconds: Some(ttl.unwrap_or(86_400)),
            });
        }
        Some(other) => bad(
            "affinity",
            format!("{other:?}: only cookie affinity exists"),
            false,
        ),
        None => {}
    }
    let key = a.get("upstream-hash-by")?.trim();
    match key {
        "$remote_addr" | "$binary_remote_addr" => Some(HashOn::SourceIp),
        _ if key.starts_with("$http_") => Some(HashOn::Header(key[6..].replace('_', "-").into())),
        _ if key.starts_with("$cookie_") => Some(HashOn::Cookie {
            name: key[8..].into(),
            path: None,
            ttl_seconds: None,
        }),
        _ if key.starts_with("$arg_") => Some(HashOn::QueryParameter(key[5..].into())),
        other => {
            let message = format!("{other:?}: Ferry hashes on $remote_addr, $http_<header>, $cookie_<name> or $arg_<name>");
            bad("upstream-hash-by", message, false);
            None
        }
    }
}
