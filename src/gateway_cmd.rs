//! `ferry gateway` in standalone mode: manifests on disk -> translator -> engine.

use ferry_controller::jwks::JwksCache;
use ferry_controller::{translate, Options, Severity};
use ferry_gateway::control_channel::ControlChannel;
use ferry_gateway::source::{self, Loaded, Loader};
use ferry_gateway::sync::{self, SyncOptions};
use ferry_gateway::telemetry::{ProxyIdentity, TelemetryOptions, TracingOptions};
use ferry_gateway::{admin, Engine};
use ferry_model::push::Scope;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cli::{GatewayArgs, TelemetryArgs};
use crate::standalone_dashboard::FilesSource;

pub async fn run(args: GatewayArgs, log_control: admin::LogControl) -> anyhow::Result<()> {
    let mut options = Options {
        ingress_port: args.ingress_port,
        ingress_tls_port: args.ingress_tls_port,
        ingress_class: args.ingress_class.clone(),
        root_namespace: args.source.root_namespace.clone(),
        ..Options::default()
    };
    if !args.labels.is_empty() {
        options.gateway_labels = args.labels.clone();
    }
    let telemetry = telemetry_options(&args.telemetry, &args.labels);
    let mut http1 = args.http1.options(crate::cli_limits::CauseDetail::Code);
    http1.limits.client_address = args.client_address.client_address();
    let engine = Engine::new(args.bind_address, &telemetry, args.concurrency, http1)
        .map_err(anyhow::Error::msg)?;
    let admin_addr = admin::serve(args.admin, engine.clone(), log_control).await?;
    if let Some(status) = args.status {
        let probes = std::sync::Arc::new(ferry_gateway::app_health::AppProbes::default());
        let status_addr = admin::serve_status(status, engine.clone(), probes).await?;
        tracing::info!(%status_addr, "status port (probes, metrics) bound");
    }
    start_identity(&args.source, &engine).await?;
    if let Some(controller) = args.source.controller.clone() {
        let sync = sync_options(&args, controller, &options);
        tracing::info!(%admin_addr, controller = %sync.controller.address, proxy = %sync.proxy, "ferry gateway starting (controller mode)");
        sync::follow(sync, engine).await;
        return Ok(());
    }
    let config = args
        .source
        .config
        .clone()
        .expect("clap requires --config without --controller");
    tracing::info!(%admin_addr, config = %config.display(), "ferry gateway starting (standalone)");
    let jwks = started_jwks_cache();
    let dashboard = match args.dashboard {
        Some(addr) => {
            let source = FilesSource::new(host_identity(), options.clone(), engine.clone());
            let bound = crate::standalone_dashboard::start(addr, source.clone()).await?;
            tracing::info!("dashboard: http://{bound}/");
            Some(source)
        }
        None => None,
    };
    let loader = file_loader(config.clone(), options, jwks.clone(), dashboard);
    source::watch(config, loader, engine, jwks.changed.clone()).await?;
    Ok(())
}

/// The scope sent to the controller: the same selection standalone mode applies locally.
fn sync_options(args: &GatewayArgs, controller: String, options: &Options) -> SyncOptions {
    let proxy = args
        .source
        .proxy_name
        .clone()
        .unwrap_or_else(default_proxy_name);
    SyncOptions {
        controller: control_channel(&args.source, controller),
        proxy,
        scope: Scope {
            gateway: args.scope.as_str().into(),
            labels: options.gateway_labels.clone(),
            ingress_port: options.ingress_port,
            ingress_class: options.ingress_class.clone(),
            ingress_tls_port: options.ingress_tls_port,
            mesh_namespace: None,
            workload_namespace: None,
        },
    }
}

