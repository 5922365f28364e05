//! Gateway API routing through the real `ferry` binary, over HTTP/1.1 and h2c.

mod support;

use support::manifests::{ep, gateway, join, service, service_with};
use support::{free_port, ConfigDir, Echo, Gateway, Http, BOTH};

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

async fn backend_for(
    http: &Http,
    port: u16,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let reply = http
        .get(&url(port, path), Some(host), headers)
        .await
        .expect("gateway answered");
    if reply.status == 200 {
        reply.backend()
    } else {
        format!("status {}", reply.status)
    }
}

fn route(name: &str, parent: &str, hostnames: &[&str], rules: &str) -> String {
    let hostnames: Vec<String> = hostnames.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  parentRefs: [{parent}]\n  hostnames: [{}]\n  rules:\n{rules}",
        hostnames.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hostnames_paths_and_precedence() {
    let (exact, prefix, regex, root, wild, specific) = (
        Echo::start("exact"),
        Echo::start("prefix"),
        Echo::start("regex"),
        Echo::start("root"),
        Echo::start("wild"),
        Echo::start("specific"),
    );
    let (p1, p2) = (free_port(), free_port());
    let dir = ConfigDir::new();
    let svc = |name: &str, e: &Echo| service("default", name, 80, &[ep(e, &[])]);
    dir.write(
        "all.yaml",
        &join(&[
            &gateway("default", "gw", &[("any", p1, None), ("wild", p2, Some("*.example.com"))]),
            &svc("exact", &exact),
            &svc("prefix", &prefix),
            &svc("regex", &regex),
            &svc("root", &root),
            &svc("wild", &wild),
            &svc("specific", &specific),
            &route("paths", "{name: gw, sectionName: any}", &["paths.example.com"], concat!(
                "    - {matches: [{path: {type: PathPrefix, value: /}}], backendRefs: [{name: root, port: 80}]}\n",
                "    - {matches: [{path: {type: Exact, value: /exact}}], backendRefs: [{name: exact, port: 80}]}\n",
                "    - {matches: [{path: {type: PathPrefix, value: /api}}], backendRefs: [{name: prefix, port: 80}]}\n",
                "    - {matches: [{path: {type: RegularExpression, value: \"/items/[0-9]+\"}}], backendRefs: [{name: regex, port: 80}]}\n")),
            &route("wild", "{name: gw, sectionName: wild}", &[], "    - {backendRefs: [{name: wild, port: 80}]}\n"),
            &route("specific", "{name: gw, sectionName: wild}", &["shop.example.com"], "    - {backendRefs: [{name: specific, port: 80}]}\n"),
        ]),
    );
    let _gw = Gateway::start(dir.path()).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let cases = [
            (p1, "paths.example.com", "/exact", "exact"),
            (p1, "paths.example.com", "/exact/more", "root"),
            (p1, "paths.example.com", "/api", "prefix"),
            (p1, "paths.example.com", "/api/users", "prefix"),
            (p1, "paths.example.com", "/apix", "root"),
            (p1, "paths.example.com", "/items/42", "regex"),
            (p1, "paths.example.com", "/items/x", "root"),
            (p1, "PATHS.Example.COM:9999", "/exact", "exact"),
            (p1, "other.example.org", "/", "status 404"),
            (p2, "a.example.com", "/", "wild"),
            (p2, "deep.a.example.com", "/x", "wild"),
            (p2, "shop.example.com", "/", "specific"),
            (p2, "example.com", "/", "status 404"),
        ];
        for (port, host, path, want) in cases {
            assert_eq!(
                backend_for(&http, port, host, path, &[]).await,
                want,
                "{proto:?} {host}{path}"
            );
        }
        let miss = http
            .get(&url(p1, "/"), Some("nobody.example"), &[])
            .await
            .unwrap();
        assert!(
            miss.header("x-ferry-cause").unwrap().starts_with("NR"),
            "{proto:?}: no-route cause header"
        );
    }
}

