//! `canary: "true"` Ingresses: their backend takes part of the traffic of the main Ingress
//! serving the same host and path — by header, then by cookie, then by weight, in
//! ingress-nginx's order of precedence.

use std::collections::BTreeMap;

use ferry_model::{HeaderMatch, StringMatch};

use super::parse::flag;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    pub header: Option<(String, HeaderRule)>,
    pub cookie: Option<String>,
    /// Share of the canary out of `total` (`canary-weight`, `canary-weight-total`).
    pub weight: u32,
    pub total: u32,
}

/// How the `canary-by-header` header picks the canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderRule {
    /// `always` sends to the canary, `never` keeps the main backend.
    AlwaysNever,
    /// `canary-by-header-value`: this value sends to the canary.
    Value(String),
    /// `canary-by-header-pattern`: a value matching this regex sends to the canary.
    Pattern(String),
}

/// Where requests of one variant go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    Canary,
    Main,
    /// Split by weight between the two.
    Weighted,
}

/// One variant of a main route: the header conditions it adds, its precedence (higher
/// first), and where it sends requests.
pub struct Variant {
    pub headers: Vec<HeaderMatch>,
    pub precedence: i64,
    pub pick: Pick,
}

type Bad<'b> = dyn FnMut(&str, String, bool) + 'b;

pub(super) fn read(a: &BTreeMap<&str, &str>, bad: &mut Bad) -> Option<Canary> {
    if !flag(a, "canary", false, bad) {
        return None;
    }
    let header = a.get("canary-by-header").map(|name| {
        let rule = match (
            a.get("canary-by-header-value"),
            a.get("canary-by-header-pattern"),
        ) {
            (Some(value), _) => HeaderRule::Value(value.to_string()),
            (None, Some(pattern)) if regex::Regex::new(pattern).is_ok() => {
                HeaderRule::Pattern(pattern.to_string())
            }
            (None, Some(pattern)) => {
                let message = format!("{pattern:?} is not a regular expression Ferry reads");
                bad("canary-by-header-pattern", message, false);
                HeaderRule::AlwaysNever
            }
            (None, None) => HeaderRule::AlwaysNever,
        };
        (name.trim().to_ascii_lowercase(), rule)
    });
    let number = |name: &str, default: u32, bad: &mut Bad| match a.get(name) {
        None => default,
        Some(v) => v.trim().parse().unwrap_or_else(|_| {
            bad(name, format!("{v:?} is not a whole number"), false);
            default
        }),
    };
    let total = number("canary-weight-total", 100, bad).max(1);
    let weight = number("canary-weight", 0, bad).min(total);
    Some(Canary {
        header,
        cookie: a.get("canary-by-cookie").map(|c| c.trim().to_string()),
        weight,
        total,
    })
}

impl Canary {
    /// The routes a main route becomes, most specific first.
    pub fn variants(&self) -> Vec<Variant> {
        let mut out = Vec::new();
        let header = |name: &str, value: StringMatch| HeaderMatch {
            name: name.into(),
            value,
        };
        if let Some((name, rule)) = &self.header {
            let exact = |v: &str| StringMatch::Exact(v.into());
            let mut add = |value, pick| {
                out.push(Variant {
                    headers: vec![header(name, value)],
                    precedence: 2,
                    pick,
                })
            };
            match rule {
                HeaderRule::AlwaysNever => {
                    add(exact("always"), Pick::Canary);
                    add(exact("never"), Pick::Main);
                }
                HeaderRule::Value(value) => add(exact(value), Pick::Canary),
                HeaderRule::Pattern(pattern) => {
                    add(StringMatch::Regex(pattern.as_str().into()), Pick::Canary)
                }
            }
        }
        if let Some(name) = &self.cookie {
            for (value, pick) in [("always", Pick::Canary), ("never", Pick::Main)] {
                out.push(Variant {
                    headers: vec![header("cookie", cookie_is(name, value))],
                    precedence: 1,
                    pick,
                });
            }
        }
        out.push(Variant {
            headers: Vec::new(),
            precedence: 0,
            pick: Pick::Weighted,
        });
        out
    }
}

/// A Cookie header carrying `name=value` among its pairs.
fn cookie_is(name: &str, value: &str) -> StringMatch {
    StringMatch::Regex(
        format!(
            "(.*;\\s*)?{}={}(;.*)?",
            regex::escape(name),
            regex::escape(value)
        )
        .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_then_cookie_then_weight() {
        let a = BTreeMap::from([
            ("canary", "true"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-cookie", "beta"),
            ("canary-weight", "10"),
        ]);
        let canary = read(&a, &mut |n, m, _| panic!("{n}: {m}")).unwrap();
        let variants = canary.variants();
        let picks: Vec<_> = variants.iter().map(|v| (v.precedence, v.pick)).collect();
        assert_eq!(
            picks,
            [
                (2, Pick::Canary),
                (2, Pick::Main),
                (1, Pick::Canary),
                (1, Pick::Main),
                (0, Pick::Weighted)
            ]
        );
        assert_eq!(variants[0].headers[0].name.as_ref(), "x-canary");
        let StringMatch::Regex(cookie) = &variants[2].headers[0].value else {
            panic!()
        };
        let re = regex::Regex::new(&format!("^(?:{cookie})$")).unwrap();
        assert!(re.is_match("a=1; beta=always"));
        assert!(re.is_match("beta=always"));
        assert!(!re.is_match("xbeta=always"));
        assert_eq!((canary.weight, canary.total), (10, 100));
    }
}