/// The proxy's workload identity for mesh mTLS: from the controller's CA in controller mode,
/// from `--identity-dir` files otherwise (none without either: mTLS endpoints then fail
/// closed and STRICT ports refuse every connection).
pub async fn start_identity(
    source: &crate::cli::SourceArgs,
    engine: &Engine,
) -> anyhow::Result<()> {
    if let Some(controller) = &source.controller {
        let channel = control_channel(source, controller.clone());
        tokio::spawn(ferry_mesh::identity::controller::follow(
            channel,
            engine.identity.clone(),
        ));
    } else if let Some(dir) = &source.identity_dir {
        ferry_mesh::identity::files::follow(dir.clone(), engine.identity.clone())
            .await
            .map_err(|e| anyhow::anyhow!("--identity-dir {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// The controller connection of a proxy (`--controller`, `--controller-root`,
/// `--token-file`).
pub fn control_channel(source: &crate::cli::SourceArgs, address: String) -> ControlChannel {
    ControlChannel {
        address,
        root_file: source.controller_root.clone(),
        token_file: source.token_file.clone(),
    }
}

/// `POD_NAME.POD_NAMESPACE` in a cluster (downward API), else the host name and process id.
pub fn default_proxy_name() -> String {
    match (std::env::var("POD_NAME"), std::env::var("POD_NAMESPACE")) {
        (Ok(pod), Ok(namespace)) => format!("{pod}.{namespace}"),
        _ => host_identity(),
    }
}

/// The host name and process id: unique enough outside a cluster.
pub fn host_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "ferry".into());
    format!("{host}-{}", std::process::id())
}

/// Standalone proxies fetch RequestAuthentication `jwksUri` keys themselves.
pub fn started_jwks_cache() -> Arc<JwksCache> {
    let jwks = Arc::new(JwksCache::default());
    tokio::spawn(jwks.clone().run());
    jwks
}

/// Reads the manifests and translates them, with the JWT keys fetched so far. Invalid objects
/// reject the whole change (the engine keeps its last good snapshot); degraded ones are
/// logged and applied.
/// `dashboard`: told about every read, valid or not.
pub fn file_loader(
    path: PathBuf,
    options: Options,
    jwks: Arc<JwksCache>,
    dashboard: Option<Arc<FilesSource>>,
) -> Loader {
    Arc::new(move || {
        let mut inputs =
            ferry_controller::inputs::load_path(&path).map_err(|e| vec![e.to_string()])?;
        jwks.want(&inputs);
        inputs.jwks = jwks.fetched();
        let output = translate(&inputs, &options);
        let errors: Vec<String> = output.errors().map(ToString::to_string).collect();
        if let Some(dashboard) = &dashboard {
            dashboard.read(&inputs, errors.clone());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for warning in output
            .reports
            .iter()
            .filter(|r| r.severity == Severity::Warning)
        {
            tracing::warn!("{warning}");
        }
        let reports = serde_json::to_value(&output.reports).unwrap_or_default();
        Ok(Loaded {
            snapshot: output.snapshot,
            reports,
        })
    })
}

/// The proxy's identity comes from flags and its own labels (`app`, `version`), the way
/// Istio derives a gateway's `source_*` labels from its Pod.
pub fn telemetry_options(args: &TelemetryArgs, labels: &[(String, String)]) -> TelemetryOptions {
    let label = |key: &str| {
        labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let first = |keys: &[&str]| keys.iter().find_map(|key| label(key));
    let app = label("app").unwrap_or_else(|| args.workload_name.clone());
    // The same label precedence as the controller gives the endpoints (translate/workloads.rs),
    // so a source's destination_* labels and the destination's own agree.
    let identity = ProxyIdentity {
        workload: args.workload_name.clone(),
        namespace: args.workload_namespace.clone(),
        canonical_service: first(&[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ])
        .unwrap_or_else(|| args.workload_name.clone()),
        canonical_revision: first(&[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ])
        .unwrap_or_else(|| "latest".into()),
        app,
        version: label("version").unwrap_or_else(|| "unknown".into()),
        ..ProxyIdentity::default()
    };
    TelemetryOptions {
        identity,
        istio_metrics: args.istio_metrics,
        access_log: args.access_log,
        tracing: args
            .tracing_endpoint
            .as_ref()
            .map(|endpoint| TracingOptions {
                endpoint: endpoint.clone(),
                sampling_percent: args.tracing_sampling,
                service_name: format!("{}.{}", args.workload_name, args.workload_namespace),
            }),
    }
}
