//! Test harness: real `ferry` processes (gateway and echo backends) on loopback, a real HTTP
//! client (hyper, HTTP/1.1 and h2c), manifests written to a temporary directory.
#![allow(dead_code)]

pub mod apiserver;
pub mod cluster;
pub mod jwt;
pub mod kube;
pub mod manifests;
pub mod netns;
pub mod tls;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(10);

/// A port free right now on 127.0.0.1, picked below the kernel's ephemeral range (32768+)
/// so the many client sockets tests open cannot take it before the server binds it.
/// Ports handed out by this process are not handed out again.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 600) as u16 * 20,
        std::sync::atomic::Ordering::SeqCst,
        std::sync::atomic::Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(port < 32_768, "ran out of test ports");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A port nothing listens on, kept that way while the socket lives: it is bound but not
/// listening, so connections are refused and no other test can take the port meanwhile.
pub fn dead_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

pub fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path of the marker requests `Echo::settled_request_count` sends; never recorded.
const SYNC_PATH: &str = "/__test-sync";

/// A `ferry echo` backend; `requests` collects the JSON lines it logs (one per request).
pub struct Echo {
    pub addr: SocketAddr,
    pub name: String,
    pub requests: Arc<Mutex<Vec<serde_json::Value>>>,
    /// The highest sync marker read back from the echo's log.
    synced: Arc<AtomicU64>,
    markers_sent: AtomicU64,
    _proc: Proc,
}

impl Echo {
    pub fn start(name: &str) -> Echo {
        Echo::start_with(name, &[])
    }

    pub fn start_with(name: &str, extra: &[&str]) -> Echo {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Echo::start_at(addr, name, extra)
    }

    /// An echo on a fixed address (the examples name their Pod IPs).
    pub fn start_at(addr: SocketAddr, name: &str, extra: &[&str]) -> Echo {
        let mut child = ferry()
            .args([
                "echo",
                "--listen",
                &addr.to_string(),
                "--name",
                name,
                "--log-requests",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ferry echo");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let synced = Arc::new(AtomicU64::new(0));
        let (sink, synced_sink) = (requests.clone(), synced.clone());
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["path"] == SYNC_PATH {
                    let marker = v["query"].as_str().and_then(|q| q.parse().ok());
                    synced_sink.fetch_max(marker.unwrap_or(0), Ordering::SeqCst);
                } else {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        wait_for_port(addr);
        Echo {
            addr,
            name: name.to_string(),
            requests,
            synced,
            markers_sent: AtomicU64::new(0),
            _proc: Proc(child),
        }
    }

    /// Requests read from the echo's log so far; may trail the answers a client has seen by
    /// a request or two (a reader thread collects the log). See `settled_request_count`.
    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Every request the echo answered before this call: the echo logs a request before it
    /// answers, so once a marker request sent now has been read back from the log, so has
    /// every request answered earlier. For exact before/after comparisons.
    pub fn settled_request_count(&self) -> usize {
        let marker = self.markers_sent.fetch_add(1, Ordering::SeqCst) + 1;
        let mut tcp = std::net::TcpStream::connect(self.addr).expect("echo accepts");
        write!(
            tcp,
            "GET {SYNC_PATH}?{marker} HTTP/1.1\r\nhost: sync\r\nx-echo-delay-ms: 0\r\nconnection: close\r\n\r\n"
        )
        .expect("marker sent");
        tcp.read_to_end(&mut Vec::new()).expect("echo answers");
        let start = Instant::now();
        while self.synced.load(Ordering::SeqCst) < marker {
            assert!(
                start.elapsed() < DEADLINE,
                "echo {} never logged marker {marker}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        self.request_count()
    }
}

pub fn wait_for_port(addr: SocketAddr) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < DEADLINE, "nothing listening on {addr}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A directory of manifests; writes are atomic (temp file + rename) like a config push.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new() -> Self {
        ConfigDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.dir.path().join(name)).unwrap();
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).unwrap();
    }
}

/// A `ferry gateway --config DIR` process with its admin port.
pub struct Gateway {
    pub admin: SocketAddr,
    pub stderr_path: PathBuf,
    /// The access log (stdout).
    pub stdout_path: PathBuf,
    _logs: tempfile::TempDir,
    _proc: Proc,
    /// A gateway in controller mode keeps its token and root files.
    _credentials: Option<apiserver::ProxyCredentials>,
}

impl Gateway {
    /// `ferry gateway --controller ADDR` with `credentials` (token, roots) and `extra` args.
    pub fn following(
        controller: SocketAddr,
        credentials: apiserver::ProxyCredentials,
        extra: &[&str],
    ) -> Gateway {
        let mut args = vec!["--controller".to_string(), controller.to_string()];
        args.extend(credentials.args());
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut gateway = Gateway::spawn_with(&args);
        gateway._credentials = Some(credentials);
        gateway
    }

    /// Starts the gateway and waits until it reports ready.
    pub async fn start(config: &Path) -> Gateway {
        let gateway = Gateway::spawn(config, &[]);
        gateway.wait_ready().await;
        gateway
    }

