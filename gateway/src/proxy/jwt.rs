//! RequestAuthentication enforcement (JWT), shared by both request paths and run before
//! AuthorizationPolicy: a request without a token goes on unauthenticated; one whose token
//! fails verification is answered 401 with the reason (Envoy's jwt_authn words); a verified
//! token becomes `request.auth.*` for AuthorizationPolicy and the header edits its rule asks
//! for (the token removed unless `forwardOriginalToken`, payload and claims copied out).
//!
//! Keys are parsed when a snapshot is compiled, never per request.

use base64::Engine as _;
use ferry_model::jwt::{JwtPolicy, JwtRule, RequestAuth, TokenLocation};
use ferry_model::Str;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::facts::RequestFacts;
use crate::header_lookup;
use crate::rewrite::EditHeaders;

/// A request header change a verified (or absent) token asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderEdit {
    Remove(Str),
    Set(Str, String),
}

/// Applies `edits` in order.
pub fn apply(edits: &[HeaderEdit], target: &mut impl EditHeaders) {
    for edit in edits {
        match edit {
            HeaderEdit::Remove(name) => target.remove(name),
            HeaderEdit::Set(name, value) => target.set(name, value),
        }
    }
}

/// The rules of one policy, with their keys ready.
pub struct CompiledJwtPolicy {
    listener_ports: Vec<u16>,
    rules: Vec<CompiledRule>,
}

struct CompiledRule {
    rule: JwtRule,
    keys: Vec<Key>,
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    /// The algorithm the key is for, when the JWK says.
    alg: Option<Algorithm>,
}

/// Parses every policy's keys. A key jsonwebtoken cannot use is left out (the controller
/// already kept only public, well-formed ones).
pub fn compile(policies: &[JwtPolicy]) -> Vec<CompiledJwtPolicy> {
    policies
        .iter()
        .map(|p| CompiledJwtPolicy {
            listener_ports: p.listener_ports.clone(),
            rules: p.rules.iter().map(compile_rule).collect(),
        })
        .collect()
}

fn compile_rule(rule: &JwtRule) -> CompiledRule {
    let set: JwkSet = serde_json::from_str(&rule.jwks).unwrap_or(JwkSet { keys: Vec::new() });
    let keys = set
        .keys
        .iter()
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            Some(Key {
                kid: jwk.common.key_id.clone(),
                key,
                alg,
            })
        })
        .collect();
    CompiledRule {
        rule: rule.clone(),
        keys,
    }
}

/// What the token said.
pub enum Outcome {
    /// No rule applies, or no token was sent.
    Anonymous,
    Verified(RequestAuth),
    /// 401 with this reason.
    Refused(&'static str),
}

/// Checks the request's token against the rules that apply on `port`; `edits` receives the
/// header changes to make upstream (also for anonymous requests: a client cannot send the
/// headers a verified token would have set).
pub fn authenticate(
    policies: &[CompiledJwtPolicy],
    facts: &RequestFacts<'_>,
    port: u16,
    edits: &mut Vec<HeaderEdit>,
) -> Outcome {
    if policies.is_empty() {
        return Outcome::Anonymous; // AuthorizationPolicy without RequestAuthentication
    }
    // The rules for this port, walked again where needed rather than collected per request.
    let rules = || {
        policies
            .iter()
            .filter(|p| p.listener_ports.is_empty() || p.listener_ports.contains(&port))
            .flat_map(|p| &p.rules)
    };
    if rules().next().is_none() {
        return Outcome::Anonymous;
    }
    for rule in rules() {
        strip_output_headers(&rule.rule, edits);
    }
    let Some((token, location)) = find_token(rules(), facts) else {
        return Outcome::Anonymous;
    };
    let Some(issuer) = unverified_issuer(&token) else {
        return Outcome::Refused("Jwt is not in the form of Header.Payload.Signature");
    };
    let mut candidates = rules()
        .filter(|r| *r.rule.issuer == *issuer && r.rule.locations.contains(location))
        .peekable();
    if candidates.peek().is_none() {
        return Outcome::Refused("Jwt issuer is not configured");
    }
    let mut refusal = "Jwt verification fails";
    for rule in candidates {
        match verify(rule, &token) {
            Ok(claims) => {
                add_outputs(&rule.rule, location, &token, &claims, edits);
                return Outcome::Verified(request_auth(&rule.rule, claims));
            }
            Err(reason) => refusal = reason,
        }
    }
    Outcome::Refused(refusal)
}

/// Headers a verified token fills are never taken from the client.
fn strip_output_headers(rule: &JwtRule, edits: &mut Vec<HeaderEdit>) {
    let outputs = rule.output_payload_to_header.iter().chain(
        rule.output_claim_to_headers
            .iter()
            .map(|(header, _)| header),
    );
    for header in outputs {
        edits.push(HeaderEdit::Remove(header.clone()));
    }
}

/// The first token found, in the rules' order of locations.
fn find_token<'r>(
    mut rules: impl Iterator<Item = &'r CompiledRule>,
    facts: &RequestFacts<'_>,
) -> Option<(String, &'r TokenLocation)> {
    rules.find_map(|r| {
        r.rule
            .locations
            .iter()
            .find_map(|location| token_at(location, facts).map(|t| (t, location)))
    })
}

