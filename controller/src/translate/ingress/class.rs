//! Which Ingresses this proxy serves, by class: the Ingress's `spec.ingressClassName` (or
//! the older `kubernetes.io/ingress.class` annotation), else the cluster's default
//! IngressClass (`ingressclass.kubernetes.io/is-default-class: "true"`), else none.
//!
//! A class is served when it is in the `--ingress-class` list or its IngressClass names
//! Ferry's controller; an Ingress without any class is served (there is nobody else's to
//! take it). Classes of ingress-nginx (named `nginx`, or an IngressClass of its controller)
//! get its defaults.

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::Inputs;

/// `spec.controller` of IngressClasses Ferry serves without being told their names.
pub const CONTROLLER: &str = "ferry.dev/ingress-controller";
/// `spec.controller` of ingress-nginx's IngressClasses.
const NGINX_CONTROLLER: &str = "k8s.io/ingress-nginx";
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// How an Ingress is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    /// With ingress-nginx's defaults.
    pub nginx: bool,
}

/// Whether `ingress` is served under the `classes` list (comma-separated), and how.
pub fn served(inputs: &Inputs, ingress: &Ingress, classes: &str) -> Option<Served> {
    let Some(name) = class_of(ingress).or_else(|| default_class(inputs)) else {
        return Some(Served { nginx: false });
    };
    let object = inputs
        .ingress_classes
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(name));
    let controller = object
        .and_then(|c| c.spec.as_ref())
        .and_then(|s| s.controller.as_deref());
    let listed = classes.split(',').any(|c| c.trim() == name);
    if !listed && controller != Some(CONTROLLER) {
        return None;
    }
    Some(Served {
        nginx: name == "nginx" || controller == Some(NGINX_CONTROLLER),
    })
}

/// The keys of an IngressClass's parameters ConfigMap Ferry reads: ingress-nginx's
/// ConfigMap keys for the status of limited requests, so its class can point its
/// parameters at the ConfigMap users already have.
pub const PARAMETER_KEYS: &[&str] = &["limit-req-status-code", "limit-conn-status-code"];

/// The statuses of annotation limits (`limit-rps`/`-rpm`, `limit-connections`) for
/// `ingress`: its IngressClass's parameters ConfigMap says, else 503 as ingress-nginx.
pub fn limit_statuses(inputs: &Inputs, ingress: &Ingress) -> (u16, u16) {
    let map = class_object(inputs, ingress).and_then(|c| parameters_map(inputs, c).ok()?);
    let status = |key: &str| {
        map.and_then(|m| m.data.as_ref()?.get(key))
            .and_then(|v| status_code(v).ok())
            .unwrap_or(503)
    };
    (status(PARAMETER_KEYS[0]), status(PARAMETER_KEYS[1]))
}

fn status_code(value: &str) -> Result<u16, String> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|c| (400..=599).contains(c))
        .ok_or_else(|| format!("{value:?} is not a status from 400 to 599"))
}

fn class_object<'i>(inputs: &'i Inputs, ingress: &Ingress) -> Option<&'i IngressClass> {
    let name = class_of(ingress).or_else(|| default_class(inputs))?;
    inputs
        .ingress_classes
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
}

/// The ConfigMap `class`'s parameters name (None: it names none); an error when they name
/// something else or a ConfigMap that is not there.
fn parameters_map<'i>(
    inputs: &'i Inputs,
    class: &IngressClass,
) -> Result<Option<&'i k8s_openapi::api::core::v1::ConfigMap>, String> {
    let Some(parameters) = class.spec.as_ref().and_then(|s| s.parameters.as_ref()) else {
        return Ok(None);
    };
    let core = parameters.api_group.as_deref().unwrap_or("").is_empty();
    if !core || parameters.kind != "ConfigMap" {
        let kind = &parameters.kind;
        return Err(format!(
            "parameters of kind {kind} are not read by Ferry (a ConfigMap is): not applied"
        ));
    }
    let namespace = parameters.namespace.as_deref().unwrap_or("default");
    let found = inputs.config_maps.iter().find(|m| {
        m.metadata.name.as_deref() == Some(parameters.name.as_str())
            && m.metadata.namespace.as_deref() == Some(namespace)
    });
    match found {
        Some(map) => Ok(Some(map)),
        None => Err(format!(
            "ConfigMap {namespace}/{} not found: its settings are not applied",
            parameters.name
        )),
    }
}

