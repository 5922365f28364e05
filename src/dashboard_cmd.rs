//! `ferry dashboard`: the controller's dashboard on this machine, as `istioctl dashboard` and
//! `linkerd viz dashboard` do. The UI's files come from this binary; its API calls go to
//! every ready controller replica through port-forwards (kube-rs, the API server's
//! `pods/portforward`) and their windows are added up (each replica keeps the summaries of
//! the proxies connected to it). The controllers' dashboards stay on their pods' loopback:
//! only someone allowed to port-forward to the controller's pods reaches them.

use anyhow::Context;
use bytes::Bytes;
use ferry_controller::dashboard::replicas::{Replica, Replicas};
use ferry_controller::dashboard::server;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::cli::DashboardArgs;

/// The controller pods' labels (the chart's `ferry.controllerSelector`).
const CONTROLLER_SELECTOR: &str =
    "app.kubernetes.io/name=ferry,app.kubernetes.io/component=controller";

pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let (replicas, names) = if args.replica.is_empty() {
        pod_replicas(&args).await?
    } else {
        address_replicas(&args)
    };
    let listener = TcpListener::bind((args.address.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.address, args.port))?;
    let url = format!("http://{}/", listener.local_addr()?);
    println!(
        "Ferry dashboard: {url} (controllers: {}; Ctrl-C to stop)",
        names.join(", ")
    );
    if args.browser {
        open_browser(&url);
    }
    server::serve(listener, Arc::new(Replicas::new(replicas))).await;
    Ok(())
}

/// Every ready controller pod (or the one `--pod` names).
async fn pod_replicas(
    args: &DashboardArgs,
) -> anyhow::Result<(Vec<Box<dyn Replica>>, Vec<String>)> {
    let client = ferry_controller::cluster::client(args.kubeconfig.as_deref()).await?;
    let pods: Api<Pod> = Api::namespaced(client, &args.namespace);
    let names = match &args.pod {
        Some(pod) => vec![pod.clone()],
        None => ready_controller_pods(&pods, &args.namespace).await?,
    };
    let replicas = names
        .iter()
        .map(|pod| {
            Box::new(PodReplica {
                pods: pods.clone(),
                pod: pod.clone(),
                port: args.remote_port,
            }) as Box<dyn Replica>
        })
        .collect();
    Ok((replicas, names))
}

/// `--replica ADDRESS`: dashboards reached directly (your own port-forwards, or a controller
/// outside a cluster).
fn address_replicas(args: &DashboardArgs) -> (Vec<Box<dyn Replica>>, Vec<String>) {
    let replicas = args
        .replica
        .iter()
        .map(|address| Box::new(AddressReplica(address.clone())) as Box<dyn Replica>)
        .collect();
    (replicas, args.replica.clone())
}

async fn ready_controller_pods(pods: &Api<Pod>, namespace: &str) -> anyhow::Result<Vec<String>> {
    let listed = pods
        .list(&ListParams::default().labels(CONTROLLER_SELECTOR))
        .await
        .with_context(|| format!("cannot list the controller's pods in {namespace}"))?;
    let ready: Vec<String> = listed
        .items
        .iter()
        .filter(|pod| is_ready(pod))
        .filter_map(|pod| pod.metadata.name.clone())
        .collect();
    anyhow::ensure!(
        !ready.is_empty(),
        "no ready controller pod ({CONTROLLER_SELECTOR}) in namespace {namespace}: is Ferry installed there (-n)?"
    );
    Ok(ready)
}

fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    running && ready
}

/// A controller pod's dashboard, one port-forward per call.
struct PodReplica {
    pods: Api<Pod>,
    pod: String,
    port: u16,
}

#[async_trait::async_trait]
impl Replica for PodReplica {
    fn name(&self) -> &str {
        &self.pod
    }

    async fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let mut forwarder = self
            .pods
            .portforward(&self.pod, &[self.port])
            .await
            .map_err(|e| format!("port-forward: {e}"))?;
        let stream = forwarder
            .take_stream(self.port)
            .ok_or("the port-forward gave no stream")?;
        let answer = get_json(stream, path).await;
        forwarder.abort();
        answer
    }
}

/// A dashboard at a `host:port`.
struct AddressReplica(String);

#[async_trait::async_trait]
impl Replica for AddressReplica {
    fn name(&self) -> &str {
        &self.0
    }

    async fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let tcp = tokio::net::TcpStream::connect(&self.0)
            .await
            .map_err(|e| e.to_string())?;
        get_json(tcp, path).await
    }
}

/// `GET path` over one HTTP/1.1 connection on `io`, the answer as JSON.
async fn get_json<S>(io: S, path: &str) -> Result<serde_json::Value, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// Opens the URL where there is a desktop to open it on; elsewhere the printed URL is it.
fn open_browser(url: &str) {
    let desktop =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if desktop || cfg!(target_os = "macos") {
        let _ = std::process::Command::new(opener)
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}
