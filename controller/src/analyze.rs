//! `ferry analyze`: every problem the translator finds in a set of objects, each with a stable
//! code, the object and the field (as `istioctl analyze` does for Istio).
//!
//! Objects are analyzed the way the cluster serves them: once per proxy scope (each Gateway
//! API Gateway on its own, each distinct Istio Gateway selector on its own), so a port used by
//! two different gateway deployments is not reported as a conflict.

use serde::Serialize;
use std::collections::BTreeSet;

use crate::inputs::{Inputs, LoadError};
use crate::translate::{translate, Options, Report, Severity};

/// One problem, ready to print.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub severity: Level,
    pub code: &'static str,
    pub reason: String,
    /// `Kind namespace/name`, when the problem is in one object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For routes and listeners: the parent the problem is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The file, for problems found while reading manifests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    Error,
    Warning,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} [{}]", self.severity, self.code)?;
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        if let Some(origin) = &self.origin {
            write!(f, " {origin}")?;
        }
        if let Some(field) = &self.field {
            write!(f, " field {field}")?;
        }
        if let Some(parent) = &self.parent {
            write!(f, " [{parent}]")?;
        }
        // One line per finding, for grep and CI logs (regex errors come with a caret diagram).
        let message: Vec<&str> = self.message.lines().map(str::trim).collect();
        write!(f, ": {} ({})", message.join(" "), self.reason)
    }
}

/// Stable codes, by reason. Append only: scripts and CI gates match on them.
const CODES: &[(&str, &str)] = &[
    ("ReadError", "FRY0001"),
    ("SyntaxError", "FRY0002"),
    ("SchemaError", "FRY0003"),
    ("Invalid", "FRY0101"),
    ("UnsupportedValue", "FRY0102"),
    ("UnsupportedProtocol", "FRY0103"),
    ("NotYetSupported", "FRY0104"),
    ("BackendNotFound", "FRY0201"),
    ("ReferenceNotFound", "FRY0202"),
    ("ReferencedResourceNotFound", "FRY0203"),
    ("RefNotPermitted", "FRY0204"),
    ("InvalidKind", "FRY0205"),
    ("InvalidCertificateRef", "FRY0206"),
    ("NoMatchingParent", "FRY0301"),
    ("NotAllowedByListeners", "FRY0302"),
    ("NoMatchingListenerHostname", "FRY0303"),
    ("NoMatchingHost", "FRY0304"),
    ("PortConflict", "FRY0401"),
    ("ProtocolConflict", "FRY0402"),
    ("HostnameConflict", "FRY0403"),
    ("NotEnforced", "FRY0105"),
    ("InvalidValue", "FRY0106"),
    ("SelectorInRootNamespace", "FRY0501"),
    ("JwksNotFetched", "FRY0601"),
    ("JwksFetchFailed", "FRY0602"),
    ("KeyLeftOut", "FRY0603"),
    ("Ignored", "FRY0604"),
    ("InvalidCACertificateRef", "FRY0207"),
    ("InvalidCACertificateKind", "FRY0208"),
    ("NoValidCACertificate", "FRY0209"),
    ("InvalidParameters", "FRY0210"),
    ("InvalidRouteKinds", "FRY0305"),
    ("Conflicted", "FRY0404"),
    ("NoMatchingServer", "FRY0306"),
    ("NotApplied", "FRY0107"),
    ("NoMatchingPort", "FRY0307"),
    ("Refused", "FRY0108"),
    ("NoMainIngress", "FRY0308"),
    ("TargetNotFound", "FRY0309"),
    ("NotVerified", "FRY0109"),
];

/// The code of a reason; `FRY0999` for one not in the table (a test keeps that from happening).
pub fn code_of(reason: &str) -> &'static str {
    CODES
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or("FRY0999", |(_, code)| code)
}

/// Problems in `inputs`, errors first, each once.
pub fn analyze(inputs: &Inputs) -> Vec<Finding> {
    let mut findings = BTreeSet::new();
    for options in scopes(inputs) {
        let output = translate(inputs, &options);
        findings.extend(output.reports.iter().filter_map(finding_of));
    }
    findings.into_iter().collect()
}

