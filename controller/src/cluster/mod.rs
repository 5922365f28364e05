//! `ferry controller`: watch the cluster, translate, publish to proxies.

mod applied_sync;
mod cache;
mod deployer;
mod leader;
mod status_writer;

use kube::discovery::{ApiResource, Discovery};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub use cache::Cache;

use crate::ca;
use crate::push::server::{self, PushState};
use crate::push::Publisher;
use crate::{status, Inputs};
use status_writer::StatusWriter;

/// Kinds the translator reads: (API group, kind). Kinds whose API is not installed (Istio
/// CRDs in a Gateway-API-only cluster, say) are skipped with a warning.
const KINDS: &[(&str, &str)] = &[
    ("gateway.networking.k8s.io", "GatewayClass"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "HTTPRoute"),
    ("gateway.networking.k8s.io", "GRPCRoute"),
    ("gateway.networking.k8s.io", "TLSRoute"),
    ("gateway.networking.k8s.io", "TCPRoute"),
    ("gateway.networking.k8s.io", "ReferenceGrant"),
    ("gateway.networking.k8s.io", "BackendTLSPolicy"),
    ("networking.istio.io", "Gateway"),
    ("networking.istio.io", "VirtualService"),
    ("networking.istio.io", "DestinationRule"),
    ("networking.istio.io", "ServiceEntry"),
    ("networking.istio.io", "Sidecar"),
    ("security.istio.io", "PeerAuthentication"),
    ("security.istio.io", "AuthorizationPolicy"),
    ("security.istio.io", "RequestAuthentication"),
    ("networking.k8s.io", "Ingress"),
    ("networking.k8s.io", "IngressClass"),
    ("policy.ferry.dev", "LocalRateLimitPolicy"),
    ("", "Service"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("", "Pod"),
    ("", "Namespace"),
    ("", "Node"),
    ("", "Secret"),
    ("", "ConfigMap"),
];

/// Whether Ferry reads this kind (the others of its groups are watched only to be reported).
pub(crate) fn reads(group: &str, kind: &str) -> bool {
    KINDS.iter().any(|(g, k)| *g == group && *k == kind)
}

/// Changes closer together than this are translated once (a `kubectl apply -f dir/`
/// produces a burst of events).
const DEBOUNCE: Duration = Duration::from_millis(50);

/// What woke the controller's loop.
enum Wake {
    /// Watched objects, fetched keys or leadership changed: translate and publish.
    Inputs,
    /// A proxy ACKed: Gateways it serves may now be Programmed.
    Acks,
}

pub struct ControllerConfig {
    pub kubeconfig: Option<PathBuf>,
    /// The proxies' port: TLS, push streams and certificates, token-authenticated.
    pub listen: SocketAddr,
    /// The operators' port: /debug/proxies, /metrics, /ready (plain HTTP).
    pub monitoring: SocketAddr,
    /// The dashboard's port (UI and /api/, read-only); None: not served.
    pub dashboard: Option<SocketAddr>,
    /// SPIFFE trust domain of workload certificates.
    pub trust_domain: String,
    /// Lifetime of workload certificates (renewed by proxies at half of it).
    pub workload_cert_lifetime: Duration,
    /// Names (DNS or IP) the controller's serving certificate carries beyond its Service's.
    pub extra_server_names: Vec<String>,
    /// Namespace of the leader-election Lease (the controller's own namespace).
    pub namespace: String,
    /// The mesh's root namespace (Istio's `rootNamespace`).
    pub root_namespace: String,
    /// This replica's name in the Lease.
    pub identity: String,
    /// The sidecar-injection webhook, when the controller serves it.
    pub webhook: Option<WebhookConfig>,
    /// What each Gateway of Ferry's classes gets deployed with (crate::deploy); None: the
    /// controller deploys nothing and Gateways are served by gateways deployed by hand.
    pub deploy: Option<crate::deploy::DeployConfig>,
}

pub struct WebhookConfig {
    pub listen: SocketAddr,
    pub cert_pem: String,
    pub key_pem: String,
    pub inject: crate::inject::InjectConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("API discovery: {0}")]
    Discovery(kube::Error),
    #[error("cannot list {0}")]
    List(String),
    #[error("certificate authority: {0}")]
    Authority(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Runs until the process ends.
pub async fn run(config: ControllerConfig) -> Result<(), ControllerError> {
    let client = client(config.kubeconfig.as_deref()).await?;
    let kinds = installed_kinds(client.clone()).await?;
    // Snapshots wait for the kinds Ferry reads; the others are only reported.
    let read_kinds: Vec<ApiResource> = kinds
        .iter()
        .filter(|k| reads(&k.group, &k.kind))
        .cloned()
        .collect();
    let registry = prometheus::Registry::new();
    let publisher = Arc::new(Publisher::new(&config.root_namespace, &config.trust_domain));
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let authority = start_authority(&client, &config).await?;
    let tls = ca::serving_tls(
        &authority.get(),
        &config.namespace,
        &config.extra_server_names,
    )
    .map_err(ControllerError::Authority)?;
    let state = Arc::new(PushState::new(
        publisher.clone(),
        registry,
        synced,
        Arc::new(ca::tokens::TokenReviewer::new(client.clone())),
        authority.clone(),
        &config.namespace,
    ));
    let listener = bind(config.listen).await?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(config.listen), "proxy port listening (TLS)");
    tokio::spawn(server::serve(listener, tls, state.clone()));
    let monitoring = bind(config.monitoring).await?;
    tracing::info!(addr = %monitoring.local_addr().unwrap_or(config.monitoring), "monitoring port listening");
    tokio::spawn(crate::push::monitoring::serve(monitoring, state.clone()));
    let view = crate::dashboard::cluster::ClusterSource::new(
        state.proxies.clone(),
        crate::Options {
            root_namespace: config.root_namespace.clone(),
            ..crate::Options::default()
        },
    );
    if let Some(addr) = config.dashboard {
        let dashboard = crate::dashboard::Dashboard::new(view.clone());
        let _ = state.dashboard.set(dashboard.clone());
        let listener = bind(addr).await?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "dashboard listening");
        tokio::spawn(crate::dashboard::server::serve(listener, dashboard));
    }
    if let Some(webhook) = config.webhook {
        // Its own task: a bad certificate stops injection (logged), not routing.
        tokio::spawn(async move {
            let served = crate::webhook::serve(
                webhook.listen,
                &webhook.cert_pem,
                &webhook.key_pem,
                webhook.inject,
            );
            if let Err(e) = served.await {
                tracing::error!("injection webhook not served: {e}");
            }
        });
    }

    let cache = Arc::new(Cache::default());
    for kind in &kinds {
        cache.watch(client.clone(), kind.clone());
    }
    let mut applied =
        applied_sync::AppliedSync::new(client.clone(), &config.namespace, &config.identity).await;
    let mut leading = leader::campaign(client.clone(), &config.namespace, config.identity);
    let mut deployer = config
        .deploy
        .map(|deploy| deployer::Deployer::new(client.clone(), deploy));
    let mut was_leading = false;
    let mut statuses = StatusWriter::new(client.clone(), &kinds);
    let mut roots = ca::store::RootPublisher::default();
    let mut latest: Option<Arc<Inputs>> = None;
    // RequestAuthentication keys named by jwksUri: fetched here, pushed in snapshots.
    let jwks = Arc::new(crate::jwks::JwksCache::default());
    tokio::spawn(jwks.clone().run());
    loop {
        let wake = tokio::select! {
            _ = cache.changed.notified() => Wake::Inputs,
            _ = jwks.changed.notified() => Wake::Inputs,
            // A new leader writes what the old one may not have.
            _ = leading.changed() => Wake::Inputs,
            _ = state.proxies.acks.notified() => Wake::Acks,
        };
        tokio::time::sleep(DEBOUNCE).await;
        if matches!(wake, Wake::Inputs) && cache.synced(&read_kinds) {
            let mut inputs = cache.inputs();
            jwks.want(&inputs);
            inputs.jwks = jwks.fetched();
            let inputs = Arc::new(inputs);
            publisher.update(inputs.clone());
            view.update(inputs.clone());
            latest = Some(inputs);
            if !*synced_tx.borrow() {
                tracing::info!("all watched kinds listed; serving snapshots");
                synced_tx.send_replace(true);
            }
        } // else: a partial view would publish routes without their backends
        let mine = publisher.applied(&state.proxies.acked_by_scope());
        let mine_changed = applied.publish(mine.clone()).await;
        if matches!(wake, Wake::Acks) && !mine_changed {
            continue; // most ACKs change nothing a status shows
        }
        let is_leading = *leading.borrow();
        if is_leading && !was_leading {
            deployer.iter_mut().for_each(deployer::Deployer::forget);
        }
        was_leading = is_leading;
        if let Some(inputs) = latest.as_ref().filter(|_| is_leading) {
            let all = applied.all(inputs, &mine);
            write_statuses(&mut statuses, inputs, &all, deployer.is_some()).await;
            if matches!(wake, Wake::Inputs) {
                if let Some(deployer) = deployer.as_mut() {
                    deployer.sync(inputs).await;
                }
                let namespaces = namespace_names(inputs);
                let bundle = authority.get().trust_bundle_pem().to_string();
                roots.publish(&client, &namespaces, &bundle).await;
            }
        }
    }
}