fn token_at(location: &TokenLocation, facts: &RequestFacts<'_>) -> Option<String> {
    let token = match location {
        TokenLocation::Header { name, prefix } => {
            let value = header_lookup::first_text(facts.headers, name)?;
            strip_prefix_ignoring_case(value, prefix)?
                .trim()
                .to_string()
        }
        TokenLocation::Param(name) => query_param(facts.query?, name)?,
        TokenLocation::Cookie(name) => cookie(facts, name)?,
    };
    (!token.is_empty()).then_some(token)
}

fn strip_prefix_ignoring_case<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

fn cookie(facts: &RequestFacts<'_>, name: &str) -> Option<String> {
    let header = header_lookup::joined(facts.headers, "cookie")?;
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// `iss` read without verification, only to choose the rule whose keys verify it.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(claims.get("iss")?.as_str()?.to_string())
}

type Claims = serde_json::Map<String, serde_json::Value>;

/// Verifies signature, issuer, audiences, `exp` and `nbf` (with the rule's clock skew).
fn verify(rule: &CompiledRule, token: &str) -> Result<Claims, &'static str> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| "Jwt verification fails")?;
    let keys: Vec<&Key> = rule
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
        .filter(|k| k.alg.is_none_or(|a| a == header.alg))
        .collect();
    if keys.is_empty() {
        return Err("Jwks doesn't have key to match kid or alg from Jwt");
    }
    let validation = validation(&rule.rule, header.alg);
    let mut refusal = "Jwt verification fails";
    for key in keys {
        match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => refusal = refusal_of(e.kind()),
        }
    }
    Err(refusal)
}

fn validation(rule: &JwtRule, alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = rule.clock_skew_seconds;
    validation.validate_nbf = true;
    validation.required_spec_claims.clear();
    validation.set_issuer(&[&*rule.issuer]);
    if rule.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&rule.audiences);
    }
    validation
}

fn refusal_of(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => "Jwt is expired",
        ErrorKind::ImmatureSignature => "Jwt not yet valid",
        ErrorKind::InvalidAudience => "Audiences in Jwt are not allowed",
        ErrorKind::InvalidIssuer => "Jwt issuer is not configured",
        _ => "Jwt verification fails",
    }
}

fn add_outputs(
    rule: &JwtRule,
    location: &TokenLocation,
    token: &str,
    claims: &Claims,
    edits: &mut Vec<HeaderEdit>,
) {
    if !rule.forward_original_token {
        if let TokenLocation::Header { name, .. } = location {
            edits.push(HeaderEdit::Remove(name.clone()));
        }
    }
    if let Some(header) = &rule.output_payload_to_header {
        let payload = token.split('.').nth(1).unwrap_or_default();
        edits.push(HeaderEdit::Set(header.clone(), payload.to_string()));
    }
    for (header, claim) in &rule.output_claim_to_headers {
        let value = match claims.get(&**claim) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => continue,
            Some(other) => other.to_string(),
        };
        edits.push(HeaderEdit::Set(header.clone(), value));
    }
}

fn request_auth(rule: &JwtRule, claims: Claims) -> RequestAuth {
    let text = |name: &str| claims.get(name).and_then(|v| v.as_str()).map(String::from);
    let audiences = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.clone()],
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .filter_map(|a| a.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    RequestAuth {
        principal: format!(
            "{}/{}",
            text("iss").unwrap_or_default(),
            text("sub").unwrap_or_default()
        ),
        audiences,
        presenter: text("azp"),
        space_delimited: rule.space_delimited_claims.clone(),
        claims,
    }
}
