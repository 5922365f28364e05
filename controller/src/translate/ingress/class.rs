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

/// `spec.parameters` of an IngressClass this proxy serves is not read: said on the class.
pub fn report_unapplied(cx: &mut crate::translate::Context<'_>) {
    let classes = &cx.options.ingress_class;
    let ours = |class: &IngressClass| {
        let name = class.metadata.name.as_deref().unwrap_or_default();
        let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
        controller == Some(CONTROLLER) || classes.split(',').any(|c| c.trim() == name)
    };
    let with_parameters = cx
        .inputs
        .ingress_classes
        .iter()
        .filter(|c| ours(c) && c.spec.as_ref().is_some_and(|s| s.parameters.is_some()));
    let metas: Vec<_> = with_parameters
        .map(|c| crate::translate::meta_of("IngressClass", &c.metadata))
        .collect();
    for meta in metas {
        let message = "IngressClass parameters are not read by Ferry: not applied";
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
