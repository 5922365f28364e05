//! `ferry sidecar`: the gateway's engine as a per-pod proxy. Same snapshot, same HTTP engine;
//! the scope is the mesh (Service ports and mesh VirtualServices) and the listeners are the
//! two capture ports `ferry sidecar-init` redirects to.

use ferry_controller::Options;
use ferry_gateway::sync::{self, SyncOptions};
use ferry_gateway::{admin, source, Engine};
use ferry_mesh::capture::{self as sidecar, CaptureOptions};
use ferry_model::push::Scope;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::cli::SidecarArgs;
use crate::gateway_cmd::{
    control_channel, default_proxy_name, file_loader, start_identity, started_jwks_cache,
    telemetry_options,
};

pub async fn run(args: SidecarArgs, log_control: admin::LogControl) -> anyhow::Result<()> {
    let options = Options {
        mesh_namespace: Some(args.namespace.clone()),
        root_namespace: args.source.root_namespace.clone(),
        gateway_labels: args.labels.clone(),
        ..Options::default()
    };
    let telemetry = telemetry_options(&args.telemetry, &args.labels);
    let mut http1 = args.http1.options(crate::cli_limits::CauseDetail::Full);
    // Its peers are mesh proxies that append the client they served to X-Forwarded-For.
    http1.limits.client_address.trusted_proxies = 1;
    let engine = Engine::new_sidecar(
        &telemetry,
        args.inbound_port,
        args.concurrency.max(1),
        http1,
    )
    .map_err(anyhow::Error::msg)?;
    let admin_addr = admin::serve(args.admin, engine.clone(), log_control).await?;
    let probes = ferry_gateway::app_health::AppProbes::parse(&args.app_probes)
        .map_err(anyhow::Error::msg)?;
    let status_addr = admin::serve_status(args.status, engine.clone(), Arc::new(probes)).await?;
    start_identity(&args.source, &engine).await?;
    let capture = CaptureOptions {
        outbound: SocketAddr::from(([127, 0, 0, 1], args.outbound_port)),
        // Redirected inbound connections keep their pod-IP destination: listen on all.
        inbound: SocketAddr::from(([0, 0, 0, 0], args.inbound_port)),
        registry_only: args.outbound_traffic_policy == "REGISTRY_ONLY",
        namespace: args.namespace.clone(),
        labels: args.labels.clone(),
    };
    let capture_task = tokio::spawn(sidecar::serve(engine.clone(), capture));
    tracing::info!(%admin_addr, %status_addr, namespace = %args.namespace, "ferry sidecar starting");
    let config = async {
        match (&args.source.controller, &args.source.config) {
            (Some(controller), _) => {
                let sync = SyncOptions {
                    controller: control_channel(&args.source, controller.clone()),
                    proxy: args
                        .source
                        .proxy_name
                        .clone()
                        .unwrap_or_else(default_proxy_name),
                    scope: Scope {
                        mesh_namespace: Some(args.namespace.as_str().into()),
                        // The workload's labels: which AuthorizationPolicies select it.
                        labels: args.labels.clone(),
                        ..Scope::default()
                    },
                };
                sync::follow(sync, engine.clone()).await;
                Ok(())
            }
            (None, Some(path)) => {
                let jwks = started_jwks_cache();
                let loader = file_loader(path.clone(), options, jwks.clone(), None);
                source::watch(path.clone(), loader, engine.clone(), jwks.changed.clone())
                    .await
                    .map_err(anyhow::Error::from)
            }
            (None, None) => unreachable!("clap requires --config or --controller"),
        }
    };
    tokio::select! {
        result = config => result,
        bound = capture_task => Ok(bound??),
        _ = terminated() => {
            drain(&engine, std::time::Duration::from_secs(args.drain_seconds)).await;
            Ok(())
        }
    }
}

async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
        }
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            std::future::pending::<()>().await;
        }
    }
}

/// SIGTERM: stop accepting, let open connections finish their requests (keep-alive ones
/// close after the current one), exit when none is left or the drain period ends.
async fn drain(engine: &Engine, period: std::time::Duration) {
    tracing::info!(
        open = engine.open_connections(),
        ?period,
        "SIGTERM: draining"
    );
    engine.begin_drain();
    let deadline = tokio::time::Instant::now() + period;
    while engine.open_connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tracing::info!(left = engine.open_connections(), "drained; exiting");
}