    pub fn spawn(config: &Path, extra: &[&str]) -> Gateway {
        let mut args = vec!["--config".to_string(), config.display().to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        Gateway::spawn_with(&args)
    }

    /// [`Gateway::spawn`] with environment variables set for the process.
    pub fn spawn_env(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut args = vec!["--config".to_string(), config.display().to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        Gateway::spawn_full(&args, env)
    }

    /// `ferry gateway ARGS` with an admin port, bound to 127.0.0.1.
    pub fn spawn_with(args: &[String]) -> Gateway {
        Gateway::spawn_full(args, &[])
    }

    fn spawn_full(args: &[String], env: &[(&str, &str)]) -> Gateway {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let stderr_path = logs.path().join("gateway.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let stdout_path = logs.path().join("access.log");
        let stdout = std::fs::File::create(&stdout_path).unwrap();
        // The tests read the full cause of the proxy's replies (a gateway's default tells
        // clients the code alone) unless a test says otherwise.
        let detail_given = args.iter().any(|a| a.starts_with("--cause-detail"));
        let full_cause = (!detail_given).then_some(["--cause-detail", "full"]);
        let child = ferry()
            .arg("gateway")
            .args(["--admin", &admin.to_string(), "--bind-address", "127.0.0.1"])
            .args(full_cause.iter().flatten())
            .args(args)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn ferry gateway");
        Gateway {
            admin,
            stderr_path,
            stdout_path,
            _logs: logs,
            _proc: Proc(child),
            _credentials: None,
        }
    }

    pub async fn wait_ready(&self) {
        let url = format!("http://{}/ready", self.admin);
        eventually(|| async { get_status(&url).await == Some(200) }).await;
    }

    pub async fn admin_get(&self, path: &str) -> String {
        let response = Http::new(Proto::H1)
            .get(&format!("http://{}{path}", self.admin), None, &[])
            .await;
        response.expect("admin answered").text
    }

    pub async fn config_dump(&self) -> serde_json::Value {
        serde_json::from_str(&self.admin_get("/config_dump").await).unwrap()
    }

    pub async fn version(&self) -> u64 {
        self.config_dump().await["version"].as_u64().unwrap_or(0)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The process is still running.
    pub fn alive(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self._proc.0.id())).exists()
    }

    /// Resident memory of the gateway process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self._proc.0.id()))
            .expect("gateway process status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// The value of one metric series from /metrics (`name{labels}` as rendered), 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        self.admin_get("/metrics")
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Access-log lines written so far.
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(&self.stdout_path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A `ferry controller` process watching a test API server.
pub struct Controller {
    /// The proxies' port (TLS, token-authenticated).
    pub addr: SocketAddr,
    /// The monitoring port (/debug/proxies, /metrics, /ready).
    pub monitoring: SocketAddr,
    /// The dashboard's port (UI and /api/).
    pub dashboard: SocketAddr,
    pub log_path: PathBuf,
    _logs: tempfile::TempDir,
    _proc: Proc,
}

impl Controller {
    /// Starts the controller on `addr` and waits until it has listed every kind.
    pub async fn start(kubeconfig: &Path, addr: SocketAddr) -> Controller {
        Controller::start_named(kubeconfig, addr, "ferry-controller-0").await
    }

    /// Like [`Controller::start`] with a replica identity for leader election.
    pub async fn start_named(kubeconfig: &Path, addr: SocketAddr, identity: &str) -> Controller {
        Controller::start_with(kubeconfig, addr, &["--identity", identity]).await
    }

    /// `ferry controller --kubeconfig K --listen ADDR EXTRA...`, waiting until it is ready.
    pub async fn start_with(kubeconfig: &Path, addr: SocketAddr, extra: &[&str]) -> Controller {
        let logs = tempfile::tempdir().unwrap();
        let log_path = logs.path().join("controller.log");
        let monitoring: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dashboard: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = ferry()
            .arg("controller")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--listen", &addr.to_string()])
            .args(["--monitoring", &monitoring.to_string()])
            .args(["--dashboard", &dashboard.to_string()])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("spawn ferry controller");
        let controller = Controller {
            addr,
            monitoring,
            dashboard,
            log_path,
            _logs: logs,
            _proc: Proc(child),
        };
        let url = format!("http://{monitoring}/ready");
        eventually_within("controller ready", Duration::from_secs(30), || async {
            get_status(&url).await == Some(200)
        })
        .await;
        controller
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A dashboard API path (`/api/...`) as JSON (null when it does not answer 200).
    pub async fn dashboard_api(&self, path: &str) -> serde_json::Value {
        let url = format!("http://{}{path}", self.dashboard);
        match Http::new(Proto::H1).get(&url, None, &[]).await {
            Some(reply) if reply.status == 200 => serde_json::from_str(&reply.text).unwrap(),
            _ => serde_json::Value::Null,
        }
    }

    /// `/debug/proxies` as JSON.
    pub async fn proxies(&self) -> serde_json::Value {
        let reply = Http::new(Proto::H1)
            .get(
                &format!("http://{}/debug/proxies", self.monitoring),
                None,
                &[],
            )
            .await
            .expect("controller answered");
        serde_json::from_str(&reply.text).unwrap()
    }
}

async fn get_status(url: &str) -> Option<u16> {
    Http::new(Proto::H1)
        .get(url, None, &[])
        .await
        .map(|r| r.status)
}

/// The HTTP/1 requests behind these metrics (a proxy's /metrics text) were all served by
/// Ferry's own loop: none was handed to Pingora's path, unless the suite runs with that path
/// forced (FERRY_HTTP1_FALLBACK, as CI's second phase does).
pub fn assert_served_by_http1_loop(metrics: &str) {
    let handed_over: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("ferry_http1_fallback_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    if std::env::var_os("FERRY_HTTP1_FALLBACK").is_some() {
        assert!(handed_over > 0.0, "forced fallback not counted:\n{metrics}");
    } else {
        assert_eq!(handed_over, 0.0, "requests handed to Pingora:\n{metrics}");
    }
}

/// Polls `check` until it holds or the deadline passes.
pub async fn eventually<F, Fut>(check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within("condition", DEADLINE, check).await;
}

/// Polls `check` (every 2 ms) until it holds; returns how long that took, failing the test
/// when `limit` passes first.
pub async fn eventually_within<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what} not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H1,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
}

pub const BOTH: [Proto; 2] = [Proto::H1, Proto::H2c];

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub text: String,
}

impl Reply {
    /// The echo backend's description of the request, if it answered.
    pub fn echo(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or(serde_json::Value::Null)
    }

    pub fn backend(&self) -> String {
        self.echo()["name"].as_str().unwrap_or("-").to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A real HTTP client for one protocol.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    pub proto: Proto,
}

impl Http {
    pub fn new(proto: Proto) -> Http {
        let mut builder = Client::builder(TokioExecutor::new());
        if proto == Proto::H2c {
            builder.http2_only(true);
        }
        Http {
            client: builder.build(HttpConnector::new()),
            proto,
        }
    }

    pub async fn get(
        &self,
        url: &str,
        host: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Option<Reply> {
        self.send("GET", url, host, headers, Bytes::new()).await
    }

    /// Sends one request; `host` sets the Host header (HTTP/1.1) or :authority (h2c).
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        host: Option<&str>,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Option<Reply> {
        let mut uri: http::Uri = url.parse().ok()?;
        let mut builder = http::Request::builder().method(method);
        if let Some(host) = host {
            match self.proto {
                Proto::H1 => builder = builder.header("host", host),
                Proto::H2c => {
                    let path = uri.path_and_query().map_or("/", |p| p.as_str());
                    uri = format!("http://{host}{path}").parse().ok()?;
                }
            }
        }
        let mut builder = builder.uri(uri.clone());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(body)).ok()?;
        // h2c with a foreign authority: connect to the real address anyway.
        let response = if self.proto == Proto::H2c && host.is_some() {
            self.send_h2_to(url, request).await?
        } else {
            self.client.request(request).await.ok()?
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some(Reply {
            status,
            headers,
            text: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    async fn send_h2_to(
        &self,
        url: &str,
        request: http::Request<Full<Bytes>>,
    ) -> Option<http::Response<hyper::body::Incoming>> {
        let target: http::Uri = url.parse().ok()?;
        let addr = format!("{}:{}", target.host()?, target.port_u16()?);
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .ok()?;
        tokio::spawn(conn);
        sender.send_request(request).await.ok()
    }
}

/// An example's folder (examples/NAME).
pub fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// Starts the backends listed in the example's backends.txt, as run.sh does.
pub fn start_example_backends(name: &str) -> Vec<Echo> {
    let listing = std::fs::read_to_string(example(name).join("backends.txt")).unwrap();
    listing
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut words = line.split_whitespace();
            let address = words.next().unwrap().parse().unwrap();
            let backend = words.next().unwrap();
            // {dir}: the example's folder (certificate files).
            let folder = example(name).display().to_string();
            let flags: Vec<String> = words.map(|w| w.replace("{dir}", &folder)).collect();
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            Echo::start_at(address, backend, &flags)
        })
        .collect()
}

/// The example's backends and a gateway serving the example (with `extra` arguments),
/// waiting until it is ready.
pub async fn start_example(name: &str, extra: &[&str]) -> (Vec<Echo>, Gateway) {
    let echos = start_example_backends(name);
    let gateway = Gateway::spawn(&example(name), extra);
    gateway.wait_ready().await;
    (echos, gateway)
}

/// `GET /forecast` of the weather canary example (port 18080), as its README sends it.
pub async fn weather_forecast(http: &Http, headers: &[(&str, &str)]) -> Reply {
    http.get(
        "http://127.0.0.1:18080/forecast",
        Some("weather.example.com"),
        headers,
    )
    .await
    .expect("the weather canary's gateway answered")
}

/// One HTTP/1.1 exchange over its own connection through the tls-passthrough example's
/// TCPRoute (port 15432): the bytes of the answer, which must be a 200.
pub async fn legacy_tcp_exchange() -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect("127.0.0.1:15432")
        .await
        .unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: legacy\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    answer.len()
}
