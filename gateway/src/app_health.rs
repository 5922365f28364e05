//! Kubelet's HTTP probes of the app, answered on the sidecar's status port: the injector
//! rewrote them to `/app-health/<container>/<kind>` (the app's port may require mesh mTLS,
//! which kubelet does not speak); here each is sent to the app as originally written and its
//! status returned (Istio's `app-health` on 15020).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Longest a probe may take here (kubelet's own timeout is usually shorter and wins).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// `/app-health/...` path -> the probe as the pod spec wrote it (port resolved to a number).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AppProbes(HashMap<String, AppProbe>);

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProbe {
    http_get: HttpGet,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpGet {
    port: u16,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    http_headers: Vec<Header>,
}

#[derive(Clone, Debug, Deserialize)]
struct Header {
    name: String,
    value: String,
}

impl AppProbes {
    /// From the injector's JSON (`FERRY_APP_PROBES`); empty text means none.
    pub fn parse(json: &str) -> Result<AppProbes, String> {
        if json.trim().is_empty() {
            return Ok(AppProbes::default());
        }
        serde_json::from_str(json).map_err(|e| format!("app probes: {e}"))
    }

    pub fn get(&self, path: &str) -> Option<&AppProbe> {
        self.0.get(path)
    }
}

impl AppProbe {
    /// Runs the probe against the app at `pod_ip` (the address kubelet reached the sidecar
    /// on, so the app is probed where kubelet would have probed it).
    pub async fn check(&self, pod_ip: IpAddr) -> Response<Full<Bytes>> {
        let get = &self.http_get;
        if get
            .scheme
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
        {
            return answer(
                StatusCode::NOT_IMPLEMENTED,
                "HTTPS app probes are not rewritten",
            );
        }
        let address = SocketAddr::new(pod_ip, get.port);
        match tokio::time::timeout(PROBE_TIMEOUT, self.call(address)).await {
            Ok(Ok(status)) if (200..400).contains(&status) => {
                answer(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), "")
            }
            Ok(Ok(status)) => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("app answered {status}"),
            ),
            Ok(Err(e)) => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("app probe failed: {e}"),
            ),
            Err(_) => answer(StatusCode::SERVICE_UNAVAILABLE, "app probe timed out"),
        }
    }

    async fn call(&self, address: SocketAddr) -> Result<u16, String> {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let path = self.http_get.path.as_deref().unwrap_or("/");
        let mut request = http::Request::get(path).header("host", address.to_string());
        for header in &self.http_get.http_headers {
            request = request.header(&header.name, &header.value);
        }
        let request = request
            .header("user-agent", "kube-probe (via ferry sidecar)")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        Ok(status)
    }
}

fn answer(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response
}
