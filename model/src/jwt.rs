//! Istio's RequestAuthentication, compiled: which JSON Web Tokens a proxy accepts and where it
//! looks for them.
//!
//! Istio's semantics: a request without a token passes (unauthenticated: AuthorizationPolicy
//! decides, e.g. with `requestPrincipals`); a request with a token that fails verification
//! is refused with 401. The rules of every policy that applies to the workload are merged.

use serde::{Deserialize, Serialize};

use crate::{Meta, Str};

/// One RequestAuthentication, narrowed to a proxy the way AuthorizationPolicy is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtPolicy {
    pub meta: Meta,
    /// Workload labels it applies to; None: every workload in its scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Vec<(String, String)>>,
    /// At a gateway, a policy targeting one Gateway applies to its listener ports only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listener_ports: Vec<u16>,
    pub rules: Vec<JwtRule>,
}

/// One `jwtRules` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtRule {
    pub issuer: Str,
    /// Accepted `aud` values; empty: the audience is not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<Str>,
    /// The verification keys: a JWKS document (public members only). Empty: no keys are
    /// known (the jwksUri was never fetched), so every token of this issuer is refused.
    pub jwks: Str,
    /// Where the token is looked for, in order.
    pub locations: Vec<TokenLocation>,
    #[serde(default)]
    pub forward_original_token: bool,
    /// Header that receives the verified payload (base64url of its JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<Str>,
    /// (header, claim) pairs: the claim's value copied into the header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<(Str, Str)>,
    /// Accepted clock difference for `exp` and `nbf`.
    pub clock_skew_seconds: u64,
    /// Claims whose string value is a space-separated list, matched word by word (`scope`
    /// and `permission` always are, as in Istio).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<Str>,
}

/// Where a token may be carried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenLocation {
    /// A header, with a prefix before the token (`Bearer `) that is cut off.
    Header { name: Str, prefix: Str },
    /// A query parameter.
    Param(Str),
    /// A cookie.
    Cookie(Str),
}

impl TokenLocation {
    /// Istio's default when a rule names no location: `Authorization: Bearer <token>` and
    /// the `access_token` query parameter.
    pub fn defaults() -> Vec<TokenLocation> {
        vec![
            TokenLocation::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            },
            TokenLocation::Param("access_token".into()),
        ]
    }
}

/// What a verified token tells AuthorizationPolicy (`request.auth.*`, `requestPrincipals`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestAuth {
    /// `iss/sub`.
    pub principal: String,
    pub audiences: Vec<String>,
    /// The `azp` claim.
    pub presenter: Option<String>,
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The verifying rule's `space_delimited_claims`.
    pub space_delimited: Vec<Str>,
}

impl RequestAuth {
    /// The values of a claim at `path` (nested objects one name per step), as Istio compares
    /// them: a string, each string of a list, or other scalars as their JSON text.
    pub fn claim(&self, path: &[Str]) -> Vec<String> {
        let Some((first, rest)) = path.split_first() else {
            return Vec::new();
        };
        let mut value = self.claims.get(&**first);
        for step in rest {
            value = value.and_then(|v| v.get(&**step));
        }
        let split = path.len() == 1
            && (["scope", "permission"].contains(&&**first)
                || self.space_delimited.iter().any(|c| c == first));
        match value {
            Some(serde_json::Value::String(s)) if split => {
                s.split_whitespace().map(String::from).collect()
            }
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(items)) => items.iter().map(scalar_text).collect(),
            Some(serde_json::Value::Null) | None => Vec::new(),
            Some(other) => vec![scalar_text(other)],
        }
    }
}

fn scalar_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_read_by_path_and_lists_give_each_item() {
        let claims = serde_json::json!({
            "groups": ["dev", "ops"],
            "realm": {"role": "admin"},
            "level": 3,
            "scope": "read write"
        });
        let auth = RequestAuth {
            claims: claims.as_object().unwrap().clone(),
            ..RequestAuth::default()
        };
        assert_eq!(auth.claim(&["groups".into()]), vec!["dev", "ops"]);
        assert_eq!(auth.claim(&["realm".into(), "role".into()]), vec!["admin"]);
        assert_eq!(auth.claim(&["level".into()]), vec!["3"]);
        assert!(auth.claim(&["missing".into()]).is_empty());
        assert_eq!(auth.claim(&["scope".into()]), vec!["read", "write"]);
    }
}