fn namespace_names(inputs: &Inputs) -> Vec<String> {
    inputs
        .namespaces
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect()
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ControllerError> {
    crate::push::server::listener(addr).map_err(|source| ControllerError::Listen { addr, source })
}

/// The mesh CA from its Secret (created on first start), followed for rotations.
async fn start_authority(
    client: &kube::Client,
    config: &ControllerConfig,
) -> Result<Arc<ca::CurrentAuthority>, ControllerError> {
    let material = ca::store::load_or_create(client, &config.namespace, &config.trust_domain)
        .await
        .map_err(ControllerError::Authority)?;
    let authority = ca::Authority::new(
        material,
        &config.trust_domain,
        config.workload_cert_lifetime,
    )
    .map_err(ControllerError::Authority)?;
    let current = Arc::new(ca::CurrentAuthority::new(authority));
    tokio::spawn(ca::follow_rotation(
        client.clone(),
        config.namespace.clone(),
        current.clone(),
        config.trust_domain.clone(),
        config.workload_cert_lifetime,
        Duration::from_secs(10),
    ));
    Ok(current)
}

/// Statuses come from each Gateway's own scope (its proxy's) and one translation of the rest.
async fn write_statuses(
    writer: &mut StatusWriter,
    inputs: &Inputs,
    applied: &crate::applied::AppliedGateways,
    deploying: bool,
) {
    let reports = status::reports_per_proxy(inputs);
    let applied = if deploying {
        crate::applied::Applied::KnownAndDeployed(applied)
    } else {
        crate::applied::Applied::Known(applied)
    };
    let written = writer
        .write(status::desired(inputs, &reports, &applied))
        .await;
    if written > 0 {
        tracing::info!(written, "statuses updated");
    }
}

/// Every object of the kinds Ferry reads, listed once (for `ferry analyze --cluster`). Objects
/// that do not decode come back as errors naming the object and field; kinds whose API is not
/// installed are skipped.
pub async fn list_once(
    kubeconfig: Option<&std::path::Path>,
) -> Result<(Inputs, Vec<crate::LoadError>), ControllerError> {
    use kube::api::{Api, DynamicObject, ListParams};
    let client = client(kubeconfig).await?;
    let mut inputs = Inputs::default();
    let mut errors = Vec::new();
    for resource in installed_kinds(client.clone()).await? {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| ControllerError::List(format!("{}: {e}", resource.plural)))?;
        for object in &list.items {
            match cache::decode_dynamic(&resource, object, "cluster") {
                Ok(Some(decoded)) => inputs.add(decoded),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
    }
    Ok((inputs, errors))
}

/// A client from `kubeconfig`, else the in-cluster configuration, else $KUBECONFIG /
/// ~/.kube/config.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, ControllerError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ControllerError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| ControllerError::Config(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| ControllerError::Config(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| ControllerError::Config(e.to_string()))
}

/// The preferred served version of each wanted kind.
async fn installed_kinds(client: kube::Client) -> Result<Vec<ApiResource>, ControllerError> {
    let discovery = Discovery::new(client)
        .run()
        .await
        .map_err(ControllerError::Discovery)?;
    let mut kinds = Vec::new();
    for (group, kind) in KINDS {
        match discovery.get(group).and_then(|g| g.recommended_kind(kind)) {
            Some((resource, _)) => kinds.push(resource),
            None => tracing::warn!(group, kind, "API not installed; not watched"),
        }
    }
    // Kinds of these groups that Ferry does not read (ServiceEntry, Sidecar, UDPRoute...) are
    // watched too, so each such object is reported on its status instead of ignored.
    for group in crate::inputs::READ_GROUPS {
        let Some(api_group) = discovery.get(group) else {
            continue;
        };
        for (resource, _) in api_group.recommended_resources() {
            let read = KINDS
                .iter()
                .any(|(g, k)| *g == group && *k == resource.kind);
            if !read {
                tracing::info!(group, kind = %resource.kind, "not served by Ferry: watched to be reported");
                kinds.push(resource);
            }
        }
    }
    Ok(kinds)
}
