//! The examples work as their READMEs say: same manifests, same backends, same requests.

mod support;

use std::path::Path;
use support::{Echo, Gateway, Http, BOTH};

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn weather_canary_splits_about_ninety_ten() {
    let _v1 = Echo::start_at("127.0.0.11:9080".parse().unwrap(), "weather-v1", &[]);
    let _v2 = Echo::start_at("127.0.0.12:9080".parse().unwrap(), "weather-v2", &[]);
    let gw = Gateway::spawn(&example("weather-canary"), &[]);
    gw.wait_ready().await;
    for proto in BOTH {
        let http = Http::new(proto);
        let mut v2 = 0;
        for _ in 0..400 {
            let r = http
                .get(
                    "http://127.0.0.1:18080/forecast",
                    Some("weather.example.com"),
                    &[],
                )
                .await
                .unwrap();
            if r.backend() == "weather-v2" {
                v2 += 1;
            }
        }
        // 400 draws at p=0.1: sd 15; 40 +- 25 is beyond 4 sd.
        assert!((15..=65).contains(&v2), "{proto:?}: {v2} of 400 went to v2");
        let pinned = http
            .get(
                "http://127.0.0.1:18080/",
                Some("weather.example.com"),
                &[("x-canary", "always")],
            )
            .await
            .unwrap();
        assert_eq!(pinned.backend(), "weather-v2");
        let miss = http
            .get("http://127.0.0.1:18080/", Some("localhost"), &[])
            .await
            .unwrap();
        assert_eq!(miss.status, 404);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_api_basic_routes_by_host_path_and_header() {
    let _store = Echo::start_at("127.0.0.21:9080".parse().unwrap(), "store", &[]);
    let _api = Echo::start_at("127.0.0.22:9080".parse().unwrap(), "api", &[]);
    let _beta = Echo::start_at("127.0.0.23:9080".parse().unwrap(), "api-beta", &[]);
    let gw = Gateway::spawn(&example("gateway-api-basic"), &[]);
    gw.wait_ready().await;
    for proto in BOTH {
        let http = Http::new(proto);
        let get = |host: &'static str,
                   path: &'static str,
                   headers: &'static [(&'static str, &'static str)]| {
            let http = http.clone();
            async move {
                http.get(
                    &format!("http://127.0.0.1:18081{path}"),
                    Some(host),
                    headers,
                )
                .await
                .unwrap()
            }
        };
        let r = get("store.demo.example", "/cart", &[]).await.echo();
        assert_eq!(
            (r["name"].as_str(), r["path"].as_str()),
            (Some("store"), Some("/cart"))
        );
        let r = get("api.demo.example", "/api/users", &[]).await.echo();
        assert_eq!(
            (r["name"].as_str(), r["path"].as_str()),
            (Some("api"), Some("/v2/users"))
        );
        let r = get("api.demo.example", "/home", &[]).await.echo();
        assert_eq!(r["name"], "store");
        let r = get("api.demo.example", "/api/users", &[("x-beta", "true")]).await;
        assert_eq!(
            (r.backend().as_str(), r.header("x-served-by")),
            ("api-beta", Some("beta"))
        );
        assert_eq!(get("other.example", "/", &[]).await.status, 404);
    }
    let reports = gw.config_dump().await["reports"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        reports.iter().all(|r| r["status"] == true),
        "all conditions true: {reports:?}"
    );
}
