//! `default-backend` (a Service of the Ingress's namespace, on its first port) and
//! `custom-http-errors`: the backend answers for a path whose Service has no endpoints, and
//! replaces the upstream answers with the listed codes. Without `default-backend` the codes
//! have nothing to show (Ferry has no controller-wide default backend): reported.

use super::nginx::{Finding, Settings};
use crate::translate::Context;

/// Fills `settings.error_pages` from the Service `default-backend` names, adding findings.
pub fn resolve(
    cx: &mut Context<'_>,
    namespace: &str,
    settings: &mut Settings,
    findings: &mut Vec<Finding>,
) {
    let finding = |name: &str, message: String| Finding {
        name: name.into(),
        reason: "NotApplied",
        message,
        blocks: false,
    };
    let Some(service) = settings.default_backend.clone() else {
        if !settings.error_codes.is_empty() {
            let message = "custom-http-errors needs default-backend here (Ferry has no controller-wide default backend): upstream answers are relayed as they are".into();
            findings.push(finding("custom-http-errors", message));
        }
        return;
    };
    let first_port = cx.catalog.service(namespace, &service).and_then(|s| {
        let ports = s.spec.as_ref()?.ports.as_ref()?;
        ports.first().map(|p| p.port as u32)
    });
    let Some(port) = first_port else {
        let message = format!("Service {namespace}/{service} with a port not found: not applied");
        findings.push(finding("default-backend", message));
        return;
    };
    match cx.catalog.resolve(namespace, &service, Some(port), None) {
        Ok(cluster) => {
            settings.error_pages = Some(ferry_model::ErrorPages {
                cluster,
                codes: settings.error_codes.clone().into(),
            });
        }
        Err(e) => findings.push(finding("default-backend", format!("{e}: not applied"))),
    }
}
