//! The mesh's certificate authority and how proxies prove who they are to it.

mod authority;

pub use authority::{Authority, CaMaterial};
pub mod store;
pub mod tokens;

use std::sync::{Arc, RwLock};

/// The authority in use, replaced when its Secret changes (a root rotation or a new
/// plug-in CA) without restarting the controller.
pub struct CurrentAuthority(RwLock<Arc<Authority>>);

impl CurrentAuthority {
    pub fn new(authority: Authority) -> Self {
        CurrentAuthority(RwLock::new(Arc::new(authority)))
    }

    pub fn get(&self) -> Arc<Authority> {
        self.0.read().expect("authority lock").clone()
    }

    pub fn replace(&self, authority: Authority) {
        *self.0.write().expect("authority lock") = Arc::new(authority);
    }
}

/// The controller port's TLS configuration: a certificate from the mesh CA naming the
/// controller's Service (and `extra_names`), HTTP/2 and HTTP/1.1 by ALPN.
pub fn serving_tls(
    authority: &Authority,
    service_namespace: &str,
    extra_names: &[String],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let service = "ferry-controller";
    let mut names: Vec<String> = vec![
        service.into(),
        format!("{service}.{service_namespace}"),
        format!("{service}.{service_namespace}.svc"),
        format!("{service}.{service_namespace}.svc.cluster.local"),
        "localhost".into(),
        "127.0.0.1".into(),
    ];
    names.extend(extra_names.iter().cloned());
    let (chain, key) = authority.server_certificate(&names)?;
    let key = ferry_model::certified_key(&chain, &key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Re-reads the CA's Secret every `period`; a changed one (root rotation, new plug-in CA)
/// replaces the authority at once and its roots are published from then on.
pub async fn follow_rotation(
    client: kube::Client,
    namespace: String,
    current: Arc<CurrentAuthority>,
    trust_domain: String,
    workload_lifetime: std::time::Duration,
    period: std::time::Duration,
) {
    loop {
        tokio::time::sleep(period).await;
        let material = match store::load(&client, &namespace).await {
            Ok(Some(material)) => material,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("CA Secret not re-read: {e}");
                continue;
            }
        };
        if *current.get().material() == material {
            continue;
        }
        match Authority::new(material, &trust_domain, workload_lifetime) {
            Ok(authority) => {
                tracing::info!("CA Secret changed: signing with the new material");
                current.replace(authority);
            }
            Err(e) => tracing::error!("CA Secret changed but cannot be used (kept the old): {e}"),
        }
    }
}
