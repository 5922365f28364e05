//! A kubectl/helm client bound to one kubeconfig: what the tests do to a Kubernetes API, the
//! same for the bare API server (apiserver.rs) and the single-node cluster (cluster.rs), which
//! both deref to it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::apiserver::{script_output, tools_dir};

pub struct Kube {
    pub kubeconfig: PathBuf,
}

/// The upstream Gateway API CRDs (standard channel) of the release tests/conformance/go.mod
/// pins, read from that Go module's download (tests/conformance/build.sh --crds): users apply
/// these, and nothing of them is committed here.
pub fn gateway_api_crds() -> String {
    static CRDS: OnceLock<String> = OnceLock::new();
    CRDS.get_or_init(|| {
        let dir = script_output("tests/conformance/build.sh", &["--crds", "standard"]);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| std::fs::read_to_string(path).unwrap())
            .collect::<Vec<_>>()
            .join("\n---\n")
    })
    .clone()
}

impl Kube {
    /// The CRDs a user installs before Ferry: the upstream Gateway API release's and Ferry's
    /// Istio kinds (`ferry crds`), established.
    pub fn install_crds(&self) {
        self.apply(&gateway_api_crds());
        let istio = super::ferry().arg("crds").output().unwrap();
        assert!(istio.status.success(), "ferry crds failed");
        self.apply(&String::from_utf8(istio.stdout).unwrap());
        self.wait_crds_established();
    }

    /// `kubectl wait` fails outright ("conditions accessor error") on a CRD the API server
    /// has not yet given any condition, so it is retried until every CRD is Established.
    pub fn wait_crds_established(&self) {
        let started = Instant::now();
        let args = [
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=30s",
        ];
        loop {
            match self.kubectl_output(&args) {
                Ok(_) => return,
                Err(e) if started.elapsed() < Duration::from_secs(60) => {
                    eprintln!("CRDs not established yet ({}); retrying", e.trim());
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("CRDs not established within 60 s: {e}"),
            }
        }
    }

    /// Waits (up to 20 s) until `kubectl get` shows `want` at `jsonpath` of the object.
    pub async fn eventually_get(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        jsonpath: &str,
        want: &str,
    ) {
        super::eventually_within(
            &format!("{resource} {namespace}/{name} {jsonpath} == {want}"),
            Duration::from_secs(20),
            || async { self.get(resource, namespace, name, jsonpath) == want },
        )
        .await;
    }

    /// Runs helm against this server; Err carries stderr.
    pub fn helm_output(&self, args: &[&str]) -> Result<String, String> {
        self.tool_output("helm", args)
    }

    /// Runs kubectl against this server; Err carries stderr.
    pub fn kubectl_output(&self, args: &[&str]) -> Result<String, String> {
        self.tool_output("kubectl", args)
    }

    fn tool_output(&self, tool: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(tools_dir().join(tool))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs kubectl and panics with its error output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_output(args)
            .unwrap_or_else(|e| panic!("kubectl {}: {e}", args.join(" ")))
    }

    /// `kubectl apply -f -` with `yaml` on stdin (server-side apply, as a user would).
    pub fn apply(&self, yaml: &str) {
        let mut child = Command::new(tools_dir().join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A field of an object read through the API (`jsonpath` without braces).
    pub fn get(&self, resource: &str, namespace: &str, name: &str, jsonpath: &str) -> String {
        self.kubectl_output(&[
            "get",
            resource,
            "-n",
            namespace,
            name,
            "-o",
            &format!("jsonpath={{{jsonpath}}}"),
        ])
        .unwrap_or_default()
    }
}
