//! RequestAuthentication -> the JWT rules a proxy enforces (scoped like AuthorizationPolicy).
//!
//! Keys come inline (`jwks`) or from what was fetched for `jwksUri` / the issuer's OpenID
//! discovery (`Inputs::jwks`); keys not fetched yet compile to an empty set, so tokens of that
//! issuer are refused rather than trusted (said on the object).

use ferry_model::jwt::{JwtPolicy, JwtRule, TokenLocation};
use ferry_model::Str;

use super::authz::{applies, report_unserved_targets, PolicyScope};
use super::duration::parse_ms;
use super::report::Condition as Report;
use super::{meta_of, Context};
use crate::inputs::security::{self as input, RequestAuthentication};
use crate::jwks::{public_key_set, KeySource};

/// Istio's accepted clock difference for `exp` / `nbf`.
const CLOCK_SKEW_SECONDS: u64 = 60;

pub(super) fn compile(cx: &mut Context) -> Vec<JwtPolicy> {
    let mut policies: Vec<&RequestAuthentication> =
        cx.inputs.request_authentications.iter().collect();
    policies.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    let mut out = Vec::new();
    for policy in policies {
        let meta = meta_of("RequestAuthentication", &policy.metadata);
        let spec = &policy.spec;
        let scope = PolicyScope::of(
            &policy.metadata,
            &spec.selector,
            &spec.target_ref,
            &spec.target_refs,
        );
        report_unserved_targets(cx, &scope, &meta);
        let mut rules = Vec::new();
        for (i, rule) in spec.jwt_rules.iter().enumerate() {
            let (compiled, problems) = compile_rule(cx, rule, &format!("spec.jwtRules[{i}]"));
            for problem in problems {
                cx.reports.push(&meta, problem);
            }
            rules.extend(compiled);
        }
        let Some(listener_ports) = applies(cx, &scope) else {
            continue;
        };
        out.push(JwtPolicy {
            meta,
            selector: input_selector(policy),
            listener_ports,
            rules,
        });
    }
    out
}

fn input_selector(policy: &RequestAuthentication) -> Option<Vec<(String, String)>> {
    crate::inputs::authz::selector_labels(&policy.spec.selector)
}

/// The compiled rule (None when it cannot be compiled: an error says why) and what the
/// object should say about it.
fn compile_rule(
    cx: &Context,
    rule: &input::JwtRule,
    field: &str,
) -> (Option<JwtRule>, Vec<Report>) {
    let mut problems = Vec::new();
    let error = |f: &str, m: String| Report::error("Valid", "InvalidValue", m).field(f);
    if rule.issuer.is_empty() {
        problems.push(error(
            &format!("{field}.issuer"),
            "issuer is required".into(),
        ));
        return (None, problems);
    }
    if let Some(timeout) = &rule.timeout {
        if let Err(e) = parse_ms(timeout) {
            problems.push(error(&format!("{field}.timeout"), e));
        }
    }
    let jwks = keys_of(cx, rule, field, &mut problems);
    let mut locations: Vec<TokenLocation> = Vec::new();
    for (i, header) in rule.from_headers.iter().enumerate() {
        if !is_header_name(&header.name) {
            let message = format!("{:?} is not a header name", header.name);
            problems.push(error(&format!("{field}.fromHeaders[{i}].name"), message));
        }
        locations.push(TokenLocation::Header {
            name: header.name.to_ascii_lowercase().into(),
            prefix: header.prefix.as_deref().unwrap_or_default().into(),
        });
    }
    locations.extend(
        rule.from_params
            .iter()
            .map(|p| TokenLocation::Param(p.as_str().into())),
    );
    locations.extend(
        rule.from_cookies
            .iter()
            .map(|c| TokenLocation::Cookie(c.as_str().into())),
    );
    if locations.is_empty() {
        locations = TokenLocation::defaults();
    }
    let mut claim_headers = Vec::new();
    for (i, pair) in rule.output_claim_to_headers.iter().enumerate() {
        if !is_header_name(&pair.header) || pair.claim.is_empty() {
            let message = format!(
                "{:?} / {:?} is not a header name and a claim",
                pair.header, pair.claim
            );
            problems.push(error(
                &format!("{field}.outputClaimToHeaders[{i}]"),
                message,
            ));
        }
        claim_headers.push((
            pair.header.to_ascii_lowercase().into(),
            pair.claim.as_str().into(),
        ));
    }
    if let Some(header) = rule
        .output_payload_to_header
        .as_deref()
        .filter(|h| !is_header_name(h))
    {
        let message = format!("{header:?} is not a header name");
        problems.push(error(&format!("{field}.outputPayloadToHeader"), message));
    }
    let Some(jwks) = jwks else {
        return (None, problems);
    };
    let compiled = JwtRule {
        issuer: rule.issuer.as_str().into(),
        audiences: rule.audiences.iter().map(|a| a.as_str().into()).collect(),
        jwks: jwks.into(),
        locations,
        forward_original_token: rule.forward_original_token.unwrap_or(false),
        output_payload_to_header: rule
            .output_payload_to_header
            .as_deref()
            .map(|h| h.to_ascii_lowercase().into()),
        output_claim_to_headers: claim_headers,
        clock_skew_seconds: CLOCK_SKEW_SECONDS,
        space_delimited_claims: rule
            .space_delimited_claims
            .iter()
            .map(|c| Str::from(c.as_str()))
            .collect(),
    };
    (Some(compiled), problems)
}

