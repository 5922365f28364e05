//! A real Kubernetes API server for tests: etcd + kube-apiserver built from source by
//! `tests/k8s-tools/build.sh` (cached per machine), started on loopback with certificates
//! generated here and a bearer token for an admin user, torn down on drop. `kubectl` from
//! the same build applies manifests. See tests/README.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::kube::Kube;
use super::{free_port, Proc};

const TOKEN: &str = "ferry-test-admin-token";
/// kube-apiserver takes several seconds to start its post-start hooks on 2 cores.
const START_DEADLINE: Duration = Duration::from_secs(90);

/// Directory with kube-apiserver, etcd and kubectl (built on first use, then cached).
pub fn tools_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| script_output("tests/k8s-tools/build.sh", &[]))
        .clone()
}

/// Runs one of the repository's build scripts (its progress on stderr) and returns the
/// directory it prints.
pub fn script_output(script: &str, args: &[&str]) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(out.status.success(), "{script} {} failed", args.join(" "));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The address test backends listen on when their EndpointSlices go through a real API
/// server, which refuses loopback (127.0.0.0/8) endpoint addresses. It is added to `lo` as a
/// /32 once per machine (root), so it is local but outside the loopback range.
pub fn pod_ip() -> std::net::IpAddr {
    const POD_IP: &str = "10.250.0.1";
    static ADDED: OnceLock<()> = OnceLock::new();
    ADDED.get_or_init(|| {
        let out = Command::new("ip")
            .args(["addr", "replace", &format!("{POD_IP}/32"), "dev", "lo"])
            .output()
            .expect("run `ip` (iproute2)");
        assert!(
            out.status.success(),
            "cannot add {POD_IP} to lo (tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    POD_IP.parse().unwrap()
}

/// A `ferry echo` backend on [`pod_ip`].
pub fn pod_echo(name: &str) -> super::Echo {
    let addr = std::net::SocketAddr::new(pod_ip(), free_port());
    super::Echo::start_at(addr, name, &[])
}

/// A running etcd + kube-apiserver pair and a kubeconfig for its admin.
pub struct ApiServer {
    pub url: String,
    kube: Kube,
    dir: tempfile::TempDir,
    // Dropped in field order: the API server goes before its etcd.
    apiserver: Proc,
    _etcd: Proc,
}

impl ApiServer {
    pub fn start() -> ApiServer {
        let tools = tools_dir();
        let dir = tempfile::tempdir().unwrap();
        let certs = Certs::write(dir.path());
        let etcd = start_etcd(&tools, dir.path());
        let port = free_port();
        let apiserver = start_apiserver(&tools, dir.path(), &certs, &etcd.1, port);
        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&url, &certs.ca_pem)).unwrap();
        let mut server = ApiServer {
            url,
            kube: Kube { kubeconfig },
            dir,
            apiserver,
            _etcd: etcd.0,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.apiserver.0.try_wait() {
                panic!("kube-apiserver exited ({status}): {}", self.log_tail());
            }
            let ready = self
                .kubectl_output(&["get", "--raw", "/readyz"])
                .is_ok_and(|out| out.trim() == "ok");
            if ready {
                return;
            }
            assert!(
                started.elapsed() < START_DEADLINE,
                "kube-apiserver not ready after {START_DEADLINE:?}; log: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The API server's last log lines (its flag dump makes the head useless).
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    /// A kubeconfig for the same server that authenticates with `token` (a ServiceAccount's,
    /// from `kubectl create token`), to run a component with only its RBAC.
    pub fn kubeconfig_with_token(&self, token: &str) -> PathBuf {
        let admin = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let path = self.dir.path().join(format!("kubeconfig-{}", free_port()));
        std::fs::write(&path, admin.replace(TOKEN, token.trim())).unwrap();
        path
    }

    /// What a proxy running as `namespace/service_account` presents to the controller: a
    /// projected-style token for audience `ferry` (TokenRequest, as kubelet mints them) and
    /// the mesh roots the controller publishes in the namespace (`ferry-ca-root`). The
    /// ServiceAccount is created if missing. Waits (up to 20 s) for the ConfigMap.
    pub fn proxy_credentials(&self, namespace: &str, service_account: &str) -> ProxyCredentials {
        let _ =
            self.kubectl_output(&["create", "serviceaccount", service_account, "-n", namespace]);
        let token = self.kubectl(&[
            "create",
            "token",
            service_account,
            "-n",
            namespace,
            "--audience",
            "ferry",
            "--duration",
            "1h",
        ]);
        let started = Instant::now();
        let root = loop {
            let root = self.get(
                "configmap",
                namespace,
                "ferry-ca-root",
                r".data.root-cert\.pem",
            );
            if root.contains("BEGIN CERTIFICATE") {
                break root;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no ferry-ca-root ConfigMap in {namespace} (is the controller running?)"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        ProxyCredentials::write(token.trim(), &root)
    }
}

impl std::ops::Deref for ApiServer {
    type Target = Kube;

    fn deref(&self) -> &Kube {
        &self.kube
    }
}

/// A proxy's token and root files (what the pod would have mounted).
pub struct ProxyCredentials {
    pub token_file: PathBuf,
    pub root_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProxyCredentials {
    pub fn write(token: &str, root_pem: &str) -> ProxyCredentials {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("ferry-token");
        let root_file = dir.path().join("root-cert.pem");
        std::fs::write(&token_file, token).unwrap();
        std::fs::write(&root_file, root_pem).unwrap();
        ProxyCredentials {
            token_file,
            root_file,
            _dir: dir,
        }
    }

    /// `--controller-root F --token-file F`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--controller-root".into(),
            self.root_file.display().to_string(),
            "--token-file".into(),
            self.token_file.display().to_string(),
        ]
    }
}

struct Certs {
    ca_pem: String,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    service_account_key: PathBuf,
    service_account_public_key: PathBuf,
    tokens: PathBuf,
}

impl Certs {
    /// A CA, a serving certificate for 127.0.0.1/localhost signed by it, a service-account
    /// signing key and a static token file naming one admin (group system:masters).
    fn write(dir: &Path) -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".into(), "kubernetes.default.svc".into()])
                .unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let serving = params.signed_by(&key, &issuer).unwrap();
        let sa_key = KeyPair::generate().unwrap();
        let path = |name: &str| dir.join(name);
        std::fs::write(path("serving.crt"), serving.pem()).unwrap();
        std::fs::write(path("serving.key"), key.serialize_pem()).unwrap();
        std::fs::write(path("sa.key"), sa_key.serialize_pem()).unwrap();
        std::fs::write(path("sa.pub"), sa_key.public_key_pem()).unwrap();
        std::fs::write(
            path("tokens.csv"),
            format!("{TOKEN},admin,admin-uid,system:masters\n"),
        )
        .unwrap();
        Certs {
            ca_pem: ca.pem(),
            serving_cert: path("serving.crt"),
            serving_key: path("serving.key"),
            service_account_key: path("sa.key"),
            service_account_public_key: path("sa.pub"),
            tokens: path("tokens.csv"),
        }
    }
}

/// Starts etcd on two free loopback ports; returns the process and its client URL.
fn start_etcd(tools: &Path, dir: &Path) -> (Proc, String) {
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new(tools.join("etcd"))
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("default={peer_url}")])
        // Tests do not need durability; fsync on every write makes startup crawl.
        .arg("--unsafe-no-fsync")
        .args(["--log-level", "warn"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start etcd");
    (Proc(child), client_url)
}

fn start_apiserver(tools: &Path, dir: &Path, certs: &Certs, etcd: &str, port: u16) -> Proc {
    let log = std::fs::File::create(dir.join("apiserver.log")).unwrap();
    let child = Command::new(tools.join("kube-apiserver"))
        .args(["--etcd-servers", etcd])
        .args([
            "--bind-address",
            "127.0.0.1",
            "--advertise-address",
            "127.0.0.1",
        ])
        .arg(format!("--secure-port={port}"))
        .arg("--cert-dir")
        .arg(dir.join("apiserver-certs"))
        .arg("--tls-cert-file")
        .arg(&certs.serving_cert)
        .arg("--tls-private-key-file")
        .arg(&certs.serving_key)
        .arg("--token-auth-file")
        .arg(&certs.tokens)
        .args(["--authorization-mode", "RBAC"])
        .arg("--service-account-key-file")
        .arg(&certs.service_account_public_key)
        .arg("--service-account-signing-key-file")
        .arg(&certs.service_account_key)
        .args(["--service-account-issuer", "https://kubernetes.default.svc"])
        .args(["--service-cluster-ip-range", "10.96.0.0/16"])
        // No controller-manager runs, so nothing creates the `default` ServiceAccount that
        // this admission plugin would demand of every Pod.
        .args(["--disable-admission-plugins", "ServiceAccount"])
        .args(["--v", "1"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start kube-apiserver");
    Proc(child)
}

fn kubeconfig_yaml(url: &str, ca_pem: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\ncontexts:\n- name: test\n  context: {{cluster: test, user: admin}}\ncurrent-context: test\n"
    )
}
