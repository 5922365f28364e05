//! The `ferry` binary: CLI dispatch only. Each subcommand lives in its own module.

mod cli;
mod gateway_cmd;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    init_tracing(&cli.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            cli::Command::Gateway(args) => gateway_cmd::run(args).await,
            cli::Command::Echo(args) => run_echo(args).await,
        }
    })
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
    };
    ferry_gateway::echo::serve(listener, config).await;
    Ok(())
}
