//! Istio Gateway / VirtualService / DestinationRule routing through the real binary.

mod support;

use support::manifests::{ep, istio_gateway, join, service};
use support::{free_port, ConfigDir, Echo, Gateway, Http, BOTH};

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

fn virtual_service(name: &str, created: &str, hosts: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: shop, creationTimestamp: \"{created}\"}}\n\
         spec:\n  hosts: [{hosts}]\n  gateways: [shop/gw]\n  http:\n{http}"
    )
}

const SUBSETS: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web, namespace: shop}\n\
spec:\n  host: web.shop.svc.cluster.local\n  subsets:\n    - {name: v1, labels: {version: v1}}\n    - {name: v2, labels: {version: v2}}\n";

#[tokio::test(flavor = "multi_thread")]
async fn canary_split_by_subset_with_header_override() {
    let (v1, v2) = (Echo::start("v1"), Echo::start("v2"));
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write(
        "all.yaml",
        &join(&[
            &istio_gateway("shop", "gw", port, &["weather.example.com"]),
            &service(
                "shop",
                "web",
                80,
                &[
                    ep(&v1, &[("app", "web"), ("version", "v1")]),
                    ep(&v2, &[("app", "web"), ("version", "v2")]),
                ],
            ),
            SUBSETS,
            &virtual_service(
                "weather",
                "2026-01-01T00:00:00Z",
                "weather.example.com",
                concat!(
            "    - match: [{headers: {x-canary: {exact: always}}}]\n",
            "      route: [{destination: {host: web, subset: v2}}]\n",
            "    - route:\n",
            "        - {destination: {host: web, subset: v1, port: {number: 80}}, weight: 90}\n",
            "        - {destination: {host: web, subset: v2, port: {number: 80}}, weight: 10}\n"),
            ),
        ]),
    );
    let _gw = Gateway::start(dir.path()).await;
    let mut v2_count = 0;
    const N: usize = 500;
    for proto in BOTH {
        let http = Http::new(proto);
        for _ in 0..N {
            let r = http
                .get(&url(port, "/forecast"), Some("weather.example.com"), &[])
                .await
                .unwrap();
            if r.backend() == "v2" {
                v2_count += 1;
            }
        }
        let pinned = http
            .get(
                &url(port, "/"),
                Some("weather.example.com"),
                &[("x-canary", "always")],
            )
            .await
            .unwrap();
        assert_eq!(pinned.backend(), "v2");
    }
    // 1000 draws at p=0.1: sd ~0.0095; +-0.04 is ~4 sd.
    let share = v2_count as f64 / (2 * N) as f64;
    assert!((share - 0.10).abs() < 0.04, "v2 share {share}");
}

