//! Where the CA's material lives: the `cacerts` Secret (a plug-in CA, Istio's layout) when
//! present, else `ferry-ca` (a root generated on first start), both in the controller's
//! namespace. The roots are published to every namespace in the `ferry-ca-root` ConfigMap
//! (as istiod's `istio-ca-root-cert`), which injected pods and gateways mount to trust the
//! controller and each other.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::{BTreeMap, HashMap};

use super::CaMaterial;

/// Istio's plug-in CA Secret: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem.
pub const PLUG_IN_SECRET: &str = "cacerts";
/// The generated root: ca-cert.pem, ca-key.pem, root-cert.pem (which may list older roots
/// too while a rotation overlaps).
pub const GENERATED_SECRET: &str = "ferry-ca";
pub const ROOT_CONFIG_MAP: &str = "ferry-ca-root";
pub const ROOT_KEY: &str = "root-cert.pem";

/// The CA material in use: the plug-in CA, else the generated root (created now if absent).
pub async fn load_or_create(
    client: &kube::Client,
    namespace: &str,
    trust_domain: &str,
) -> Result<CaMaterial, String> {
    if let Some(material) = load(client, namespace).await? {
        return Ok(material);
    }
    let material = super::Authority::generate_root(trust_domain)?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(GENERATED_SECRET.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(secret_data(&material)),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(
                namespace,
                "generated the mesh root CA (Secret {GENERATED_SECRET})"
            );
            Ok(material)
        }
        // Another replica created it first: use that one, so all sign with one key.
        Err(kube::Error::Api(e)) if e.code == 409 => load(client, namespace)
            .await?
            .ok_or_else(|| format!("Secret {GENERATED_SECRET} vanished after a conflict")),
        Err(e) => Err(format!(
            "cannot create Secret {namespace}/{GENERATED_SECRET}: {e}"
        )),
    }
}

/// The plug-in CA if its Secret exists, else the generated one if it exists.
pub async fn load(client: &kube::Client, namespace: &str) -> Result<Option<CaMaterial>, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in [PLUG_IN_SECRET, GENERATED_SECRET] {
        let secret = secrets
            .get_opt(name)
            .await
            .map_err(|e| format!("cannot read Secret {namespace}/{name}: {e}"))?;
        if let Some(secret) = secret {
            let data = secret.data.unwrap_or_default();
            return material_of(&data)
                .map(Some)
                .map_err(|e| format!("Secret {namespace}/{name}: {e}"));
        }
    }
    Ok(None)
}

fn material_of(data: &BTreeMap<String, ByteString>) -> Result<CaMaterial, String> {
    let text = |key: &str| -> Result<String, String> {
        let bytes = data.get(key).ok_or_else(|| format!("no {key}"))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| format!("{key} is not PEM text"))
    };
    let ca_cert_pem = text("ca-cert.pem")?;
    let chain = text("cert-chain.pem").unwrap_or_default();
    // cert-chain.pem starts with the signing certificate itself; keep what is above it.
    let chain_pem = chain
        .strip_prefix(ca_cert_pem.as_str())
        .unwrap_or(&chain)
        .to_string();
    Ok(CaMaterial {
        ca_key_pem: text("ca-key.pem")?,
        root_cert_pem: text("root-cert.pem")?,
        ca_cert_pem,
        chain_pem,
    })
}

fn secret_data(material: &CaMaterial) -> BTreeMap<String, ByteString> {
    [
        ("ca-cert.pem", &material.ca_cert_pem),
        ("ca-key.pem", &material.ca_key_pem),
        ("root-cert.pem", &material.root_cert_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
    .collect()
}

/// Keeps `ferry-ca-root` equal to the trust bundle in each namespace, writing only what
/// changed since the last call.
#[derive(Default)]
pub struct RootPublisher {
    written: HashMap<String, String>,
}

impl RootPublisher {
    pub async fn publish(&mut self, client: &kube::Client, namespaces: &[String], bundle: &str) {
        for namespace in namespaces {
            if self.written.get(namespace).is_some_and(|b| b == bundle) {
                continue;
            }
            match apply_root(client, namespace, bundle).await {
                Ok(()) => {
                    self.written.insert(namespace.clone(), bundle.into());
                }
                Err(e) => tracing::warn!(namespace, "cannot publish {ROOT_CONFIG_MAP}: {e}"),
            }
        }
    }
}

async fn apply_root(
    client: &kube::Client,
    namespace: &str,
    bundle: &str,
) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let config_map = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": ROOT_CONFIG_MAP, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "ferry"}},
        "data": {ROOT_KEY: bundle},
    });
    let params = PatchParams::apply("ferry-controller").force();
    api.patch(ROOT_CONFIG_MAP, &params, &Patch::Apply(&config_map))
        .await
        .map(|_| ())
}
