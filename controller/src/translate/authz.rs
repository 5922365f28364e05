//! AuthorizationPolicy -> the policies a proxy enforces.
//!
//! Which policies a proxy gets: a sidecar, those of the mesh (root namespace, no selector)
//! and of its namespace whose selector its labels satisfy; a gateway, those whose
//! `targetRefs` name a Gateway it serves (limited to that Gateway's listener ports), those
//! whose selector its labels satisfy in its own namespace (or the root namespace when that
//! is not known), and the mesh-wide ones. What Ferry cannot enforce fails closed: the policy
//! becomes "deny every request" for the workloads it selects, and the object says why.

use ferry_model::authz::{
    AuthzAction, AuthzPolicy, AuthzRule, Condition, ConditionKey, IpBlock, Operation, Source,
    Values,
};
use ferry_model::Str;

use super::report::Condition as Report;
use super::{meta_of, Context};
use crate::inputs::authz::{self as input, AuthorizationPolicy};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

pub(super) fn compile(cx: &mut Context) -> Vec<AuthzPolicy> {
    let mut out = Vec::new();
    let mut policies: Vec<&AuthorizationPolicy> = cx.inputs.authorization_policies.iter().collect();
    policies.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    for policy in policies {
        let meta = meta_of("AuthorizationPolicy", &policy.metadata);
        let scope = PolicyScope::of(
            &policy.metadata,
            &policy.spec.selector,
            &policy.spec.target_ref,
            &policy.spec.target_refs,
        );
        report_unserved_targets(cx, &scope, &meta);
        let Some(listener_ports) = applies(cx, &scope) else {
            continue;
        };
        let (compiled, problems) = compile_one(policy, cx);
        for problem in problems {
            cx.reports.push(&meta, problem);
        }
        out.push(AuthzPolicy {
            listener_ports,
            ..compiled
        });
    }
    out
}

/// What says where a policy applies: its namespace, selector and targetRefs.
pub(super) struct PolicyScope<'a> {
    namespace: &'a str,
    selector: Option<Vec<(String, String)>>,
    targets: Vec<&'a input::PolicyTargetRef>,
}

impl<'a> PolicyScope<'a> {
    pub(super) fn of(
        metadata: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        selector: &Option<crate::inputs::security::WorkloadSelector>,
        target_ref: &'a Option<input::PolicyTargetRef>,
        target_refs: &'a [input::PolicyTargetRef],
    ) -> Self {
        PolicyScope {
            namespace: metadata.namespace.as_deref().unwrap_or("default"),
            selector: input::selector_labels(selector),
            targets: target_ref.iter().chain(target_refs).collect(),
        }
    }
}

/// targetRefs other than Gateways (Services: Istio's waypoints) have nothing in Ferry to
/// attach to: said on the object, not skipped.
pub(super) fn report_unserved_targets(
    cx: &mut Context,
    scope: &PolicyScope<'_>,
    meta: &ferry_model::Meta,
) {
    for (i, target) in scope.targets.iter().enumerate() {
        if !is_gateway(target) {
            let message = format!(
                "targetRefs of kind {} are not supported (Gateway only); this reference is not applied",
                target.kind
            );
            let field = format!("spec.targetRefs[{i}]");
            cx.reports.push(
                meta,
                Report::warn("Valid", "NotYetSupported", message).field(field),
            );
        }
    }
}

fn is_gateway(target: &input::PolicyTargetRef) -> bool {
    target.kind == "Gateway" && (target.group.is_empty() || target.group == GATEWAY_GROUP)
}

/// Whether the policy applies to this proxy: None if not, else the listener ports it is
/// limited to (empty: all).
pub(super) fn applies(cx: &Context, scope: &PolicyScope<'_>) -> Option<Vec<u16>> {
    let namespace = scope.namespace;
    let root = cx.options.root_namespace.as_str();
    let selector = scope.selector.clone();
    let targets = &scope.targets;
    let labels = &cx.options.gateway_labels;
    let selected = |wanted: &Vec<(String, String)>| wanted.iter().all(|pair| labels.contains(pair));
    if let Some(mesh_namespace) = &cx.options.mesh_namespace {
        if !targets.is_empty() {
            return None; // targetRefs name Gateways/Services (waypoints), not sidecars
        }
        let here = namespace == mesh_namespace || (namespace == root && selector.is_none());
        return (here && selector.as_ref().is_none_or(selected)).then(Vec::new);
    }
    if !targets.is_empty() {
        let ports: Vec<u16> = targets
            .iter()
            .filter(|t| is_gateway(t))
            .filter_map(|t| {
                served_gateway_ports(cx, t.namespace.as_deref().unwrap_or(namespace), &t.name)
            })
            .flatten()
            .collect();
        return (!ports.is_empty()).then_some(ports);
    }
    let own = cx.options.workload_namespace.as_deref().unwrap_or(root);
    match selector {
        None if namespace == root => Some(Vec::new()),
        Some(wanted) if namespace == own && selected(&wanted) => Some(Vec::new()),
        _ => None,
    }
}

