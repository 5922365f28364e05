//! `ferry precheck`: can Ferry be installed into this cluster? Checks the API server, its
//! version, CRDs someone else already installed, and whether you may create what the charts
//! create. One line per check; exit status 1 when one fails.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};

use crate::cli::PrecheckArgs;

/// The chart's `kubeVersion`.
const MIN_MINOR: u32 = 28;

/// (group, resource, namespaced) the two charts create.
const INSTALLS: &[(&str, &str, bool)] = &[
    ("apiextensions.k8s.io", "customresourcedefinitions", false),
    ("rbac.authorization.k8s.io", "clusterroles", false),
    ("rbac.authorization.k8s.io", "clusterrolebindings", false),
    ("", "namespaces", false),
    ("gateway.networking.k8s.io", "gatewayclasses", false),
    ("rbac.authorization.k8s.io", "roles", true),
    ("rbac.authorization.k8s.io", "rolebindings", true),
    ("", "serviceaccounts", true),
    ("", "services", true),
    ("apps", "deployments", true),
    ("policy", "poddisruptionbudgets", true),
    ("autoscaling", "horizontalpodautoscalers", true),
    ("gateway.networking.k8s.io", "gateways", true),
];

#[derive(Default)]
struct Outcome {
    failed: usize,
}

impl Outcome {
    fn pass(&self, message: impl std::fmt::Display) {
        println!("✔ {message}");
    }

    fn warn(&self, message: impl std::fmt::Display) {
        println!("! {message}");
    }

    fn fail(&mut self, message: impl std::fmt::Display) {
        self.failed += 1;
        println!("✘ {message}");
    }
}

pub async fn run(args: PrecheckArgs) -> anyhow::Result<()> {
    let mut outcome = Outcome::default();
    let client = match ferry_controller::cluster::client(args.kubeconfig.as_deref()).await {
        Ok(client) => client,
        Err(e) => {
            outcome.fail(format!("Kubernetes API: {e}"));
            std::process::exit(1);
        }
    };
    match client.apiserver_version().await {
        Ok(info) => check_version(&mut outcome, &info.git_version, &info.minor),
        Err(e) => {
            outcome.fail(format!("Kubernetes API not reachable: {e}"));
            std::process::exit(1);
        }
    }
    check_gateway_api_crds(&mut outcome, client.clone()).await;
    check_crds(&mut outcome, client.clone()).await;
    check_permissions(&mut outcome, client, &args.namespace).await;
    if outcome.failed > 0 {
        println!(
            "\n{} check(s) failed: fix them before `helm install`.",
            outcome.failed
        );
        std::process::exit(1);
    }
    println!("\nReady to install: helm install ferry-crds charts/ferry-crds && helm install ferry charts/ferry -n {} --create-namespace", args.namespace);
    Ok(())
}

fn check_version(outcome: &mut Outcome, version: &str, minor: &str) {
    let minor: u32 = minor.trim_end_matches('+').parse().unwrap_or(0);
    if minor >= MIN_MINOR {
        outcome.pass(format!(
            "Kubernetes API reachable, version {version} (>= 1.{MIN_MINOR})"
        ));
    } else {
        outcome.fail(format!(
            "Kubernetes {version} is too old: Ferry needs 1.{MIN_MINOR} or newer"
        ));
    }
}

