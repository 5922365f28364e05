//! The `ferry` binary: CLI dispatch only. Each subcommand lives in its own module.

mod analyze_cmd;
mod cli;
mod cli_limits;
mod dashboard_cmd;
mod gateway_cmd;
mod inject_cmd;
mod migrate_cmd;
mod precheck;
mod proxy_config;
mod proxy_status;
mod sidecar_cmd;
mod sidecar_init;
mod standalone_dashboard;

use clap::Parser;

/// The proxy allocates small, short-lived buffers per request; mimalloc serves them with
/// far less contention and fragmentation than the system allocator.
/// (`--features system-allocator` leaves it out, so heap profilers that intercept malloc,
/// such as heaptrack, see every allocation.)
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc settings for a long-running proxy that is judged by its resident memory: commit
/// arena memory on demand. Measured with 1,000 routes: idle RSS 29.5 MiB with mimalloc's
/// defaults, 13.6 MiB with this. Freed pages go back to the OS after mimalloc's default delay
/// (10 ms): returning them at once (`MIMALLOC_PURGE_DELAY=0`) made pages of short-lived
/// per-request allocations fault back in all the time (keep-alive 50k req/s against 61k on
/// one core, the difference in page faults and kernel time) for 0.5 KiB less per idle
/// connection. Variables the user set are left alone.
const ALLOCATOR_DEFAULTS: [(&str, &str); 1] = [("MIMALLOC_ARENA_EAGER_COMMIT", "0")];

/// mimalloc reads its options from the environment when the process starts, before `main`,
/// so the defaults above take effect by re-executing this binary once with them set.
fn apply_allocator_defaults() {
    use std::os::unix::process::CommandExt;
    let missing: Vec<_> = ALLOCATOR_DEFAULTS
        .iter()
        .filter(|(key, _)| std::env::var_os(key).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut command = std::process::Command::new(exe);
    command.args(std::env::args_os().skip(1));
    for (key, value) in missing {
        command.env(key, value);
    }
    let error = command.exec(); // returns only on failure; then run with mimalloc's defaults
    eprintln!("ferry: cannot re-exec with allocator settings: {error}");
}

fn main() -> anyhow::Result<()> {
    apply_allocator_defaults();
    let cli = cli::Cli::parse();
    let log_control = init_tracing(&cli.log);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(
        cli.command,
        cli::Command::Gateway(_) | cli::Command::Sidecar(_)
    ) {
        // Proxies serve connections on their own worker threads (--concurrency); this
        // runtime only accepts and runs the control path, which one thread keeps up with.
        builder.worker_threads(1);
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            cli::Command::Gateway(args) => gateway_cmd::run(args, log_control).await,
            cli::Command::Echo(args) => run_echo(args).await,
            cli::Command::ProxyConfig(args) => proxy_config::run(args).await,
            cli::Command::ProxyStatus(args) => proxy_status::run(args).await,
            cli::Command::Dashboard(args) => dashboard_cmd::run(args).await,
            cli::Command::Crds(args) => {
                use ferry_controller::crds;
                let text = match args.only.as_deref() {
                    Some("istio") => crds::istio_yaml(),
                    Some("ferry") => crds::ferry_yaml(),
                    _ => crds::yaml(),
                };
                print!("{text}");
                Ok(())
            }
            cli::Command::Analyze(args) => analyze_cmd::run(args).await,
            cli::Command::Migrate(args) => migrate_cmd::run(args).await,
            cli::Command::SidecarInit(args) => sidecar_init::run(args),
            cli::Command::Inject(args) => inject_cmd::run(args),
            cli::Command::Sidecar(args) => sidecar_cmd::run(args, log_control).await,
            cli::Command::Precheck(args) => precheck::run(args).await,
            cli::Command::Version(args) => {
                print_version(args.short);
                Ok(())
            }
            cli::Command::Controller(args) => {
                args.inject.check_proxy_args().map_err(anyhow::Error::msg)?;
                let webhook = webhook_config(&args)?;
                let config = ferry_controller::cluster::ControllerConfig {
                    kubeconfig: args.kubeconfig,
                    listen: args.listen,
                    monitoring: args.monitoring,
                    dashboard: (!args.no_dashboard).then_some(args.dashboard),
                    trust_domain: args.trust_domain,
                    workload_cert_lifetime: args.workload_cert_lifetime,
                    extra_server_names: args.server_names,
                    namespace: args.namespace,
                    root_namespace: args.root_namespace,
                    identity: args.identity.unwrap_or_else(gateway_cmd::host_identity),
                    webhook,
                    deploy: args.deploy_gateways.then(|| args.inject.deploy_config()),
                };
                Ok(ferry_controller::cluster::run(config).await?)
            }
        }
    })
}

fn webhook_config(
    args: &cli::ControllerArgs,
) -> anyhow::Result<Option<ferry_controller::cluster::WebhookConfig>> {
    let (Some(listen), Some(cert), Some(key)) =
        (args.webhook_listen, &args.webhook_cert, &args.webhook_key)
    else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    Ok(Some(ferry_controller::cluster::WebhookConfig {
        listen,
        cert_pem: read(cert)?,
        key_pem: read(key)?,
        inject: args.inject.config(),
    }))
}

fn print_version(short: bool) {
    let version = env!("CARGO_PKG_VERSION");
    if short {
        println!("{version}");
    } else {
        println!("ferry version {version} (Pingora 0.9, rustls 0.23, Gateway API v1, Istio networking v1)");
    }
}

/// Logs go to stderr (stdout is the access log), coloured only on a terminal. The filter can
/// be replaced at run time through the returned control (admin `/logging`).
fn init_tracing(filter: &str) -> ferry_gateway::admin::LogControl {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{reload, EnvFilter};
    let initial = EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let (filter_layer, handle) = reload::Layer::new(initial);
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only on a terminal: `kubectl logs` and log collectors read a pipe.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    let current = std::sync::Mutex::new(filter.to_string());
    std::sync::Arc::new(move |wanted: Option<&str>| {
        let mut current = current.lock().expect("log filter lock");
        if let Some(wanted) = wanted {
            let parsed = EnvFilter::try_new(wanted).map_err(|e| format!("{wanted:?}: {e}"))?;
            handle.reload(parsed).map_err(|e| e.to_string())?;
            *current = wanted.to_string();
            tracing::info!(filter = wanted, "log filter changed");
        }
        Ok(current.clone())
    })
}

async fn run_echo(args: cli::EchoArgs) -> anyhow::Result<()> {
    let listener = ferry_gateway::echo::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, name = %args.name, "echo backend listening");
    let config = ferry_gateway::echo::EchoConfig {
        name: args.name,
        namespace: args.namespace,
        log_requests: args.log_requests,
        status: args.status,
        delay_ms: args.delay_ms,
        fixed_body: args.fixed_body,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                Some(ferry_gateway::echo::tls_from_files(cert, key).map_err(anyhow::Error::msg)?)
            }
            _ => None,
        },
    };
    ferry_gateway::echo::serve(listener, config).await;
    Ok(())
}