/// (method, host, path, headers, expected backend)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[tokio::test(flavor = "multi_thread")]
async fn match_conditions_in_document_order() {
    let names = [
        "exact",
        "prefix",
        "regex",
        "header",
        "query",
        "method",
        "authority",
        "root",
        "later",
    ];
    let echos: Vec<Echo> = names.iter().map(|n| Echo::start(n)).collect();
    let port = free_port();
    let dir = ConfigDir::new();
    let mut docs = vec![istio_gateway("shop", "gw", port, &["*.example.com"])];
    for (name, echo) in names.iter().zip(&echos) {
        docs.push(service("shop", name, 80, &[ep(echo, &[])]));
    }
    let to = |s: &str| format!("      route: [{{destination: {{host: {s}}}}}]\n");
    let http = [
        format!("    - match: [{{uri: {{exact: /exact}}, method: {{exact: GET}}}}]\n{}", to("exact")),
        format!("    - match: [{{uri: {{prefix: /Pre}}, ignoreUriCase: true}}]\n{}", to("prefix")),
        format!("    - match: [{{uri: {{regex: \"/items/[0-9]+\"}}}}]\n{}", to("regex")),
        format!("    - match: [{{headers: {{x-team: {{prefix: blue}}}}, withoutHeaders: {{x-block: {{exact: \"yes\"}}}}}}]\n{}", to("header")),
        format!("    - match: [{{queryParams: {{page: {{regex: \"[0-9]+\"}}}}}}]\n{}", to("query")),
        format!("    - match: [{{method: {{exact: DELETE}}}}]\n{}", to("method")),
        format!("    - match: [{{authority: {{prefix: api.}}}}]\n{}", to("authority")),
        format!("    - match: [{{uri: {{prefix: /}}}}]\n{}", to("root")),
    ]
    .concat();
    docs.push(virtual_service(
        "first",
        "2026-01-01T00:00:00Z",
        "\"*.example.com\"",
        &http,
    ));
    // Created later: merged after `first`, so only reachable for what `first` does not match.
    docs.push(virtual_service(
        "second",
        "2026-02-01T00:00:00Z",
        "\"*.example.com\"",
        &to("later").replace("      route", "    - route"),
    ));
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    dir.write("all.yaml", &join(&refs));
    let _gw = Gateway::start(dir.path()).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let cases: [Case; 10] = [
            ("GET", "www.example.com", "/exact", &[], "exact"),
            ("POST", "www.example.com", "/exact", &[], "root"),
            ("GET", "www.example.com", "/pREfix/x", &[], "prefix"),
            ("GET", "www.example.com", "/items/12", &[], "regex"),
            (
                "GET",
                "www.example.com",
                "/t",
                &[("x-team", "blue-7")],
                "header",
            ),
            (
                "GET",
                "www.example.com",
                "/t",
                &[("x-team", "blue-7"), ("x-block", "yes")],
                "root",
            ),
            ("GET", "www.example.com", "/t?page=3", &[], "query"),
            ("DELETE", "www.example.com", "/t", &[], "method"),
            ("GET", "api.example.com", "/t", &[], "authority"),
            ("GET", "www.example.com", "/t", &[], "root"),
        ];
        for (method, host, path, headers, want) in cases {
            let r = http
                .send(
                    method,
                    &url(port, path),
                    Some(host),
                    headers,
                    bytes::Bytes::new(),
                )
                .await
                .unwrap();
            assert_eq!(
                r.backend(),
                want,
                "{proto:?} {method} {host}{path} {headers:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrites_redirects_direct_responses_and_headers() {
    let app = Echo::start("app");
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("all.yaml", &join(&[
        &istio_gateway("shop", "gw", port, &["*"]),
        &service("shop", "app", 80, &[ep(&app, &[])]),
        &virtual_service("actions", "2026-01-01T00:00:00Z", "a.example.com", concat!(
            "    - match: [{uri: {prefix: /old}}]\n",
            "      redirect: {uri: /new, authority: new.example.com, redirectCode: 308}\n",
            "    - match: [{uri: {prefix: /api/v1}}]\n",
            "      rewrite: {uri: /v1, authority: backend.internal}\n",
            "      headers:\n",
            "        request: {set: {x-api: v1}, add: {x-trace: \"on\"}, remove: [cookie]}\n",
            "        response: {set: {cache-control: no-store}, remove: [content-type]}\n",
            "      route: [{destination: {host: app}, headers: {request: {set: {x-dest: app}}}}]\n",
            "    - match: [{uri: {regex: \"/users/[0-9]+/profile\"}}]\n",
            "      rewrite: {uriRegexRewrite: {match: \"^/users/([0-9]+)/profile\", rewrite: \"/profile/\\\\1\"}}\n",
            "      route: [{destination: {host: app}}]\n",
            "    - match: [{uri: {exact: /health}}]\n",
            "      directResponse: {status: 200, body: {string: \"healthy\"}}\n",
            "    - match: [{uri: {prefix: /broken}}]\n",
            "      route: [{destination: {host: app, subset: missing}}]\n")),
    ]));
    let _gw = Gateway::start(dir.path()).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let host = Some("a.example.com:8080");
        let r = http
            .get(&url(port, "/old/page?x=1"), host, &[])
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.header("location")),
            (308, Some("http://new.example.com:8080/new?x=1")),
            "{proto:?}"
        );
        let r = http
            .get(
                &url(port, "/api/v1/items"),
                host,
                &[("cookie", "secret"), ("x-trace", "client")],
            )
            .await
            .unwrap();
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("content-type"), None);
        let e = r.echo();
        assert_eq!(
            (e["path"].as_str(), e["host"].as_str()),
            (Some("/v1/items"), Some("backend.internal")),
            "{proto:?}"
        );
        assert_eq!(
            (
                e["headers"]["x-api"].as_str(),
                e["headers"]["x-trace"].as_str(),
                e["headers"]["x-dest"].as_str()
            ),
            (Some("v1"), Some("client,on"), Some("app"))
        );
        assert!(e["headers"].get("cookie").is_none());
        let e = http
            .get(&url(port, "/users/42/profile"), host, &[])
            .await
            .unwrap()
            .echo();
        assert_eq!(e["path"], "/profile/42");
        let r = http.get(&url(port, "/health"), host, &[]).await.unwrap();
        assert_eq!((r.status, r.text.as_str()), (200, "healthy"));
        let r = http.get(&url(port, "/broken"), host, &[]).await.unwrap();
        assert_eq!(r.status, 503);
        assert!(r
            .header("x-ferry-cause")
            .unwrap()
            .contains("VirtualService/shop/actions"));
    }
}