/// The listener ports of Gateway `namespace/name` when this proxy serves it.
fn served_gateway_ports(cx: &Context, namespace: &str, name: &str) -> Option<Vec<u16>> {
    let wanted = format!("{namespace}/{name}");
    if cx
        .options
        .only_gateway
        .as_ref()
        .is_some_and(|g| *g != wanted)
    {
        return None;
    }
    let gateway = cx.inputs.gateways.iter().find(|g| {
        g.metadata.namespace.as_deref() == Some(namespace)
            && g.metadata.name.as_deref() == Some(name)
    })?;
    Some(
        gateway
            .spec
            .listeners
            .iter()
            .filter_map(|l| u16::try_from(l.port).ok())
            .collect(),
    )
}

/// The compiled policy and what the object should say. A part Ferry cannot enforce turns the
/// whole policy into "deny all" (fail closed).
fn compile_one(policy: &AuthorizationPolicy, cx: &mut Context) -> (AuthzPolicy, Vec<Report>) {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
    let mut problems = Vec::new();
    let mut provider = None;
    let action = match policy.spec.action.as_deref().unwrap_or("ALLOW") {
        "ALLOW" => AuthzAction::Allow,
        "DENY" => AuthzAction::Deny,
        "AUDIT" => AuthzAction::Audit,
        "CUSTOM" => match custom_provider(policy, cx) {
            Ok(found) => {
                provider = Some(found);
                AuthzAction::Custom
            }
            Err(problem) => {
                // The requests the provider would have decided are denied.
                problems.push(problem);
                AuthzAction::Deny
            }
        },
        other => {
            let message = format!("action {other:?} is not one of ALLOW, DENY, AUDIT, CUSTOM");
            problems.push(fail_closed("spec.action", &message));
            AuthzAction::Deny
        }
    };
    if policy.spec.provider.is_some() && policy.spec.action.as_deref() != Some("CUSTOM") {
        // Istio refuses a provider without CUSTOM; Ferry does not guess what was meant.
        problems.push(fail_closed(
            "spec.provider",
            "provider is only valid with action CUSTOM",
        ));
    }
    let mut rules = Vec::new();
    for (i, rule) in policy.spec.rules.iter().enumerate() {
        match compile_rule(rule, &format!("spec.rules[{i}]"), &cx.options.trust_domain) {
            Ok(rule) => rules.push(rule),
            Err((field, message)) => problems.push(fail_closed(&field, &message)),
        }
    }
    let selector = input::selector_labels(&policy.spec.selector);
    let compiled = AuthzPolicy {
        meta: meta_of("AuthorizationPolicy", &policy.metadata),
        mesh_wide: namespace == cx.options.root_namespace && selector.is_none(),
        selector,
        action,
        rules,
        listener_ports: Vec::new(),
        provider,
    };
    if problems.is_empty() {
        return (compiled, problems);
    }
    if compiled.action == AuthzAction::Deny && policy.spec.action.as_deref() == Some("CUSTOM") {
        // Only the provider failed: its rules say which requests it would have decided.
        let rules_compiled = problems
            .iter()
            .all(|p| p.field.as_deref() == Some("spec.provider"));
        if rules_compiled {
            return (compiled, problems);
        }
    }
    let deny_all = AuthzPolicy {
        action: AuthzAction::Deny,
        rules: vec![AuthzRule::default()],
        ..compiled
    };
    (deny_all, problems)
}

/// CUSTOM's `provider.name`, looked up in the mesh config's extension providers.
fn custom_provider(
    policy: &AuthorizationPolicy,
    cx: &mut Context,
) -> Result<ferry_model::ExtAuth, Report> {
    let name = policy
        .spec
        .provider
        .as_ref()
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str());
    let Some(name) = name else {
        let message = "CUSTOM needs provider.name";
        return Err(Report::warn(
            "Valid",
            "NotEnforced",
            format!("{message}; the policy fails closed: every request its rules match is denied"),
        )
        .field("spec.provider"));
    };
    super::ext_authz::provider(cx, name).map_err(|why| {
        let message =
            format!("{why}; the policy fails closed: every request its rules match is denied");
        Report::warn("Valid", "NotEnforced", message).field("spec.provider")
    })
}

fn fail_closed(field: &str, why: &str) -> Report {
    let message = format!("{why}; the policy fails closed: every request it selects is denied");
    Report::warn("Valid", "NotEnforced", message).field(field)
}

type Problem = (String, String);