/// The rule's key set: inline, or fetched. None when the inline set is unusable (an error).
fn keys_of(
    cx: &Context,
    rule: &input::JwtRule,
    field: &str,
    problems: &mut Vec<Report>,
) -> Option<String> {
    if let Some(inline) = &rule.jwks {
        if rule.jwks_uri.is_some() {
            let message = "jwks is given, so jwksUri is not fetched".to_string();
            problems
                .push(Report::warn("Valid", "Ignored", message).field(format!("{field}.jwksUri")));
        }
        return match public_key_set(inline) {
            Ok((keys, left_out)) => {
                for why in left_out {
                    problems.push(
                        Report::warn("Valid", "KeyLeftOut", why).field(format!("{field}.jwks")),
                    );
                }
                Some(keys)
            }
            Err(e) => {
                let message = format!("not a usable JWKS: {e}");
                problems.push(
                    Report::error("Valid", "InvalidValue", message).field(format!("{field}.jwks")),
                );
                None
            }
        };
    }
    let (source, source_field) = match &rule.jwks_uri {
        Some(uri) => {
            if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                let message = format!("{uri:?} is not an http(s) URL");
                problems.push(
                    Report::error("Valid", "InvalidValue", message)
                        .field(format!("{field}.jwksUri")),
                );
                return None;
            }
            (KeySource::Uri(uri.clone()), format!("{field}.jwksUri"))
        }
        None => (
            KeySource::Discovery(rule.issuer.clone()),
            format!("{field}.issuer"),
        ),
    };
    let fetched = cx.inputs.jwks.get(&source.key());
    let keys = fetched.and_then(|f| f.keys.clone());
    let refused = "tokens of this issuer are refused until keys are fetched";
    match (fetched.and_then(|f| f.error.as_deref()), &keys) {
        (Some(e), Some(_)) => problems.push(
            Report::warn(
                "Valid",
                "JwksFetchFailed",
                format!("{e}; the last good keys stay in use"),
            )
            .field(source_field),
        ),
        (Some(e), None) => problems.push(
            Report::warn("Valid", "JwksFetchFailed", format!("{e}; {refused}")).field(source_field),
        ),
        (None, None) => problems.push(
            Report::warn(
                "Valid",
                "JwksNotFetched",
                format!("keys not fetched yet; {refused}"),
            )
            .field(source_field),
        ),
        (None, Some(_)) => {}
    }
    Some(keys.unwrap_or_else(|| r#"{"keys":[]}"#.to_string()))
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty() && http::HeaderName::from_bytes(name.as_bytes()).is_ok()
}