/// `spec.parameters` of the IngressClasses this proxy serves: what is not applied is said
/// on the class (a parameters object of another kind, a missing ConfigMap, keys Ferry does
/// not read, bad values).
pub fn report_unapplied(cx: &mut crate::translate::Context<'_>) {
    let classes = &cx.options.ingress_class;
    let ours = |class: &IngressClass| {
        let name = class.metadata.name.as_deref().unwrap_or_default();
        let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
        controller == Some(CONTROLLER) || classes.split(',').any(|c| c.trim() == name)
    };
    let mut findings = Vec::new();
    for class in cx.inputs.ingress_classes.iter().filter(|c| ours(c)) {
        let meta = crate::translate::meta_of("IngressClass", &class.metadata);
        match parameters_map(cx.inputs, class) {
            Ok(None) => {}
            Ok(Some(map)) => {
                let data = map.data.as_ref();
                let keys = data.into_iter().flat_map(|d| d.keys());
                let unread: Vec<&str> = keys
                    .map(String::as_str)
                    .filter(|k| !PARAMETER_KEYS.contains(k))
                    .collect();
                if !unread.is_empty() {
                    let message = format!(
                        "keys not read by Ferry (not applied): {}",
                        unread.join(", ")
                    );
                    findings.push((meta.clone(), message));
                }
                for key in PARAMETER_KEYS {
                    if let Some(Err(e)) = data.and_then(|d| d.get(*key)).map(|v| status_code(v)) {
                        findings.push((meta.clone(), format!("{key}: {e}; 503 is used")));
                    }
                }
            }
            Err(message) => findings.push((meta, message)),
        }
    }
    for (meta, message) in findings {
        let condition = crate::translate::report::Condition::warn("Valid", "NotApplied", message);
        cx.reports.push(&meta, condition.field("spec.parameters"));
    }
}

fn class_of(ingress: &Ingress) -> Option<&str> {
    let spec_class = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    let annotation = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/ingress.class"))
        .map(String::as_str);
    spec_class.or(annotation)
}

/// The cluster's default IngressClass, when exactly one is marked so (Kubernetes refuses
/// new class-less Ingresses when several are; Ferry takes none of them as the default).
fn default_class(inputs: &Inputs) -> Option<&str> {
    let mut defaults = inputs.ingress_classes.iter().filter(|c| is_default(c));
    match (defaults.next(), defaults.next()) {
        (Some(only), None) => only.metadata.name.as_deref(),
        _ => None,
    }
}

fn is_default(class: &IngressClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::parse_manifests;

    fn inputs(yaml: &str) -> Inputs {
        Inputs::from_objects(parse_manifests(yaml, "test").unwrap())
    }

    fn ingress(class: &str) -> String {
        let class = match class {
            "" => String::new(),
            c => format!("  ingressClassName: {c}\n"),
        };
        format!("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: i, namespace: web}}\nspec:\n{class}  rules: []\n")
    }

    fn class(name: &str, controller: &str, default: bool) -> String {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: {name}\n  annotations: {{ingressclass.kubernetes.io/is-default-class: '{default}'}}\nspec: {{controller: {controller}}}\n"
        )
    }

    fn serves(yaml: &str, classes: &str) -> Option<Served> {
        let inputs = inputs(yaml);
        served(&inputs, &inputs.ingresses[0], classes)
    }

    #[test]
    fn parameters_of_a_served_class_are_reported() {
        let yaml = format!(
            "{}---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: ferry}}\n\
             spec: {{controller: {CONTROLLER}, parameters: {{kind: ConfigMap, name: tuning}}}}\n",
            ingress("ferry")
        );
        let inputs = inputs(&yaml);
        let output = crate::translate(&inputs, &crate::translate::Options::default());
        let report = output
            .reports
            .iter()
            .find(|r| &*r.object.kind == "IngressClass");
        let report = report.expect("a report on the IngressClass");
        assert_eq!(
            (report.reason, report.field.as_deref()),
            ("NotApplied", Some("spec.parameters"))
        );
    }

    #[test]
    fn a_parameters_config_map_sets_the_limit_statuses_and_its_other_keys_are_reported() {
        let yaml = format!(
            "{}---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: ferry}}\n\
             spec: {{controller: {CONTROLLER}, parameters: {{kind: ConfigMap, name: tuning, namespace: edge, scope: Namespace}}}}\n\
             ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: tuning, namespace: edge}}\n\
             data: {{limit-req-status-code: '429', limit-conn-status-code: '600', use-gzip: 'true'}}\n",
            ingress("ferry")
        );
        let inputs = inputs(&yaml);
        assert_eq!(limit_statuses(&inputs, &inputs.ingresses[0]), (429, 503));
        let output = crate::translate(&inputs, &crate::translate::Options::default());
        let messages: Vec<&str> = output
            .reports
            .iter()
            .filter(|r| &*r.object.kind == "IngressClass")
            .map(|r| r.message.as_str())
            .collect();
        assert!(
            messages.iter().any(|m| m.contains("use-gzip")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("limit-conn-status-code")),
            "{messages:?}"
        );
    }

    #[test]
    fn classes_by_list_by_controller_and_by_default() {
        let plain = Some(Served { nginx: false });
        let nginx = Some(Served { nginx: true });
        assert_eq!(serves(&ingress(""), "ferry"), plain, "no class at all");
        assert_eq!(serves(&ingress("ferry"), "ferry"), plain);
        assert_eq!(serves(&ingress("nginx"), "ferry"), None);
        assert_eq!(serves(&ingress("nginx"), "ferry,nginx"), nginx);
        let ours = class("edge", CONTROLLER, false);
        assert_eq!(
            serves(&format!("{}{ours}", ingress("edge")), "ferry"),
            plain,
            "its controller is Ferry"
        );
        let theirs = class("public", NGINX_CONTROLLER, true);
        let classless = format!("{}{theirs}", ingress(""));
        assert_eq!(
            serves(&classless, "ferry"),
            None,
            "the default class is someone else's"
        );
        assert_eq!(
            serves(&classless, "ferry,public"),
            nginx,
            "ingress-nginx's controller"
        );
    }
}