fn compile_rule(rule: &input::Rule, field: &str, trust_domain: &str) -> Result<AuthzRule, Problem> {
    let from = rule
        .from
        .iter()
        .enumerate()
        .map(|(i, f)| {
            source(
                &f.source,
                &format!("{field}.from[{i}].source"),
                trust_domain,
            )
        })
        .collect::<Result<_, _>>()?;
    let to = rule
        .to
        .iter()
        .enumerate()
        .map(|(i, t)| operation(&t.operation, &format!("{field}.to[{i}].operation")))
        .collect::<Result<_, _>>()?;
    let when = rule
        .when
        .iter()
        .enumerate()
        .map(|(i, w)| condition(w, &format!("{field}.when[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(AuthzRule { from, to, when })
}

fn strings(any: &[String], none: &[String]) -> Values<Str> {
    Values {
        any: any.iter().map(|s| s.as_str().into()).collect(),
        none: none.iter().map(|s| s.as_str().into()).collect(),
    }
}

fn source(s: &input::Source, field: &str, trust_domain: &str) -> Result<Source, Problem> {
    // `serviceAccounts` (`ns/name`) is shorthand for the principal of that account.
    let account = |sa: &String| format!("{trust_domain}/ns/{}", sa.replacen('/', "/sa/", 1));
    let mut principals = strings(&s.principals, &s.not_principals);
    principals
        .any
        .extend(s.service_accounts.iter().map(|a| account(a).into()));
    principals
        .none
        .extend(s.not_service_accounts.iter().map(|a| account(a).into()));
    Ok(Source {
        principals,
        request_principals: strings(&s.request_principals, &s.not_request_principals),
        namespaces: strings(&s.namespaces, &s.not_namespaces),
        ip_blocks: blocks(&s.ip_blocks, &s.not_ip_blocks, &format!("{field}.ipBlocks"))?,
        remote_ip_blocks: blocks(
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
            &format!("{field}.remoteIpBlocks"),
        )?,
    })
}

fn blocks(any: &[String], none: &[String], field: &str) -> Result<Values<IpBlock>, Problem> {
    let parse = |list: &[String]| {
        list.iter()
            .map(|b| {
                IpBlock::parse(b)
                    .ok_or_else(|| (field.to_string(), format!("{b:?} is not an IP or CIDR")))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Values {
        any: parse(any)?,
        none: parse(none)?,
    })
}

fn operation(o: &input::Operation, field: &str) -> Result<Operation, Problem> {
    let ports = |list: &[String]| {
        list.iter()
            .map(|p| {
                p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    (
                        format!("{field}.ports"),
                        format!("{p:?} is not a port from 1 to 65535"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Operation {
        hosts: strings(&o.hosts, &o.not_hosts),
        ports: Values {
            any: ports(&o.ports)?,
            none: ports(&o.not_ports)?,
        },
        methods: strings(&o.methods, &o.not_methods),
        paths: strings(&o.paths, &o.not_paths),
    })
}

fn condition(w: &input::When, field: &str) -> Result<Condition, Problem> {
    let key = match w.key.as_str() {
        "source.ip" => ConditionKey::SourceIp,
        "remote.ip" => ConditionKey::RemoteIp,
        "source.namespace" => ConditionKey::SourceNamespace,
        "source.principal" => ConditionKey::SourcePrincipal,
        "destination.ip" => ConditionKey::DestinationIp,
        "destination.port" => ConditionKey::DestinationPort,
        "connection.sni" => ConditionKey::ConnectionSni,
        key => match key
            .strip_prefix("request.headers[")
            .and_then(|k| k.strip_suffix(']'))
        {
            Some(name) => ConditionKey::RequestHeader(name.to_ascii_lowercase().into()),
            None => match request_auth_key(key) {
                Some(key) => key,
                None => {
                    return Err((
                        format!("{field}.key"),
                        format!("condition key {key:?} is not supported"),
                    ))
                }
            },
        },
    };
    if w.values.is_empty() && w.not_values.is_empty() {
        return Err((
            field.to_string(),
            "a condition needs values or notValues".into(),
        ));
    }
    Ok(Condition {
        key,
        values: strings(&w.values, &w.not_values),
    })
}

/// `request.auth.principal | audiences | presenter | claims[a][b]...`.
fn request_auth_key(key: &str) -> Option<ConditionKey> {
    match key.strip_prefix("request.auth.")? {
        "principal" => Some(ConditionKey::RequestAuthPrincipal),
        "audiences" => Some(ConditionKey::RequestAuthAudiences),
        "presenter" => Some(ConditionKey::RequestAuthPresenter),
        rest => {
            let mut path = rest.strip_prefix("claims")?;
            let mut names: Vec<Str> = Vec::new();
            while let Some(inner) = path.strip_prefix('[') {
                let (name, after) = inner.split_once(']')?;
                if name.is_empty() {
                    return None;
                }
                names.push(name.into());
                path = after;
            }
            (path.is_empty() && !names.is_empty()).then_some(ConditionKey::RequestAuthClaim(names))
        }
    }
}
