//! Hostname patterns: exact names, `*.suffix` wildcards and the catch-all `*`.

/// True when `host` (exact or wildcard) is covered by `pattern`.
///
/// `*.example.com` covers `a.example.com`, `a.b.example.com` and `*.a.example.com`,
/// but not `example.com`.
pub fn covers(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    // A wildcard host is covered when its own suffix is longer: `*.a.example.com`.
    let rest = host.strip_prefix('*').unwrap_or(host);
    rest.len() > suffix.len() && ends_with_ignore_case(rest, suffix)
}

fn ends_with_ignore_case(text: &str, suffix: &str) -> bool {
    text.len() >= suffix.len()
        && text.as_bytes()[text.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// The hostnames a route serves on a listener: the more specific side of each pair that
/// overlaps. `None` when they do not overlap at all.
pub fn intersect(listener: &str, route: &str) -> Option<String> {
    if covers(listener, route) {
        Some(route.to_ascii_lowercase())
    } else if covers(route, listener) {
        Some(listener.to_ascii_lowercase())
    } else {
        None
    }
}

/// Intersects a listener hostname (None = any) with a route's hostnames (empty = any).
pub fn intersect_all(listener: Option<&str>, route: &[String]) -> Vec<String> {
    let listener = listener.filter(|l| !l.is_empty()).unwrap_or("*");
    if route.is_empty() {
        return vec![listener.to_ascii_lowercase()];
    }
    let mut hosts: Vec<String> = route
        .iter()
        .filter_map(|r| intersect(listener, r))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_covers_subdomains_only() {
        assert!(covers("*.example.com", "a.example.com"));
        assert!(covers("*.example.com", "a.b.example.com"));
        assert!(covers("*.example.com", "*.a.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "aexample.com"));
        assert!(covers("*", "anything"));
        assert!(covers("Foo.com", "foo.com"));
    }

    #[test]
    fn intersection_keeps_the_more_specific_side() {
        assert_eq!(
            intersect("*.example.com", "a.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            intersect("a.example.com", "*.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(intersect("a.example.com", "b.example.com"), None);
        assert_eq!(intersect_all(None, &[]), vec!["*"]);
        assert_eq!(intersect_all(Some("x.com"), &[]), vec!["x.com"]);
    }
}