/// Enough routes on one host that the gateway finds them through its path index: precedence
/// and path-element boundaries must hold exactly as with a few routes.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_with_many_routes_keeps_precedence() {
    let (prefix, exact, regex, canary, root) = (
        Echo::start("prefix"),
        Echo::start("exact"),
        Echo::start("regex"),
        Echo::start("canary"),
        Echo::start("root"),
    );
    let port = free_port();
    let dir = ConfigDir::new();
    let svc = |name: &str, e: &Echo| service("default", name, 80, &[ep(e, &[])]);
    let mut rules: String = (0..40)
        .map(|i| {
            format!(
                "    - {{matches: [{{path: {{type: PathPrefix, value: /svc-{i}}}}}], \
                 filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-rule, value: svc-{i}}}]}}}}], \
                 backendRefs: [{{name: prefix, port: 80}}]}}\n"
            )
        })
        .collect();
    rules.push_str(concat!(
        "    - {matches: [{path: {type: Exact, value: /svc-7/health}}], backendRefs: [{name: exact, port: 80}]}\n",
        "    - {matches: [{path: {type: RegularExpression, value: \"/reports/[0-9]+\"}}], backendRefs: [{name: regex, port: 80}]}\n",
        "    - {matches: [{path: {type: PathPrefix, value: /svc-5}, headers: [{name: x-canary, value: \"yes\"}]}], backendRefs: [{name: canary, port: 80}]}\n",
        "    - {matches: [{path: {type: PathPrefix, value: /}}], backendRefs: [{name: root, port: 80}]}\n",
    ));
    dir.write(
        "all.yaml",
        &join(&[
            &gateway("default", "gw", &[("http", port, None)]),
            &svc("prefix", &prefix),
            &svc("exact", &exact),
            &svc("regex", &regex),
            &svc("canary", &canary),
            &svc("root", &root),
            &route("many", "{name: gw}", &["big.example.com"], &rules),
        ]),
    );
    let _gw = Gateway::start(dir.path()).await;
    let http = Http::new(support::Proto::H1);
    // (path, with the canary header, expected backend and rule)
    let cases = [
        ("/svc-1", false, "prefix svc-1"),
        ("/svc-1/", false, "prefix svc-1"),
        ("/svc-12/x", false, "prefix svc-12"),
        ("/svc-39/a/b", false, "prefix svc-39"),
        ("/svc-7/health", false, "exact"),
        ("/svc-7/health/x", false, "prefix svc-7"),
        ("/reports/2026", false, "regex"),
        ("/svc-5/a", true, "canary"),
        ("/svc-5/a", false, "prefix svc-5"),
        ("/svc-400", false, "root"),
    ];
    for (path, canary, want) in cases {
        let headers: &[(&str, &str)] = if canary { &[("x-canary", "yes")] } else { &[] };
        let reply = http
            .get(&url(port, path), Some("big.example.com"), headers)
            .await
            .expect("gateway answered");
        let echo = reply.echo();
        let got = match echo["headers"]["x-rule"].as_str() {
            Some(rule) => format!("{} {rule}", reply.backend()),
            None => reply.backend(),
        };
        assert_eq!(got, want, "{path} canary: {canary}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn header_query_and_method_matches() {
    let names = ["env", "user", "debug", "post", "root"];
    let echos: Vec<Echo> = names.iter().map(|n| Echo::start(n)).collect();
    let port = free_port();
    let dir = ConfigDir::new();
    let mut docs = vec![gateway("default", "gw", &[("http", port, None)])];
    for (name, echo) in names.iter().zip(&echos) {
        docs.push(service("default", name, 80, &[ep(echo, &[])]));
    }
    docs.push(route("matches", "{name: gw}", &["m.example.com"], concat!(
        "    - {backendRefs: [{name: root, port: 80}]}\n",
        "    - {matches: [{headers: [{name: X-Env, value: canary}]}], backendRefs: [{name: env, port: 80}]}\n",
        "    - {matches: [{headers: [{name: x-user, type: RegularExpression, value: \"adm.*\"}]}], backendRefs: [{name: user, port: 80}]}\n",
        "    - {matches: [{queryParams: [{name: debug, value: \"1\"}]}], backendRefs: [{name: debug, port: 80}]}\n",
        "    - {matches: [{method: POST}], backendRefs: [{name: post, port: 80}]}\n")));
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    dir.write("all.yaml", &join(&refs));
    let _gw = Gateway::start(dir.path()).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let host = Some("m.example.com");
        let b = |r: Option<support::Reply>| r.expect("answer").backend();
        assert_eq!(
            b(http
                .get(&url(port, "/"), host, &[("x-env", "canary")])
                .await),
            "env"
        );
        assert_eq!(
            b(http.get(&url(port, "/"), host, &[("x-env", "prod")]).await),
            "root"
        );
        assert_eq!(
            b(http
                .get(&url(port, "/"), host, &[("x-user", "admin")])
                .await),
            "user"
        );
        assert_eq!(
            b(http
                .get(&url(port, "/"), host, &[("x-user", "xadmin")])
                .await),
            "root"
        );
        assert_eq!(
            b(http.get(&url(port, "/q?debug=1"), host, &[]).await),
            "debug"
        );
        assert_eq!(
            b(http.get(&url(port, "/q?debug=10"), host, &[]).await),
            "root"
        );
        assert_eq!(
            b(http
                .send("POST", &url(port, "/"), host, &[], "x".into())
                .await),
            "post"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_backends_and_zero_weights() {
    let (a, b, never) = (Echo::start("a"), Echo::start("b"), Echo::start("never"));
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("all.yaml", &join(&[
        &gateway("default", "gw", &[("http", port, None)]),
        &service("default", "a", 80, &[ep(&a, &[])]),
        &service("default", "b", 80, &[ep(&b, &[])]),
        &service("default", "never", 80, &[ep(&never, &[])]),
        &route("split", "{name: gw}", &[], concat!(
            "    - matches: [{path: {type: PathPrefix, value: /split}}]\n",
            "      backendRefs: [{name: a, port: 80, weight: 3}, {name: b, port: 80, weight: 1}, {name: never, port: 80, weight: 0}]\n",
            "    - {matches: [{path: {type: PathPrefix, value: /zero}}], backendRefs: [{name: a, port: 80, weight: 0}]}\n")),
    ]));
    let _gw = Gateway::start(dir.path()).await;
    let mut count_a = 0;
    const PER_PROTO: usize = 300;
    for proto in BOTH {
        let http = Http::new(proto);
        for _ in 0..PER_PROTO {
            match backend_for(&http, port, "w.example", "/split", &[])
                .await
                .as_str()
            {
                "a" => count_a += 1,
                "b" => {}
                other => panic!("unexpected backend {other}"),
            }
        }
        assert_eq!(
            backend_for(&http, port, "w.example", "/zero", &[]).await,
            "status 500"
        );
    }
    // 600 draws at p=0.75: sd ~0.018; +-0.07 is ~4 sd.
    let share = count_a as f64 / (2 * PER_PROTO) as f64;
    assert!((share - 0.75).abs() < 0.07, "share of a = {share}");
    assert_eq!(
        never.settled_request_count(),
        0,
        "a weight-0 backend got traffic"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_headers_redirects_rewrites_and_mirror() {
    let (app, shadow) = (Echo::start("app"), Echo::start("shadow"));
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("all.yaml", &join(&[
        &gateway("default", "gw", &[("http", port, None)]),
        &service("default", "app", 80, &[ep(&app, &[])]),
        &service("default", "shadow", 80, &[ep(&shadow, &[])]),
        &route("filters", "{name: gw}", &["f.example.com"], concat!(
            "    - matches: [{path: {type: PathPrefix, value: /headers}}]\n",
            "      filters:\n",
            "        - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Set, value: s}], add: [{name: X-Add, value: a}], remove: [X-Remove]}}\n",
            "        - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: X-Resp, value: r}], remove: [Content-Type]}}\n",
            "      backendRefs: [{name: app, port: 80, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Backend, value: app}]}}]}]\n",
            "    - {matches: [{path: {type: PathPrefix, value: /secure}}], filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]}\n",
            "    - {matches: [{path: {type: PathPrefix, value: /moved}}], filters: [{type: RequestRedirect, requestRedirect: {hostname: new.example.com, port: 8443, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]}\n",
            "    - {matches: [{path: {type: PathPrefix, value: /v1}}], filters: [{type: URLRewrite, urlRewrite: {hostname: internal.local, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}], backendRefs: [{name: app, port: 80}]}\n",
            "    - {matches: [{path: {type: PathPrefix, value: /full}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /replaced}}}], backendRefs: [{name: app, port: 80}]}\n",
            "    - {matches: [{path: {type: PathPrefix, value: /mirror}}], filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}}}], backendRefs: [{name: app, port: 80}]}\n")),
    ]));
    let _gw = Gateway::start(dir.path()).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let host = Some("f.example.com");
        let r = http
            .get(
                &url(port, "/headers"),
                host,
                &[("x-remove", "gone"), ("x-add", "first")],
            )
            .await
            .unwrap();
        let seen = &r.echo()["headers"];
        assert_eq!(seen["x-set"], "s", "{proto:?}");
        assert_eq!(seen["x-add"], "first,a", "{proto:?}");
        assert!(seen.get("x-remove").is_none(), "{proto:?}");
        assert_eq!(seen["x-backend"], "app", "{proto:?}");
        assert_eq!(r.header("x-resp"), Some("r"));
        assert_eq!(r.header("content-type"), None);

        let r = http
            .get(&url(port, "/secure/x?q=1"), host, &[])
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.header("location")),
            (301, Some("https://f.example.com/secure/x?q=1"))
        );
        let r = http.get(&url(port, "/moved/y"), host, &[]).await.unwrap();
        assert_eq!(
            (r.status, r.header("location")),
            (302, Some("http://new.example.com:8443/new/y"))
        );

        let r = http
            .get(&url(port, "/v1/users?id=7"), host, &[])
            .await
            .unwrap()
            .echo();
        assert_eq!(
            (r["path"].as_str(), r["query"].as_str(), r["host"].as_str()),
            (Some("/v2/users"), Some("id=7"), Some("internal.local"))
        );
        let r = http
            .get(&url(port, "/full/a/b"), host, &[])
            .await
            .unwrap()
            .echo();
        assert_eq!(r["path"], "/replaced");

        let before = shadow.request_count();
        let r = http.get(&url(port, "/mirror/m"), host, &[]).await.unwrap();
        assert_eq!(r.backend(), "app");
        support::eventually(|| async { shadow.request_count() > before }).await;
        let mirrored = shadow.requests.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            (mirrored["path"].as_str(), mirrored["host"].as_str()),
            (Some("/mirror/m"), Some("f.example.com-shadow"))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unresolved_and_empty_backends() {
    let (shared, app) = (Echo::start("shared"), Echo::start("app"));
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("all.yaml", &join(&[
        &gateway("default", "gw", &[("http", port, None)]),
        &service("default", "app", 80, &[ep(&app, &[])]),
        &service("other", "shared", 80, &[ep(&shared, &[])]),
        &service("other", "private", 80, &[ep(&shared, &[])]),
        &service("default", "empty", 80, &[]),
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: other}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]\n  to: [{group: \"\", kind: Service, name: shared}]\n",
        &route("refs", "{name: gw}", &[], concat!(
            "    - {matches: [{path: {type: PathPrefix, value: /missing}}], backendRefs: [{name: ghost, port: 80}]}\n",
            "    - {matches: [{path: {type: PathPrefix, value: /granted}}], backendRefs: [{name: shared, namespace: other, port: 80}]}\n",
            "    - {matches: [{path: {type: PathPrefix, value: /denied}}], backendRefs: [{name: private, namespace: other, port: 80}]}\n",
            "    - {matches: [{path: {type: PathPrefix, value: /empty}}], backendRefs: [{name: empty, port: 80}]}\n",
            "    - {matches: [{path: {type: PathPrefix, value: /half}}], backendRefs: [{name: ghost, port: 80}, {name: app, port: 80}]}\n")),
    ]));
    let gw = Gateway::start(dir.path()).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let get = |path: &'static str| {
            let http = http.clone();
            async move {
                http.get(&url(port, path), Some("r.example"), &[])
                    .await
                    .unwrap()
            }
        };
        let r = get("/missing").await;
        assert_eq!(r.status, 500);
        assert!(
            r.header("x-ferry-cause")
                .unwrap()
                .contains("HTTPRoute/default/refs"),
            "cause names the route"
        );
        assert_eq!(get("/granted").await.backend(), "shared");
        assert_eq!(get("/denied").await.status, 500);
        let r = get("/empty").await;
        assert_eq!(r.status, 503);
        assert!(r.header("x-ferry-cause").unwrap().starts_with("UH"));
        // Half the weight points at a missing Service: about half the requests get 500.
        let mut failures = 0;
        for _ in 0..100 {
            if get("/half").await.status == 500 {
                failures += 1;
            }
        }
        assert!(
            (25..=75).contains(&failures),
            "{proto:?}: {failures} of 100 failed"
        );
    }
    let dump = gw.config_dump().await;
    let reports = dump["reports"].as_array().unwrap();
    let reason = |r: &str| reports.iter().any(|x| x["reason"] == r);
    assert!(
        reason("BackendNotFound") && !reason("RefNotPermitted") || reason("RefNotPermitted"),
        "reports: {reports:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_protocols_and_forwarded_headers() {
    let (h1, h2) = (Echo::start("h1"), Echo::start("h2"));
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write("all.yaml", &join(&[
        &gateway("default", "gw", &[("http", port, None)]),
        &service("default", "h1", 80, &[ep(&h1, &[])]),
        &service_with("default", "h2", 80, Some("kubernetes.io/h2c"), &[ep(&h2, &[])]),
        &route("protos", "{name: gw}", &[], concat!(
            "    - {matches: [{path: {type: PathPrefix, value: /h1}}], backendRefs: [{name: h1, port: 80}]}\n",
            "    - {matches: [{path: {type: PathPrefix, value: /h2}}], backendRefs: [{name: h2, port: 80}]}\n")),
    ]));
    let _gw = Gateway::start(dir.path()).await;
    for proto in BOTH {
        let http = Http::new(proto);
        let r = http
            .get(
                &url(port, "/h1"),
                Some("p.example:8080"),
                &[("x-forwarded-for", "10.9.9.9")],
            )
            .await
            .unwrap()
            .echo();
        assert_eq!(r["protocol"], "HTTP/1.1", "{proto:?}");
        assert_eq!(r["headers"]["x-forwarded-for"], "10.9.9.9, 127.0.0.1");
        assert_eq!(r["headers"]["x-forwarded-proto"], "http");
        assert_eq!(
            r["host"], "p.example:8080",
            "{proto:?}: Host is forwarded unmodified"
        );
        let r = http
            .get(&url(port, "/h2"), Some("p.example"), &[])
            .await
            .unwrap()
            .echo();
        assert_eq!(r["protocol"], "HTTP/2.0", "{proto:?}");
        assert_eq!(r["host"], "p.example");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_endpoint_gets_503_naming_cluster_and_endpoint() {
    let port = free_port();
    let (_reserved, dead) = support::dead_port(); // nothing listens here
    let dir = ConfigDir::new();
    let slice = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: dead, namespace: default}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: dead-1, namespace: default, labels: {{kubernetes.io/service-name: dead}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {dead}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n"
    );
    dir.write(
        "all.yaml",
        &join(&[
            &gateway("default", "gw", &[("http", port, None)]),
            &slice,
            &route(
                "dead",
                "{name: gw}",
                &[],
                "    - {backendRefs: [{name: dead, port: 80}]}\n",
            ),
        ]),
    );
    let _gw = Gateway::start(dir.path()).await;
    for proto in BOTH {
        let r = Http::new(proto)
            .get(&url(port, "/"), Some("d.example"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 503, "{proto:?}");
        let cause = r.header("x-ferry-cause").unwrap();
        assert!(
            cause.starts_with("UF Service/default/dead")
                && cause.contains(&format!("127.0.0.1:{dead}")),
            "{cause}"
        );
    }
}