/// The Gateway API CRDs are the upstream release's: each kind Ferry reads must be installed,
/// with a bundle version Ferry reads. CRDs without the annotation were installed by an older
/// ferry-crds chart: they work, and the README says how to move to the upstream ones.
async fn check_gateway_api_crds(outcome: &mut Outcome, client: kube::Client) {
    use ferry_controller::crds::{
        gateway_api_install_command, newer_bundle, supported_bundle, BUNDLE_VERSION_ANNOTATION,
        GATEWAY_API_BUNDLES, GATEWAY_API_CRDS,
    };
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let mut missing = Vec::new();
    let mut versions = std::collections::BTreeSet::new();
    for name in GATEWAY_API_CRDS {
        match api.get_opt(name).await {
            Ok(Some(crd)) => {
                let annotations = crd.metadata.annotations.unwrap_or_default();
                let version = annotations.get(BUNDLE_VERSION_ANNOTATION).cloned();
                versions.insert(version.unwrap_or_else(|| "unannotated".into()));
            }
            Ok(None) => missing.push(*name),
            Err(e) => return outcome.fail(format!("cannot read CRD {name}: {e}")),
        }
    }
    let install = gateway_api_install_command();
    if !missing.is_empty() {
        return outcome.fail(format!(
            "Gateway API CRDs missing ({}): {install}",
            missing.join(", ")
        ));
    }
    let unsupported: Vec<&String> = versions
        .iter()
        .filter(|v| *v != "unannotated" && !supported_bundle(v))
        .collect();
    if !unsupported.is_empty() && unsupported.iter().all(|v| newer_bundle(v)) {
        return outcome.warn(format!(
            "Gateway API CRDs of bundle version {unsupported:?}, newer than Ferry reads ({}): \
             fields Ferry does not know are reported on the objects' status, not applied",
            GATEWAY_API_BUNDLES.join(", ")
        ));
    }
    if !unsupported.is_empty() {
        return outcome.fail(format!(
            "Gateway API CRDs of bundle version {unsupported:?}: Ferry reads {} — {install}",
            GATEWAY_API_BUNDLES.join(", ")
        ));
    }
    if versions.contains("unannotated") {
        return outcome.warn(format!(
            "Gateway API CRDs without a bundle version (installed by an older ferry-crds chart): \
             move to the upstream ones without deleting them, see the README — {install} \
             --force-conflicts"
        ));
    }
    outcome.pass(format!(
        "Gateway API CRDs installed, bundle version {}",
        versions.into_iter().collect::<Vec<_>>().join(", ")
    ));
}

/// A CRD Ferry ships that is already there: fine when it serves the versions Ferry reads
/// (install ferry-crds with that set switched off), a failure when it does not.
async fn check_crds(outcome: &mut Outcome, client: kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let existing = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => return outcome.fail(format!("cannot list CRDs: {e}")),
    };
    let mut clean = true;
    for wanted in ferry_controller::crds::all() {
        let name = wanted.metadata.name.clone().unwrap_or_default();
        let Some(found) = existing
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(&name))
        else {
            continue;
        };
        if installed_by_ferry(found) {
            continue;
        }
        clean = false;
        let served: Vec<&str> = found
            .spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.as_str())
            .collect();
        let missing: Vec<&str> = wanted
            .spec
            .versions
            .iter()
            .filter(|v| v.storage && !served.contains(&v.name.as_str()))
            .map(|v| v.name.as_str())
            .collect();
        let set = "istio";
        let owner = owner_of(found);
        if missing.is_empty() {
            outcome.warn(format!(
                "CRD {name} already installed ({owner}; serves {}): install ferry-crds with --set {set}.enabled=false",
                served.join(", ")
            ));
        } else {
            outcome.fail(format!(
                "CRD {name} already installed ({owner}) without version {}: upgrade it, or remove it and let ferry-crds install it",
                missing.join(", ")
            ));
        }
    }
    if clean {
        outcome.pass("no conflicting CRDs (Istio networking and security)");
    }
}

fn installed_by_ferry(crd: &CustomResourceDefinition) -> bool {
    crd.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("meta.helm.sh/release-name"))
        .is_some_and(|release| release == "ferry-crds")
}

fn owner_of(crd: &CustomResourceDefinition) -> String {
    let labels = crd.metadata.labels.clone().unwrap_or_default();
    let annotations = crd.metadata.annotations.clone().unwrap_or_default();
    if let Some(bundle) = annotations.get("gateway.networking.k8s.io/bundle-version") {
        return format!("Gateway API release {bundle}");
    }
    if let Some(release) = annotations.get("meta.helm.sh/release-name") {
        return format!("Helm release {release}");
    }
    if labels.contains_key("release") || labels.get("app").is_some_and(|a| a == "istio-pilot") {
        return "Istio".into();
    }
    "installed by someone else".into()
}

async fn check_permissions(outcome: &mut Outcome, client: kube::Client, namespace: &str) {
    let api: Api<SelfSubjectAccessReview> = Api::all(client);
    let mut denied = Vec::new();
    for (group, resource, namespaced) in INSTALLS {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.to_string()),
                    resource: Some(resource.to_string()),
                    verb: Some("create".into()),
                    namespace: namespaced.then(|| namespace.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &review).await {
            Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => denied.push(format!("create {resource}")),
            Err(e) => denied.push(format!("create {resource} (review failed: {e})")),
        }
    }
    if denied.is_empty() {
        outcome.pass(format!(
            "you may create everything the charts install (namespace {namespace})"
        ));
    } else {
        outcome.fail(format!("missing permissions: {}", denied.join(", ")));
    }
}
