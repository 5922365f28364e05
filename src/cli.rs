//! Command-line interface definitions.

use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry: a Pingora-based Kubernetes gateway and sidecar mesh"
)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `ferry_gateway=debug`.
    #[arg(long, global = true, env = "FERRY_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway. Standalone: `--config` points at Kubernetes manifests on disk.
    Gateway(GatewayArgs),
    /// Run an HTTP/1.1 + h2c backend that answers with a JSON description of each request.
    Echo(EchoArgs),
}

#[derive(Args)]
pub struct GatewayArgs {
    /// A YAML/JSON manifest file, or a directory of them (read recursively, re-read on change).
    #[arg(long)]
    pub config: PathBuf,
    /// Admin server address (/ready, /config_dump, /metrics).
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,
    /// This gateway's labels, `key=value`, matched by Istio Gateway selectors. Replaces the
    /// defaults `istio=ingressgateway` and `istio=ingress`. Repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Address listeners bind to.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Port that serves Kubernetes Ingress objects.
    #[arg(long, default_value_t = 8080)]
    pub ingress_port: u16,
    /// IngressClass served (Ingresses without a class are served too).
    #[arg(long, default_value = "ferry")]
    pub ingress_class: String,
}

#[derive(Args)]
pub struct EchoArgs {
    /// Address to listen on, e.g. 127.0.0.1:9080.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Name reported in every answer (e.g. the "pod" or version this backend stands for).
    #[arg(long, default_value = "echo")]
    pub name: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Print one JSON line per request on stdout.
    #[arg(long)]
    pub log_requests: bool,
    /// Status to answer when the request does not ask for one (simulates a failing pod).
    #[arg(long, default_value_t = 200)]
    pub status: u16,
    /// Delay before answering when the request does not ask for one (simulates a slow pod).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("label {text:?} must be key=value")),
    }
}
