//! The canary Ingresses of a translation, by host and path: a main Ingress's path takes the
//! canary serving the same host and path (any namespace, as ingress-nginx), and a canary no
//! main path took is reported.

use ferry_model::{BackendTarget, Meta};

use super::nginx::Canary;
use super::routes::CanaryTarget;
use super::{backend_target, Served};
use crate::translate::report::Condition;
use crate::translate::Context;

pub struct Entry<'s> {
    host: String,
    path: String,
    exact: bool,
    canary: &'s Canary,
    target: BackendTarget,
    meta: Meta,
    field: String,
    taken: bool,
}

pub type Canaries<'s> = Vec<Entry<'s>>;

pub(super) fn index<'s>(cx: &mut Context<'_>, served: &'s [Served]) -> Canaries<'s> {
    let mut out = Vec::new();
    for ingress in served {
        let Some(canary) = &ingress.settings.canary else {
            continue;
        };
        let rules = ingress
            .ingress
            .spec
            .as_ref()
            .and_then(|s| s.rules.as_deref())
            .unwrap_or(&[]);
        for (r, rule) in rules.iter().enumerate() {
            let paths = rule
                .http
                .as_ref()
                .map(|h| h.paths.as_slice())
                .unwrap_or(&[]);
            for (p, path) in paths.iter().enumerate() {
                let field = format!("spec.rules[{r}].http.paths[{p}]");
                let backend_field = format!("{field}.backend");
                let target = backend_target(cx, &path.backend, &ingress.meta, &backend_field);
                out.push(Entry {
                    host: rule.host.clone().unwrap_or_else(|| "*".into()),
                    path: path.path.clone().unwrap_or_else(|| "/".into()),
                    exact: path.path_type == "Exact",
                    canary,
                    target,
                    meta: ingress.meta.clone(),
                    field,
                    taken: false,
                });
            }
        }
        cx.reports.push(
            &ingress.meta,
            Condition::ok(
                "Accepted",
                "Accepted",
                "canary of the Ingress serving its hosts and paths",
            ),
        );
    }
    out
}

/// The canary for a main Ingress's path, if one names the same host and path.
pub fn take<'s>(
    canaries: &mut Canaries<'s>,
    host: &str,
    path: &str,
    exact: bool,
) -> Option<CanaryTarget<'s>> {
    let entry = canaries
        .iter_mut()
        .find(|e| e.host == host && e.path == path && e.exact == exact)?;
    entry.taken = true;
    Some(CanaryTarget {
        canary: entry.canary,
        target: entry.target.clone(),
    })
}

pub(super) fn report_unused(cx: &mut Context<'_>, canaries: &Canaries) {
    for entry in canaries.iter().filter(|e| !e.taken) {
        let message = format!(
            "no main Ingress serves host {} path {}: a canary only takes part of a main Ingress's traffic",
            entry.host, entry.path
        );
        let condition = Condition::warn("Accepted", "NoMainIngress", message);
        cx.reports
            .push(&entry.meta, condition.field(entry.field.clone()));
    }
}
