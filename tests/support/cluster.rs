//! A real single-node Kubernetes cluster for the end-to-end tests: tests/cluster/up.sh starts
//! it in the network namespace `ferry-node` (etcd, API server, controller-manager, scheduler,
//! containerd, kubelet, kube-proxy, CoreDNS), the `ferry` binary this test run built is
//! imported as the chart's image, and tests/cluster/down.sh removes everything on drop. One
//! cluster per machine (the kubelet's device-plugin socket path is fixed), so a test binary
//! that uses it runs its scenarios in one test. See tests/README.md.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::kube::Kube;

pub struct Cluster {
    kube: Kube,
    pub node_ip: Ipv4Addr,
    state: PathBuf,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cluster")
        .join(name)
}

fn run(what: &str, command: &mut Command) {
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what} failed ({status})");
}

impl Cluster {
    /// Starts the node (a few minutes the first time on a machine: packages, Kubernetes
    /// binaries) and imports `ferry` (this run's binary) as ghcr.io/ferry-dev/ferry.
    pub fn start() -> Cluster {
        let state = std::env::temp_dir().join(format!("ferry-cluster-{}", std::process::id()));
        run(
            "tests/cluster/up.sh",
            Command::new("bash").arg(script("up.sh")).arg(&state),
        );
        let cluster = Cluster {
            kube: Kube {
                kubeconfig: state.join("admin.kubeconfig"),
            },
            node_ip: Ipv4Addr::new(10, 91, 0, 2),
            state,
        };
        run(
            "tests/cluster/images.sh --ferry",
            Command::new("bash")
                .arg(script("images.sh"))
                .arg(&cluster.state)
                .arg("--ferry")
                .arg(env!("CARGO_BIN_EXE_ferry")),
        );
        cluster
    }

    /// Waits until every Deployment in `namespace` has all its replicas available.
    pub fn wait_deployments(&self, namespace: &str, within: Duration) {
        let out = self.kubectl_output(&[
            "wait",
            "deployment",
            "--all",
            "-n",
            namespace,
            "--for=condition=Available",
            &format!("--timeout={}s", within.as_secs()),
        ]);
        if let Err(e) = out {
            panic!(
                "deployments in {namespace} not available within {within:?}: {e}\n{}",
                self.describe(namespace)
            );
        }
    }

    /// What a person would look at when pods do not come up: pods, events, the kubelet's tail.
    pub fn describe(&self, namespace: &str) -> String {
        let pods = self
            .kubectl_output(&["get", "pods", "-A", "-o", "wide"])
            .unwrap_or_else(|e| e);
        let events = self
            .kubectl_output(&["get", "events", "-n", namespace, "--sort-by=.lastTimestamp"])
            .unwrap_or_else(|e| e);
        format!(
            "pods:\n{pods}\nevents in {namespace}:\n{events}\nkubelet log tail:\n{}",
            self.log_tail("kubelet", 30)
        )
    }

    /// The last lines of a node daemon's log (kubelet, containerd, kube-apiserver...).
    pub fn log_tail(&self, daemon: &str, lines: usize) -> String {
        let log = std::fs::read_to_string(self.state.join("logs").join(format!("{daemon}.log")))
            .unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The name of the first pod in `namespace` matching `selector`.
    pub fn pod(&self, namespace: &str, selector: &str) -> String {
        let name = self.kubectl(&[
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            selector,
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ]);
        assert!(!name.is_empty(), "no pod in {namespace} matches {selector}");
        name
    }

    /// The IP of the first pod in `namespace` matching `selector`.
    pub fn pod_ip(&self, namespace: &str, selector: &str) -> String {
        let pod = self.pod(namespace, selector);
        self.get("pod", namespace, &pod, ".status.podIP")
    }

    /// `kubectl exec` of a command in a container; its stdout and stderr together (fortio
    /// reports on stderr), panicking if it fails.
    pub fn exec(&self, namespace: &str, target: &str, container: &str, command: &[&str]) -> String {
        let out = Command::new(super::apiserver::tools_dir().join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["exec", "-n", namespace, target, "-c", container, "--"])
            .args(command)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kubectl exec {}: {text}",
            command.join(" ")
        );
        text
    }

    /// Runs a command on the node inside the network namespace of the pod with `pod_ip` (the
    /// namespaces containerd mounted for its sandboxes), e.g. to read its iptables rules.
    pub fn in_pod_network(&self, pod_ip: &str, command: &[&str]) -> String {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let state = self.state.display().to_string();
        for netns in mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(1))
            .filter(|target| target.starts_with(&state) && target.contains("netns"))
        {
            let enter = |args: &[&str]| {
                Command::new("nsenter")
                    .arg(format!("--net={netns}"))
                    .args(args)
                    .output()
                    .ok()
                    .filter(|out| out.status.success())
                    .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            };
            let addresses = enter(&["ip", "-4", "-o", "addr"]).unwrap_or_default();
            if addresses.contains(&format!(" {pod_ip}/")) {
                return enter(command).unwrap_or_else(|| {
                    panic!(
                        "{} in the network namespace of {pod_ip} failed",
                        command.join(" ")
                    )
                });
            }
        }
        panic!("no pod network namespace under {state} has {pod_ip}")
    }

    /// Polls `check` until it returns Some or `within` passes.
    pub fn eventually<T>(
        &self,
        what: &str,
        within: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(started.elapsed() < within, "{what}: not within {within:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl std::ops::Deref for Cluster {
    type Target = Kube;

    fn deref(&self) -> &Kube {
        &self.kube
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script("down.sh"))
            .arg(&self.state)
            .status();
    }
}
