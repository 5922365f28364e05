//! Pods of the netns mesh: their app, `sidecar-init` and sidecar processes, and what the
//! tests ask of them (curl from inside the pod, metrics from the sidecar's admin port).

use crate::support::netns::Pod;
use crate::support::{self, eventually_within, ConfigDir, Proc};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

pub const CLUSTER_IP: &str = "10.96.0.20";
pub const SIDECAR_UID: u32 = 1337;

pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// The app: an echo answering with its name, on `port` in the pod.
pub fn app(pod: &Pod, name: &str, port: u16) -> Proc {
    app_on(pod, name, &format!("0.0.0.0:{port}"))
}

pub fn app_on(pod: &Pod, name: &str, listen: &str) -> Proc {
    let child = pod
        .command(ferry_bin())
        .args([
            "echo",
            "--listen",
            listen,
            "--name",
            name,
            "--namespace",
            "weather",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start echo in pod");
    Proc(child)
}

/// Writes a manifest the sidecar (uid 1337) can read, in a directory it can list.
pub fn write_readable(dir: &ConfigDir, name: &str, text: &str) {
    dir.write(name, text);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join(name);
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
}

pub fn init(pod: &Pod, extra: &[&str]) {
    let mut args = vec!["sidecar-init"];
    args.extend_from_slice(extra);
    pod.run(ferry_bin(), &args).expect("sidecar-init");
}

/// `ferry sidecar` as uid 1337: admin on the pod's loopback, the status port (probes,
/// metrics; never captured) on the pod address.
pub fn sidecar(pod: &Pod, config: &std::path::Path) -> Proc {
    sidecar_with(pod, config, &[])
}

/// Its access log (off unless `extra` sets `--access-log`) goes to [`access_log_path`].
pub fn sidecar_with(pod: &Pod, config: &std::path::Path, extra: &[&str]) -> Proc {
    let log = std::fs::File::create(format!("/tmp/ferry-sidecar-{}.log", pod.name)).unwrap();
    let access_log = std::fs::File::create(access_log_path(pod)).unwrap();
    let default_log: &[&str] = if extra.contains(&"--access-log") {
        &[]
    } else {
        &["--access-log", "off"]
    };
    let child = pod
        .command_as(SIDECAR_UID, ferry_bin())
        .args([
            "sidecar",
            "--config",
            &config.display().to_string(),
            "--namespace",
            "weather",
        ])
        .args(default_log)
        .args(extra)
        .stdout(access_log)
        .stderr(log)
        .spawn()
        .expect("start sidecar");
    Proc(child)
}

pub fn access_log_path(pod: &Pod) -> String {
    format!("/tmp/ferry-sidecar-{}.access.log", pod.name)
}

/// `count` requests on one connection (curl reuses it), one JSON answer per line.
pub fn curl(pod: &Pod, url: &str, headers: &[&str], count: usize) -> Vec<serde_json::Value> {
    let mut args = vec!["-s", "--max-time", "10", "-w", "\\n"];
    for header in headers {
        args.extend_from_slice(&["-H", header]);
    }
    let urls = vec![url; count];
    args.extend(urls.iter().copied());
    let out = pod
        .run("curl", &args)
        .unwrap_or_else(|e| panic!("curl {url}: {e}"));
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not an echo answer: {l}")))
        .collect()
}

/// `curl` from the pod: the status code, a space, the body (`000` when nothing answered).
pub fn fetch_code_and_body(pod: &Pod, url: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &pod.name, "curl", "-s", "--max-time", "5"])
        .args(["-w", "%{http_code} ", "-o", "/dev/stderr", url])
        .output()
        .expect("run curl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub async fn metric(pod: &Pod, name: &str, listener: &str) -> f64 {
    let url = format!("http://{}:15020/metrics", pod.address);
    let text = reqwest_text(&url).await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(&format!("listener=\"{listener}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `istio_requests_total` with this reporter, 200s, summed over label sets.
pub async fn istio_requests(pod: &Pod, reporter: &str) -> f64 {
    let url = format!("http://{}:15020/metrics", pod.address);
    let text = reqwest_text(&url).await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| {
            l.contains(&format!("reporter=\"{reporter}\"")) && l.contains("response_code=\"200\"")
        })
        .filter(|l| reporter == "source" || l.contains("connection_security_policy=\"none\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sidecar's inbound HTTP/1 requests were served by Ferry's own loop.
pub async fn assert_served_by_http1_loop(pod: &Pod) {
    let url = format!("http://{}:15020/metrics", pod.address);
    let text = reqwest_text(&url).await.unwrap_or_default();
    support::assert_served_by_http1_loop(&text);
}

pub async fn reqwest_text(url: &str) -> Option<String> {
    let reply = support::Http::new(support::Proto::H1)
        .get(url, None, &[])
        .await?;
    Some(reply.text)
}

pub async fn ready(pod: &Pod) {
    let url = format!("http://{}:15020/healthz/ready", pod.address);
    eventually_within(
        &format!("sidecar in {} ready", pod.name),
        Duration::from_secs(20),
        || async {
            support::Http::new(support::Proto::H1)
                .get(&url, None, &[])
                .await
                .is_some_and(|r| r.status == 200)
        },
    )
    .await;
}

pub async fn metric_value(pod: &Pod, sample: &str) -> f64 {
    let url = format!("http://{}:15020/metrics", pod.address);
    let text = reqwest_text(&url).await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(sample))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}
