//! Every `nginx.ingress.kubernetes.io/*` annotation and what Ferry does with it. An Ingress
//! is never served with one of its annotations silently dropped: each is applied, refused
//! (snippets), or reported — and an unapplied one about access control or TLS keeps the
//! whole Ingress from being served (it would otherwise be open where the user closed it).

/// The annotation prefix of ingress-nginx.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// What Ferry does with one annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Applied with ingress-nginx's meaning.
    Applied,
    /// Raw nginx configuration: refused, and the Ingress is not served (snippets were the
    /// door of CVE-2025-1974-class holes and mean nothing outside nginx).
    Refused,
    /// Access control or TLS that Ferry does not enforce yet: the Ingress is not served.
    FailsClosed,
    /// Reported on the Ingress and by `ferry analyze`; the Ingress is served without it.
    NotApplied,
}

/// The annotations Ferry applies (names without the prefix).
const APPLIED: &[&str] = &[
    "rewrite-target",
    "use-regex",
    "app-root",
    "x-forwarded-prefix",
    "ssl-redirect",
    "force-ssl-redirect",
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "temporal-redirect-code",
    "from-to-www-redirect",
    "ssl-passthrough",
    "backend-protocol",
    "canary",
    "canary-weight",
    "canary-weight-total",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "proxy-next-upstream",
    "proxy-next-upstream-tries",
    "proxy-next-upstream-timeout",
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
    "upstream-vhost",
    "whitelist-source-range",
    "denylist-source-range",
    "affinity",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-max-age",
    "session-cookie-expires",
    "upstream-hash-by",
    "limit-rps",
    "limit-rpm",
    "limit-burst-multiplier",
    "limit-connections",
    "limit-whitelist",
    "proxy-body-size",
    "auth-type",
    "auth-secret",
    "auth-secret-type",
    "auth-realm",
    "proxy-ssl-secret",
    "proxy-ssl-verify",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
    "auth-url",
    "default-backend",
    "custom-http-errors",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-response-headers",
    "auth-method",
    "auth-request-redirect",
    "satisfy",
];

/// External-auth settings about connections to the auth service, not about who is let in:
/// reported, and the Ingress served (Ferry's check client pools its connections anyway).
const NOT_ACCESS_CONTROL: &[&str] = &[
    "auth-keepalive",
    "auth-keepalive-requests",
    "auth-keepalive-timeout",
    "auth-keepalive-share-vars",
];

/// Access control and TLS annotations Ferry does not enforce yet (name or name prefix).
const FAILS_CLOSED: &[&str] = &[
    "auth-",
    "proxy-ssl-",
    "ssl-ciphers",
    "ssl-prefer-server-ciphers",
    "enable-modsecurity",
    "enable-owasp-core-rules",
    "modsecurity-transaction-id",
    "global-rate-limit",
];

pub fn support(name: &str) -> Support {
    if name.ends_with("-snippet") || name.ends_with("-snippets") {
        Support::Refused
    } else if APPLIED.contains(&name) {
        Support::Applied
    } else if NOT_ACCESS_CONTROL.contains(&name) {
        Support::NotApplied
    } else if FAILS_CLOSED
        .iter()
        .any(|entry| name == *entry || (entry.ends_with('-') && name.starts_with(entry)))
    {
        Support::FailsClosed
    } else {
        Support::NotApplied
    }
}

/// The status and analyze field naming one annotation.
pub fn field(name: &str) -> String {
    format!("metadata.annotations['{PREFIX}{name}']")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_annotation_has_one_fate() {
        assert_eq!(support("rewrite-target"), Support::Applied);
        assert_eq!(support("configuration-snippet"), Support::Refused);
        assert_eq!(support("server-snippet"), Support::Refused);
        assert_eq!(support("auth-url"), Support::Applied);
        assert_eq!(support("auth-cache-key"), Support::FailsClosed);
        assert_eq!(support("auth-method"), Support::Applied);
        assert_eq!(support("auth-keepalive"), Support::NotApplied);
        assert_eq!(support("auth-type"), Support::Applied);
        assert_eq!(support("auth-tls-verify-client"), Support::FailsClosed);
        assert_eq!(support("satisfy"), Support::Applied);
        assert_eq!(support("proxy-ssl-verify"), Support::Applied);
        assert_eq!(support("proxy-ssl-protocols"), Support::FailsClosed);
        assert_eq!(support("proxy-buffering"), Support::NotApplied);
        assert_eq!(support("limit-rps"), Support::Applied);
        assert_eq!(support("limit-connections"), Support::Applied);
        assert_eq!(support("limit-rate"), Support::NotApplied);
    }
}
