//! Calls out of the mesh: ServiceEntry under REGISTRY_ONLY, and the egress gateway.

use crate::dns::{PodResolvConf, TinyDns};
use crate::identity::IdentityDir;
use crate::pods::*;
use crate::support::netns::{Network, Pod};
use crate::support::{self, eventually_within, ConfigDir, Proc};
use std::process::Stdio;
use std::time::Duration;

const SERVICE_ENTRIES: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: weather}
spec:
  egress: [{hosts: [\"./*\"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static-api, namespace: weather}
spec:
  hosts: [static-api.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  endpoints: [{address: EXTERNAL_ONE}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns-api, namespace: weather}
spec:
  hosts: [dns-api.example]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-db, namespace: weather}
spec:
  hosts: [db.example]
  addresses: [EXTERNAL_TWO/32]
  resolution: NONE
  ports: [{number: 8080, name: tcp, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tls-api, namespace: weather}
spec:
  hosts: [tls-api.example]
  resolution: NONE
  ports: [{number: 8443, name: tls, protocol: TLS}]
---
apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: weather}
spec: {clusterIP: 10.96.0.30, ports: [{name: tcp-ledger, port: 5432, targetPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: ledger-v1, namespace: weather, labels: {app: ledger, version: v1}}
spec: {containers: [{name: app, image: ferry}]}
---
apiVersion: v1
kind: Pod
metadata: {name: ledger-v2, namespace: weather, labels: {app: ledger, version: v2}}
spec: {containers: [{name: app, image: ferry}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ledger-1, namespace: weather, labels: {kubernetes.io/service-name: ledger}}
addressType: IPv4
ports: [{name: tcp-ledger, port: 8080}]
endpoints:
  - {addresses: [EXTERNAL_ONE], conditions: {ready: true}, targetRef: {kind: Pod, name: ledger-v1, namespace: weather}}
  - {addresses: [EXTERNAL_TWO], conditions: {ready: true}, targetRef: {kind: Pod, name: ledger-v2, namespace: weather}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ledger, namespace: weather}
spec:
  host: ledger
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ledger, namespace: weather}
spec:
  hosts: [ledger]
  tcp:
  - route: [{destination: {host: ledger, subset: v2}}]
";

/// Sidecars under REGISTRY_ONLY (set by the namespace's Sidecar resource) let out exactly
/// what ServiceEntries register: an HTTP host with STATIC endpoints, one the sidecar resolves
/// through DNS (following a changed answer once its TTL runs out), a TCP address block, a TLS
/// server name; anything else is refused (502 for HTTP). A VirtualService tcp route steers a
/// Service's connections.
#[tokio::test(flavor = "multi_thread")]
async fn service_entries_let_registered_hosts_out_under_registry_only() {
    let mut net = Network::new();
    let (client, one, two) = (net.pod(2), net.pod(3), net.pod(4));
    let bridge =
        std::net::Ipv4Addr::new(client.address.octets()[0], client.address.octets()[1], 0, 1);
    let dns = TinyDns::start(bridge);
    dns.set("dns-api.example", one.address);
    let _resolv = PodResolvConf::write(&client, bridge);
    let dir = ConfigDir::new();
    let manifests = SERVICE_ENTRIES
        .replace("EXTERNAL_ONE", &one.address.to_string())
        .replace("EXTERNAL_TWO", &two.address.to_string());
    write_readable(&dir, "entries.yaml", &manifests);
    let ca = support::tls::TestCa::new("external-ca");
    let leaf = ca.issue(&["tls-api.example", "other.example"]);
    dir.write("ca.pem", &ca.cert_pem);
    dir.write("tls.pem", &leaf.cert_pem);
    dir.write("tls.key", &leaf.key_pem);
    let file = |name: &str| dir.path().join(name).display().to_string();
    let tls_app = Proc(
        one.command(ferry_bin())
            .args(["echo", "--listen", "0.0.0.0:8443", "--name", "external-tls"])
            .args([
                "--tls-cert",
                &file("tls.pem"),
                "--tls-key",
                &file("tls.key"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start TLS echo"),
    );
    let _apps = [
        app(&one, "external-one", 8080),
        app(&two, "external-two", 8080),
        tls_app,
    ];
    init(&client, &[]);
    // REGISTRY_ONLY comes from the namespace's Sidecar resource (the flag says ALLOW_ANY).
    let _sidecar = sidecar_with(
        &client,
        dir.path(),
        &["--outbound-traffic-policy", "ALLOW_ANY"],
    );
    ready(&client).await;

    // STATIC: the Host header names the entry; the address dialled (pod two, port 80,
    // where nothing listens) does not matter, the entry's endpoint answers.
    let url = format!("http://{}/", two.address);
    let answers = curl(&client, &url, &["Host: static-api.example"], 3);
    assert!(
        answers.iter().all(|a| a["name"] == "external-one"),
        "{answers:?}"
    );

    // Without an entry for the host: 502, as Istio's BlackHoleCluster answers.
    let refused = fetch_code_and_body_with(&client, &url, "Host: unknown.example");
    assert!(refused.starts_with("502"), "{refused}");

    // DNS: resolved by the sidecar through the pod's resolver...
    let answers = curl(&client, &url, &["Host: dns-api.example"], 2);
    assert!(
        answers.iter().all(|a| a["name"] == "external-one"),
        "{answers:?}"
    );
    assert!(dns.queries.load(std::sync::atomic::Ordering::SeqCst) > 0);
    // ...and asked again when the answer's TTL (1 s) runs out.
    dns.set("dns-api.example", two.address);
    eventually_within(
        "the sidecar follows the changed DNS answer",
        Duration::from_secs(15),
        || async {
            let answer = curl(&client, &url, &["Host: dns-api.example"], 1);
            answer.first().is_some_and(|a| a["name"] == "external-two")
        },
    )
    .await;

    // TCP by address: the entry's block lets connections to pod two's 8080 out (to the
    // address dialled, resolution NONE); pod one's 8080 is outside every entry.
    let direct = curl(&client, &format!("http://{}:8080/", two.address), &[], 1);
    assert_eq!(direct[0]["name"], "external-two");
    let outside = client.run(
        "curl",
        &[
            "-s",
            "--max-time",
            "3",
            &format!("http://{}:8080/", one.address),
        ],
    );
    assert!(
        outside.is_err() || outside.as_ref().is_ok_and(|o| o.is_empty()),
        "{outside:?}"
    );

    // TLS by server name (resolution NONE: on to the address dialled, untouched: the
    // client checks the external server's own certificate).
    let ca_file = file("ca.pem");
    let tls = |name: &str| {
        let resolve = format!("{name}:8443:{}", one.address);
        let url = format!("https://{name}:8443/");
        let args = [
            "-s",
            "--max-time",
            "5",
            "--cacert",
            &ca_file,
            "--resolve",
            &resolve,
            &url,
        ];
        client.run("curl", &args)
    };
    let answer = tls("tls-api.example").expect("registered server name");
    assert!(answer.contains("external-tls"), "{answer}");
    let refused = tls("other.example");
    assert!(
        refused.is_err(),
        "an unregistered server name got {refused:?}"
    );

    // A VirtualService tcp route takes every connection to the Service's ClusterIP and
    // port whole (here: all to subset v2), whatever the connection carries.
    for _ in 0..4 {
        let answer = curl(&client, "http://10.96.0.30:5432/", &[], 1);
        assert_eq!(answer[0]["name"], "external-two", "{answer:?}");
    }
}

/// `curl` with one header (certificates not checked): the status code, a space, the body.
fn fetch_code_and_body_with(pod: &Pod, url: &str, header: &str) -> String {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &pod.name,
            "curl",
            "-s",
            "-k",
            "--max-time",
            "5",
        ])
        .args([
            "-H",
            header,
            "-w",
            "%{http_code} ",
            "-o",
            "/dev/stderr",
            url,
        ])
        .output()
        .expect("run curl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const EGRESS_GATEWAY: &str = "apiVersion: v1
kind: Pod
metadata: {name: egressgateway-1, namespace: istio-system, labels: {istio: egressgateway}}
spec: {serviceAccountName: ferry-egressgateway, containers: [{name: gateway, image: ferry}]}
---
apiVersion: v1
kind: Service
metadata: {name: istio-egressgateway, namespace: istio-system}
spec: {clusterIP: 10.96.0.50, ports: [{name: https, port: 8443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: egress-1, namespace: istio-system, labels: {kubernetes.io/service-name: istio-egressgateway}}
addressType: IPv4
ports: [{name: https, port: 8443}]
endpoints:
  - {addresses: [EGRESS_POD], conditions: {ready: true}, targetRef: {kind: Pod, name: egressgateway-1, namespace: istio-system}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egressgateway, namespace: weather}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL, sni: api.external.example}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-api, namespace: weather}
spec:
  hosts: [api.external.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  endpoints: [{address: EXTERNAL_POD}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: weather}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [api.external.example]
    tls: {mode: ISTIO_MUTUAL}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: external-via-egress, namespace: weather}
spec:
  hosts: [api.external.example]
  gateways: [mesh, egress]
  http:
  - match: [{gateways: [mesh], port: 80}]
    route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, port: {number: 8443}}}]
  - match: [{gateways: [egress], port: 8443}]
    route: [{destination: {host: api.external.example, port: {number: 80}}}]
";

/// Istio's egress gateway pattern, as its docs write it: the app calls an external host (a
/// ServiceEntry); a VirtualService bound to the mesh sends the sidecar's request to the egress
/// gateway (a Ferry gateway labelled `istio: egressgateway`, serving no Ingress) over the
/// mesh's mTLS (DestinationRule ISTIO_MUTUAL, Gateway server ISTIO_MUTUAL), and the
/// gateway's own route sends it to the external host. Under REGISTRY_ONLY the external host
/// is reached this way only, and the gateway's port refuses clients without a mesh identity.
#[tokio::test(flavor = "multi_thread")]
async fn calls_to_an_external_host_leave_through_the_egress_gateway_over_mtls() {
    use support::tls::TestCa;
    let mut net = Network::new();
    let (client, egress, external) = (net.pod(2), net.pod(3), net.pod(4));
    let dir = ConfigDir::new();
    let manifests = EGRESS_GATEWAY
        .replace("EGRESS_POD", &egress.address.to_string())
        .replace("EXTERNAL_POD", &external.address.to_string());
    write_readable(&dir, "egress.yaml", &manifests);
    let root = TestCa::new("mesh root");
    let lifetime = Duration::from_secs(300);
    let client_id = IdentityDir::new("spiffe://cluster.local/ns/weather/sa/client");
    let gateway_id =
        IdentityDir::new("spiffe://cluster.local/ns/istio-system/sa/ferry-egressgateway");
    client_id.issue(&root, &root.cert_pem, lifetime);
    gateway_id.issue(&root, &root.cert_pem, lifetime);

    let config = dir.path().display().to_string();
    let gateway_log = dir.path().join("egress-access.log");
    let _gateway = Proc(
        egress
            .command(ferry_bin())
            .args([
                "gateway",
                "--config",
                &config,
                "--label",
                "istio=egressgateway",
            ])
            .args(gateway_id.arg())
            .args(["--ingress-port", "0", "--access-log", "json"])
            .args(["--admin", "127.0.0.1:15000", "--status", "0.0.0.0:15020"])
            .stdout(std::fs::File::create(&gateway_log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the egress gateway"),
    );
    let _app = app(&external, "external", 8080);
    init(&client, &[]);
    let mut sidecar_args = client_id.arg().to_vec();
    sidecar_args.extend(["--outbound-traffic-policy".into(), "REGISTRY_ONLY".into()]);
    let sidecar_args: Vec<&str> = sidecar_args.iter().map(String::as_str).collect();
    let _sidecar = sidecar_with(&client, dir.path(), &sidecar_args);
    ready(&client).await;
    ready(&egress).await;

    // The app dials the external host's address; the answer comes back through the gateway:
    // the external server saw the egress gateway's address as its peer.
    let url = format!("http://{}/", external.address);
    let answers = curl(&client, &url, &["Host: api.external.example"], 3);
    assert_eq!(answers.len(), 3);
    for answer in &answers {
        assert_eq!(answer["name"], "external", "{answer}");
        let peer = answer["peer"].as_str().unwrap_or_default();
        assert!(
            peer.starts_with(&format!("{}:", egress.address)),
            "the external server was reached from {peer}, not the egress gateway"
        );
    }
    // The gateway knew its client by the mesh identity the client proved.
    let wanted = r#""downstream_peer_uri_san":"spiffe://cluster.local/ns/weather/sa/client""#;
    eventually_within(
        "egress gateway access log",
        Duration::from_secs(5),
        || async { std::fs::read_to_string(&gateway_log).is_ok_and(|log| log.contains(wanted)) },
    )
    .await;
    // Another host at the same address is not registered: refused.
    let refused = fetch_code_and_body_with(&client, &url, "Host: elsewhere.example");
    assert!(refused.starts_with("502"), "{refused}");
    // The gateway's port takes mesh mTLS only: plaintext and TLS without a client
    // certificate get no answer.
    let port = format!("{}:8443", egress.address);
    for (scheme, what) in [
        ("http", "plaintext"),
        ("https", "TLS without a mesh identity"),
    ] {
        let url = format!("{scheme}://{port}/");
        let reply = fetch_code_and_body_with(&external, &url, "Host: api.external.example");
        assert!(
            reply.starts_with("000"),
            "{what} reached the egress gateway: {reply}"
        );
    }
}
