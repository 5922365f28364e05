//! HTTPRoute rules -> IR routes: matches, backends and the rank used for precedence.

use ferry_model::{
    Action, BackendTarget, Cors, HeaderMatch, Meta, PathMatch, QueryMatch, RetryOn, RetryPolicy,
    Route, RouteMatch, RoutePolicy, StringMatch, WeightedBackend,
};
use gateway_api::apis::experimental::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesFilters,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType as HeaderType,
    HttpRouteRulesMatchesPathType as PathType, HttpRouteRulesMatchesQueryParamsType as QueryType,
    HttpRouteRulesRetry,
};

use super::filters::{self, RuleFilters};
use crate::translate::duration::parse_ms;
use crate::translate::report::Condition;
use crate::translate::Context;

/// One (rule, match) pair of an HTTPRoute, ready to be placed on virtual hosts.
pub(super) struct CompiledRule {
    pub rule: usize,
    pub matched: usize,
    pub rank: [i64; 5],
    pub route: Route,
    pub ref_failure: Option<(&'static str, String)>,
}

pub(super) type RefFailure = Option<(&'static str, String)>;

pub(super) fn compile(cx: &mut Context<'_>, route: &HttpRoute, meta: &Meta) -> Vec<CompiledRule> {
    let mut compiled = Vec::new();
    for (index, rule) in route.spec.rules.iter().flatten().enumerate() {
        compiled.extend(compile_rule(cx, rule, index, meta));
    }
    compiled
}

fn compile_rule(
    cx: &mut Context<'_>,
    rule: &HttpRouteRules,
    index: usize,
    meta: &Meta,
) -> Vec<CompiledRule> {
    let field = format!("spec.rules[{index}]");
    let mut failure: RefFailure = None;
    let RuleFilters {
        filters,
        redirect,
        cors,
        ext_auth,
        unsupported,
    } = filters::convert(
        cx,
        rule.filters.as_deref().unwrap_or(&[]),
        meta,
        &field,
        &mut failure,
    );
    let action = match (unsupported, redirect) {
        (Some(why), _) => Action::Direct {
            status: 500,
            body: why.into(),
        },
        (None, Some(redirect)) => Action::Redirect(redirect),
        (None, None) => backends_action(cx, rule, meta, &field, &mut failure),
    };
    let policy = match rule_policy(rule, cors, &field) {
        Ok(policy) => RoutePolicy { ext_auth, ..policy },
        Err(condition) => {
            cx.reports.push(meta, condition);
            return Vec::new();
        }
    };
    let matches = match rule.matches.as_deref() {
        Some(m) if !m.is_empty() => m.to_vec(),
        _ => vec![HttpRouteRulesMatches::default()],
    };
    let mut compiled = Vec::new();
    for (m_index, m) in matches.iter().enumerate() {
        let m_field = format!("{field}.matches[{m_index}]");
        match route_match(m, &m_field) {
            Ok((matcher, rank)) => compiled.push(CompiledRule {
                rule: index,
                matched: m_index,
                rank,
                route: Route {
                    meta: meta.clone(),
                    name: format!(
                        "{}/{}/rule/{index}/match/{m_index}",
                        meta.namespace, meta.name
                    )
                    .into(),
                    matcher,
                    filters: filters.clone().into(),
                    action: action.clone(),
                    policy: policy.clone(),
                },
                ref_failure: failure.clone(),
            }),
            Err(condition) => cx.reports.push(meta, condition),
        }
    }
    compiled
}

/// Rule timeouts (`request` across the whole exchange, `backendRequest` per try) and CORS.
/// A zero duration means "no timeout", as the spec defines.
fn rule_policy(
    rule: &HttpRouteRules,
    cors: Option<Cors>,
    field: &str,
) -> Result<RoutePolicy, Condition> {
    let parse = |value: Option<&String>, name: &str| -> Result<Option<u64>, Condition> {
        match value.map(|v| parse_ms(v)) {
            None => Ok(None),
            Some(Ok(0)) => Ok(None),
            Some(Ok(ms)) => Ok(Some(ms)),
            Some(Err(e)) => Err(Condition::error("Accepted", "UnsupportedValue", e)
                .field(format!("{field}.timeouts.{name}"))),
        }
    };
    let timeouts = rule.timeouts.as_ref();
    let timeout_ms = parse(timeouts.and_then(|t| t.request.as_ref()), "request")?;
    let per_try_timeout_ms = parse(
        timeouts.and_then(|t| t.backend_request.as_ref()),
        "backendRequest",
    )?;
    if let (Some(request), Some(backend)) = (timeout_ms, per_try_timeout_ms) {
        if backend > request {
            let message = "backendRequest must not be longer than request";
            return Err(Condition::error("Accepted", "UnsupportedValue", message)
                .field(format!("{field}.timeouts.backendRequest")));
        }
    }
    let retry = rule
        .retry
        .as_ref()
        .map(|r| retry_policy(r, field))
        .transpose()?;
    Ok(RoutePolicy {
        timeout_ms,
        per_try_timeout_ms,
        retry,
        cors,
        ..RoutePolicy::default()
    })
}

/// HTTPRoute `retry` (GEP-1731). Unset codes retry the gateway errors 500/502/503/504;
/// connection failures and resets are retried as the GEP allows.
fn retry_policy(r: &HttpRouteRulesRetry, field: &str) -> Result<RetryPolicy, Condition> {
    let invalid = |name: &str, message: String| {
        Condition::error("Accepted", "UnsupportedValue", message)
            .field(format!("{field}.retry.{name}"))
    };
    let codes: Vec<u16> = match &r.codes {
        Some(codes) => codes
            .iter()
            .map(|c| {
                u16::try_from(*c)
                    .ok()
                    .filter(|c| (400..600).contains(c))
                    .ok_or_else(|| invalid("codes", format!("{c} is not a 4xx/5xx status")))
            })
            .collect::<Result<_, _>>()?,
        None => vec![500, 502, 503, 504],
    };
    let backoff = match &r.backoff {
        Some(b) => parse_ms(b).map_err(|e| invalid("backoff", e))?,
        None => 25,
    };
    Ok(RetryPolicy {
        attempts: r.attempts.unwrap_or(2).clamp(0, 100) as u32,
        retry_on: RetryOn {
            connect_failure: true,
            reset: true,
            status_codes: codes.into(),
            ..RetryOn::default()
        },
        backoff_base_ms: backoff,
        backoff_max_ms: backoff.saturating_mul(10),
    })
}

fn backends_action(
    cx: &mut Context<'_>,
    rule: &HttpRouteRules,
    meta: &Meta,
    field: &str,
    failure: &mut RefFailure,
) -> Action {
    let refs = rule.backend_refs.as_deref().unwrap_or(&[]);
    let backends: Vec<WeightedBackend> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| backend(cx, r, meta, &format!("{field}.backendRefs[{i}]"), failure))
        .collect();
    if backends.iter().all(|b| b.weight == 0) {
        // The spec: no backends, or all weights zero -> every request gets a 500.
        let body = if backends.is_empty() {
            "no backendRefs"
        } else {
            "all backendRefs have weight 0"
        };
        return Action::Direct {
            status: 500,
            body: body.into(),
        };
    }
    Action::Forward(backends.into())
}

fn backend(
    cx: &mut Context<'_>,
    r: &HttpRouteRulesBackendRefs,
    meta: &Meta,
    field: &str,
    failure: &mut RefFailure,
) -> WeightedBackend {
    let resolved = filters::resolve_service_ref(cx, meta, r.into());
    let mut target = match resolved {
        Ok(cluster) => BackendTarget::Cluster(cluster),
        Err((reason, message)) => {
            failure.get_or_insert((reason, format!("{field}: {message}")));
            BackendTarget::Invalid {
                status: 500,
                reason: message.into(),
            }
        }
    };
    // backendRef filters have the same schema as rule filters; convert once, translate once.
    let backend_filters: Option<Vec<HttpRouteRulesFilters>> = r
        .filters
        .iter()
        .flatten()
        .map(|f| {
            serde_json::to_value(f)
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
        })
        .collect();
    let converted = filters::convert(
        cx,
        backend_filters.as_deref().unwrap_or(&[]),
        meta,
        field,
        failure,
    );
    // A filter that cannot be applied is never skipped: this backend answers 500 instead.
    let unusable = match (&backend_filters, converted.unsupported) {
        (None, _) => Some(format!(
            "{field}.filters: not readable as HTTPRoute filters"
        )),
        (Some(_), None) if converted.ext_auth.is_some() => {
            let message = "ExternalAuth on a backendRef is not supported (put it on the rule): this backend answers 500";
            cx.reports.push(
                meta,
                Condition::warn("Accepted", "UnsupportedValue", message).field(field),
            );
            Some(format!("{field}.filters: ExternalAuth on a backendRef"))
        }
        (Some(_), why) => why,
    };
    if let Some(reason) = unusable {
        target = BackendTarget::Invalid {
            status: 500,
            reason: reason.into(),
        };
    }
    WeightedBackend {
        weight: r.weight.unwrap_or(1).max(0) as u32,
        target,
        filters: converted.filters.into(),
    }
}

/// The IR match and its precedence rank: exact path > regex > longest prefix, then method,
/// then most headers, then most query params (regex placement is implementation-specific in
/// the spec; Ferry ranks it between exact and prefix).
fn route_match(
    m: &HttpRouteRulesMatches,
    field: &str,
) -> Result<(RouteMatch, [i64; 5]), Condition> {
    let path_type = m
        .path
        .as_ref()
        .and_then(|p| p.r#type.clone())
        .unwrap_or(PathType::PathPrefix);
    let value = m
        .path
        .as_ref()
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| "/".into());
    let (path, score) = match path_type {
        PathType::Exact => (PathMatch::Exact(checked_path(&value, field)?.into()), 3),
        PathType::RegularExpression => (
            PathMatch::Regex(checked_regex(&value, &format!("{field}.path"))?.into()),
            2,
        ),
        PathType::PathPrefix => (
            PathMatch::SegmentPrefix(checked_path(&value, field)?.into()),
            1,
        ),
    };
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().flatten().enumerate() {
        let regex = h.r#type == Some(HeaderType::RegularExpression);
        let value = string_match(&h.value, regex, &format!("{field}.headers[{i}]"))?;
        headers.push(HeaderMatch {
            name: h.name.to_ascii_lowercase().into(),
            value,
        });
    }
    let mut query_params = Vec::new();
    for (i, q) in m.query_params.iter().flatten().enumerate() {
        let regex = q.r#type == Some(QueryType::RegularExpression);
        let value = string_match(&q.value, regex, &format!("{field}.queryParams[{i}]"))?;
        query_params.push(QueryMatch {
            name: q.name.clone().into(),
            value,
        });
    }
    let method = m.method.as_ref().map(|method| {
        let text = serde_json::to_value(method)
            .ok()
            .and_then(|v| v.as_str().map(String::from));
        StringMatch::Exact(text.unwrap_or_default().into())
    });
    let rank = [
        -score,
        -(value.len() as i64),
        -(method.is_some() as i64),
        -(headers.len() as i64),
        -(query_params.len() as i64),
    ];
    let matcher = RouteMatch {
        path,
        method,
        headers: headers.into(),
        query_params: query_params.into(),
        ..RouteMatch::default()
    };
    Ok((matcher, rank))
}

fn string_match(value: &str, regex: bool, field: &str) -> Result<StringMatch, Condition> {
    if regex {
        Ok(StringMatch::Regex(checked_regex(value, field)?.into()))
    } else {
        Ok(StringMatch::Exact(value.into()))
    }
}

fn checked_path<'v>(value: &'v str, field: &str) -> Result<&'v str, Condition> {
    if value.starts_with('/') {
        Ok(value)
    } else {
        Err(Condition::error(
            "Accepted",
            "UnsupportedValue",
            format!("path {value:?} must start with '/'"),
        )
        .field(format!("{field}.path.value")))
    }
}

pub(crate) fn checked_regex<'v>(value: &'v str, field: &str) -> Result<&'v str, Condition> {
    match regex::Regex::new(value) {
        Ok(_) => Ok(value),
        Err(e) => Err(Condition::error(
            "Accepted",
            "UnsupportedValue",
            format!("invalid regular expression {value:?}: {e}"),
        )
        .field(field.to_string())),
    }
}
