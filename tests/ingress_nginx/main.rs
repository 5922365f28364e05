//! ingress-nginx's annotations on Ingresses, through the real binary and a real HTTP
//! client (both protocols): one table of requests and what each must get, plus what is
//! refused and reported; limits, backends and external auth with their own servers.

#[path = "../support/mod.rs"]
mod support;

mod annotations;
mod auth;
mod backends;
mod limits;
mod passthrough;

use support::{ConfigDir, Gateway};

/// A gateway serving `dir` with class nginx on `port`, ready.
async fn nginx_gateway(dir: &ConfigDir, port: u16, extra: &[&str]) -> Gateway {
    let port = port.to_string();
    let mut args = vec!["--ingress-port", &port, "--ingress-class", "nginx"];
    args.extend_from_slice(extra);
    let gw = Gateway::spawn(dir.path(), &args);
    gw.wait_ready().await;
    gw
}