/// A manifest that could not be read: the whole file (or document) is the problem.
pub fn load_finding(error: &LoadError) -> Finding {
    let (reason, origin, object, field, message) = match error {
        LoadError::Read { path, source } => {
            let origin = Some(path.display().to_string());
            ("ReadError", origin, None, None, source.to_string())
        }
        LoadError::Syntax {
            origin,
            index,
            message,
        } => {
            let message = format!("document {index}: {message}");
            ("SyntaxError", Some(origin.clone()), None, None, message)
        }
        LoadError::Field(e) => {
            let object = format!("{} {}/{}", e.kind, e.namespace, e.name);
            let field = (!e.field.is_empty() && e.field != ".").then(|| e.field.clone());
            let origin = Some(e.origin.clone());
            (
                "SchemaError",
                origin,
                Some(object),
                field,
                e.message.clone(),
            )
        }
    };
    Finding {
        severity: Level::Error,
        code: code_of(reason),
        reason: reason.to_string(),
        object,
        field,
        parent: None,
        origin,
        message,
    }
}

fn finding_of(report: &Report) -> Option<Finding> {
    // A listener's Programmed=False repeats the condition that explains it.
    if report.status || report.severity == Severity::Info || report.condition == "Programmed" {
        return None;
    }
    let severity = match report.severity {
        Severity::Error => Level::Error,
        _ => Level::Warning,
    };
    let object = &report.object;
    Some(Finding {
        severity,
        code: code_of(report.reason),
        reason: report.reason.to_string(),
        object: Some(format!(
            "{} {}/{}",
            object.kind, object.namespace, object.name
        )),
        field: report.field.clone(),
        parent: report.parent.clone(),
        origin: None,
        message: report.message.clone(),
    })
}

/// One translation per proxy scope the cluster would have.
fn scopes(inputs: &Inputs) -> Vec<Options> {
    // A Gateway name that cannot exist: the scope serves no Gateway API Gateway.
    let no_gateway = Some("/".to_string());
    // Ingresses of ingress-nginx's class too: `--ingress-class ferry,nginx` serves them, and
    // what would happen to their annotations is what a user moving over needs to know.
    let mut scopes = vec![Options {
        gateway_labels: Vec::new(),
        only_gateway: no_gateway.clone(),
        ingress_class: "ferry,nginx".into(),
        ..Options::default()
    }];
    for gateway in &inputs.gateways {
        let (ns, name) = (&gateway.metadata.namespace, &gateway.metadata.name);
        scopes.push(Options {
            gateway_labels: Vec::new(),
            only_gateway: Some(format!(
                "{}/{}",
                ns.as_deref().unwrap_or_default(),
                name.as_deref().unwrap_or_default()
            )),
            ..Options::default()
        });
    }
    let selectors: BTreeSet<Vec<(String, String)>> = inputs
        .istio_gateways
        .iter()
        .map(|g| g.spec.selector.clone().into_iter().collect())
        .collect();
    for selector in selectors {
        scopes.push(Options {
            gateway_labels: selector,
            only_gateway: no_gateway.clone(),
            ..Options::default()
        });
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::parse_manifests;

    fn findings(yaml: &str) -> Vec<Finding> {
        analyze(&Inputs::from_objects(
            parse_manifests(yaml, "test").unwrap(),
        ))
    }

    #[test]
    fn every_reason_the_translator_reports_has_a_code() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.to_string_lossy().ends_with(".in.yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let Ok(objects) = parse_manifests(&text, "golden") else {
                continue;
            };
            for finding in analyze(&Inputs::from_objects(objects)) {
                assert_ne!(finding.code, "FRY0999", "{}: {finding}", path.display());
                checked += 1;
            }
        }
        assert!(checked > 20, "only {checked} findings in the golden inputs");
    }

    #[test]
    fn gateways_of_different_deployments_may_share_a_port() {
        let yaml = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: a, namespace: x}
spec: {gatewayClassName: ferry, listeners: [{name: web, port: 80, protocol: HTTP}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: b, namespace: x}
spec:
  gatewayClassName: ferry
  listeners: [{name: web, port: 80, protocol: HTTPS, tls: {certificateRefs: [{name: nope}]}}]
";
        let found = findings(yaml);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].code, "FRY0206");
        assert_eq!(found[0].object.as_deref(), Some("Gateway x/b"));
        assert_eq!(
            found[0].field.as_deref(),
            Some("spec.listeners[0].tls.certificateRefs[0]")
        );
    }

    #[test]
    fn schema_errors_name_the_file_object_and_field() {
        let error = parse_manifests(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: n}\nspec: {hostz: [a]}\n",
            "vs.yaml",
        )
        .unwrap_err();
        let finding = load_finding(&error);
        assert_eq!(finding.code, "FRY0003");
        assert_eq!(finding.object.as_deref(), Some("VirtualService n/r"));
        assert_eq!(finding.field.as_deref(), Some("spec.hostz"));
        assert_eq!(finding.origin.as_deref(), Some("vs.yaml"));
        assert!(finding.message.contains("hostz"), "{finding}");
    }
}
