//! Reading manifests: multi-document YAML or JSON, from a file or a directory of them.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};

use super::{Inputs, Object};

/// Why a set of manifests could not be loaded. Every variant names where the problem is,
/// down to the object and field when there is one.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: document {index}: not valid YAML/JSON: {message}")]
    Syntax {
        origin: String,
        index: usize,
        message: String,
    },
    #[error("{0}")]
    Field(Box<FieldError>),
}

/// A schema error in one object, down to the field path.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {kind} {namespace}/{name}: field `{field}`: {message}")]
pub struct FieldError {
    pub origin: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub field: String,
    pub message: String,
}

/// Loads every manifest under `path` (a file, or a directory read recursively in name order).
pub fn load_path(path: &Path) -> Result<Inputs, LoadError> {
    let mut inputs = Inputs::default();
    for file in manifest_files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Read {
            path: file.clone(),
            source,
        })?;
        for object in parse_manifests(&text, &file.display().to_string())? {
            inputs.add(object);
        }
    }
    Ok(inputs)
}

/// Files that hold manifests: `*.yaml`, `*.yml`, `*.json`, sorted for a stable document order.
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let read_error = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    if !path.is_dir() {
        std::fs::metadata(path).map_err(read_error)?;
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_error)? {
        let entry_path = entry.map_err(read_error)?.path();
        if entry_path.is_dir() {
            files.extend(manifest_files(&entry_path)?);
        } else if ferry_model::manifests::is_manifest(&entry_path) {
            files.push(entry_path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parses a multi-document stream. Kinds Ferry does not read (Deployments, ConfigMaps...)
/// are skipped so users can point Ferry at the same folder they `kubectl apply`.
pub fn parse_manifests(text: &str, origin: &str) -> Result<Vec<Object>, LoadError> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(document).map_err(|e| LoadError::Syntax {
            origin: origin.to_string(),
            index,
            message: e.to_string(),
        })?;
        collect_document(value, origin, &mut objects)?;
    }
    Ok(objects)
}

/// One object as the API server returns it (JSON), decoded like a manifest document.
/// `Ok(None)` for kinds Ferry does not read.
pub fn decode_api_object(
    value: serde_json::Value,
    origin: &str,
) -> Result<Option<Object>, LoadError> {
    let value = serde_yaml::to_value(value).map_err(|e| LoadError::Syntax {
        origin: origin.to_string(),
        index: 0,
        message: e.to_string(),
    })?;
    let mut objects = Vec::new();
    collect_document(value, origin, &mut objects)?;
    Ok(objects.pop())
}

fn collect_document(
    value: serde_yaml::Value,
    origin: &str,
    objects: &mut Vec<Object>,
) -> Result<(), LoadError> {
    if value.is_null() {
        return Ok(());
    }
    let header = Header::of(&value);
    if header.kind == "List" {
        let items = value.get("items").and_then(|i| i.as_sequence()).cloned();
        for item in items.unwrap_or_default() {
            collect_document(item, origin, objects)?;
        }
        return Ok(());
    }
    if let Some(object) = typed_object(value, &header, origin)? {
        objects.push(object);
    }
    Ok(())
}

/// apiVersion/kind/metadata of a document, read before choosing its type.
struct Header {
    group: String,
    kind: String,
    namespace: String,
    name: String,
}

impl Header {
    fn of(value: &serde_yaml::Value) -> Self {
        let text = |v: Option<&serde_yaml::Value>| {
            v.and_then(|v| v.as_str()).unwrap_or_default().to_string()
        };
        let api_version = text(value.get("apiVersion"));
        let group = api_version
            .rsplit_once('/')
            .map(|(g, _)| g.to_string())
            .unwrap_or_default();
        let metadata = value.get("metadata");
        Header {
            group,
            kind: text(value.get("kind")),
            namespace: text(metadata.and_then(|m| m.get("namespace"))),
            name: text(metadata.and_then(|m| m.get("name"))),
        }
    }
}

fn typed_object(
    value: serde_yaml::Value,
    header: &Header,
    origin: &str,
) -> Result<Option<Object>, LoadError> {
    let object = match (header.group.as_str(), header.kind.as_str()) {
        ("gateway.networking.k8s.io", "GatewayClass") => {
            Object::GatewayClass(decode(value, header, origin)?)
        }
        ("gateway.networking.k8s.io", "Gateway") => Object::Gateway(decode(value, header, origin)?),
        ("gateway.networking.k8s.io", "HTTPRoute") => {
            Object::HttpRoute(decode(value, header, origin)?)
        }
        ("gateway.networking.k8s.io", "GRPCRoute") => {
            Object::GrpcRoute(decode(value, header, origin)?)
        }
        ("gateway.networking.k8s.io", "TLSRoute") => {
            Object::TlsRoute(decode(value, header, origin)?)
        }
        ("gateway.networking.k8s.io", "TCPRoute") => {
            Object::TcpRoute(decode(value, header, origin)?)
        }
        ("gateway.networking.k8s.io", "ReferenceGrant") => {
            Object::ReferenceGrant(decode(value, header, origin)?)
        }
        ("networking.istio.io", "Gateway") => Object::IstioGateway(decode(value, header, origin)?),
        ("networking.istio.io", "VirtualService") => {
            Object::VirtualService(decode(value, header, origin)?)
        }
        ("networking.istio.io", "DestinationRule") => {
            Object::DestinationRule(decode(value, header, origin)?)
        }
        ("networking.istio.io", "ServiceEntry") => {
            Object::ServiceEntry(decode(value, header, origin)?)
        }
        ("networking.istio.io", "Sidecar") => Object::Sidecar(decode(value, header, origin)?),
        ("security.istio.io", "PeerAuthentication") => {
            Object::PeerAuthentication(decode(value, header, origin)?)
        }
        ("security.istio.io", "AuthorizationPolicy") => {
            Object::AuthorizationPolicy(decode(value, header, origin)?)
        }
        ("security.istio.io", "RequestAuthentication") => {
            Object::RequestAuthentication(decode(value, header, origin)?)
        }
        ("networking.k8s.io", "Ingress") => Object::Ingress(decode(value, header, origin)?),
        ("networking.k8s.io", "IngressClass") => {
            Object::IngressClass(decode(value, header, origin)?)
        }
        ("", "Service") => Object::Service(decode(value, header, origin)?),
        ("discovery.k8s.io", "EndpointSlice") => {
            Object::EndpointSlice(decode(value, header, origin)?)
        }
        ("", "Pod") => Object::Pod(decode(value, header, origin)?),
        ("", "Namespace") => Object::Namespace(decode(value, header, origin)?),
        ("", "Node") => Object::Node(decode(value, header, origin)?),
        ("", "Secret") => Object::Secret(decode(value, header, origin)?),
        ("", "ConfigMap") => Object::ConfigMap(decode(value, header, origin)?),
        ("gateway.networking.k8s.io", "BackendTLSPolicy") => {
            Object::BackendTlsPolicy(decode(value, header, origin)?)
        }
        ("policy.ferry.dev", "LocalRateLimitPolicy") => {
            Object::LocalRateLimitPolicy(decode(value, header, origin)?)
        }
        // A kind of an API group Ferry speaks that it does not read (ServiceEntry, Sidecar,
        // UDPRoute...) is an error naming it, never skipped: it may restrict or secure
        // traffic that Ferry would otherwise serve without it.
        (group, kind) if READ_GROUPS.contains(&group) => {
            // A missing or non-text kind (found by the control-path fuzz target) is named as
            // such rather than as an empty kind.
            let (shown, message) = match kind {
                "" => (
                    "(no kind)",
                    format!("missing, or not text, in a {group} document"),
                ),
                kind => (kind, format!("Ferry does not read {kind} ({group}) yet")),
            };
            return Err(LoadError::Field(Box::new(FieldError {
                origin: origin.to_string(),
                kind: shown.to_string(),
                namespace: namespace_or_default(&header.namespace).to_string(),
                name: header.name.clone(),
                field: "kind".into(),
                message,
            })));
        }
        _ => {
            tracing::debug!(kind = %header.kind, name = %header.name, "{origin}: skipping kind Ferry does not read");
            return Ok(None);
        }
    };
    Ok(Some(object))
}

/// The API groups whose kinds Ferry reads: any other kind of them is reported.
pub const READ_GROUPS: [&str; 4] = [
    "gateway.networking.k8s.io",
    "networking.istio.io",
    "security.istio.io",
    "policy.ferry.dev",
];

/// Deserializes one object, reporting the exact field path of any schema error.
fn decode<T: DeserializeOwned>(
    mut value: serde_yaml::Value,
    header: &Header,
    origin: &str,
) -> Result<Box<T>, LoadError> {
    default_namespace(&mut value, header);
    serde_path_to_error::deserialize(value)
        .map(Box::new)
        .map_err(|e| {
            LoadError::Field(Box::new(FieldError {
                origin: origin.to_string(),
                kind: header.kind.clone(),
                namespace: namespace_or_default(&header.namespace).to_string(),
                name: header.name.clone(),
                field: field_path(e.path()),
                message: e.inner().to_string(),
            }))
        })
}

/// The path of a schema error; an error at the object's top level (a key with no name, as
/// a YAML `?` without a key writes) has an empty path, which is named as such.
fn field_path(path: &serde_path_to_error::Path) -> String {
    match path.to_string().as_str() {
        "" | "." => "(top level)".to_string(),
        named => named.to_string(),
    }
}

/// Manifests without a namespace land in `default`, as `kubectl apply` would put them.
/// Cluster-scoped kinds keep none.
fn default_namespace(value: &mut serde_yaml::Value, header: &Header) {
    if matches!(header.kind.as_str(), "GatewayClass" | "Namespace" | "Node")
        || !header.namespace.is_empty()
    {
        return;
    }
    if let Some(metadata) = value.get_mut("metadata").and_then(|m| m.as_mapping_mut()) {
        metadata.insert("namespace".into(), "default".into());
    }
}

fn namespace_or_default(namespace: &str) -> &str {
    if namespace.is_empty() {
        "default"
    } else {
        namespace
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_manifests, LoadError};

    /// Found by the manifest fuzz target: a YAML `?` with no key makes a nameless top-level
    /// field, and the error still names the object and where the problem is.
    #[test]
    fn a_nameless_top_level_key_is_reported_at_the_top_level() {
        let text = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  \
                    name: web\n  namespace: shop\n?\n>\nspec: {}\n";
        let Err(LoadError::Field(error)) = parse_manifests(text, "test") else {
            panic!("the nameless key was not refused");
        };
        assert_eq!(error.field, "(top level)");
        let message = error.to_string();
        assert!(message.contains("Gateway shop/web"), "{message}");
    }
}
