//! `ferry proxy-config`: tables of what a running proxy serves, read from its admin port
//! (as `istioctl proxy-config` reads Envoy's).

use anyhow::{bail, Context};
use bytes::Bytes;
use ferry_model::{Action, BackendTarget, PathMatch, Route, Snapshot, StringMatch};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::cli::{ProxyConfigArgs, ProxyConfigKind};

pub async fn run(args: ProxyConfigArgs) -> anyhow::Result<()> {
    let path = match args.kind {
        ProxyConfigKind::Endpoints => "/endpoints",
        _ => "/config_dump",
    };
    let document = fetch(&args.admin, path).await?;
    let output = match args.kind {
        ProxyConfigKind::Endpoints => endpoints(&document, args.json())?,
        kind => {
            let snapshot: Snapshot = serde_json::from_value(document["snapshot"].clone())
                .context("the proxy has no snapshot applied yet")?;
            match kind {
                ProxyConfigKind::Listeners => listeners(&snapshot, args.json())?,
                ProxyConfigKind::Routes => routes(&snapshot, args.json())?,
                _ => clusters(&snapshot, args.json())?,
            }
        }
    };
    print!("{output}");
    Ok(())
}

pub(crate) async fn fetch(admin: &str, path: &str) -> anyhow::Result<Value> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let url = format!("http://{admin}{path}");
    let response = client
        .get(url.parse().context("admin address")?)
        .await
        .with_context(|| format!("cannot reach the admin port at {admin}"))?;
    if !response.status().is_success() {
        bail!("{url} answered {}", response.status());
    }
    let body = response.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&body).with_context(|| format!("{url} did not answer JSON"))
}

fn listeners(snapshot: &Snapshot, json: bool) -> anyhow::Result<String> {
    if json {
        return pretty(&snapshot.listeners);
    }
    let rows = snapshot
        .listeners
        .iter()
        .map(|l| {
            let routes: usize = l.virtual_hosts.iter().map(|v| v.routes.len()).sum();
            let hosts: Vec<&str> = l.virtual_hosts.iter().map(|v| &*v.hostname).collect();
            let sources: Vec<String> = l.sources.iter().map(ToString::to_string).collect();
            vec![
                l.port.to_string(),
                hosts.join(","),
                routes.to_string(),
                sources.join(","),
            ]
        })
        .collect();
    Ok(table(&["PORT", "HOSTS", "ROUTES", "FROM"], rows))
}

fn routes(snapshot: &Snapshot, json: bool) -> anyhow::Result<String> {
    if json {
        let all: Vec<_> = snapshot
            .listeners
            .iter()
            .flat_map(|l| l.virtual_hosts.iter().map(move |v| (l.port, v)))
            .map(|(port, v)| serde_json::json!({"port": port, "hostname": v.hostname, "routes": v.routes}))
            .collect();
        return pretty(&all);
    }
    let mut rows = Vec::new();
    for listener in snapshot.listeners.iter() {
        for vhost in listener.virtual_hosts.iter() {
            for route in vhost.routes.iter() {
                rows.push(vec![
                    listener.port.to_string(),
                    vhost.hostname.to_string(),
                    describe_match(route),
                    describe_action(route),
                    route.meta.to_string(),
                ]);
            }
        }
    }
    Ok(table(
        &["PORT", "HOST", "MATCH", "DESTINATION", "FROM"],
        rows,
    ))
}

fn clusters(snapshot: &Snapshot, json: bool) -> anyhow::Result<String> {
    if json {
        return pretty(&snapshot.clusters);
    }
    let rows = snapshot
        .clusters
        .iter()
        .map(|c| {
            vec![
                c.name.to_string(),
                c.service.fqdn(),
                format!("{:?}", c.protocol).to_lowercase(),
                c.endpoints.len().to_string(),
                c.meta.to_string(),
            ]
        })
        .collect();
    Ok(table(
        &["CLUSTER", "SERVICE FQDN", "PROTOCOL", "ENDPOINTS", "FROM"],
        rows,
    ))
}

fn endpoints(document: &Value, json: bool) -> anyhow::Result<String> {
    if json {
        return pretty(document);
    }
    let mut rows = Vec::new();
    for cluster in document["clusters"].as_array().into_iter().flatten() {
        for endpoint in cluster["endpoints"].as_array().into_iter().flatten() {
            let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
            rows.push(vec![
                text(&endpoint["address"]),
                text(&endpoint["health"]),
                text(&endpoint["active_requests"]),
                text(&cluster["cluster"]),
                endpoint["pod"].as_str().unwrap_or("-").to_string(),
            ]);
        }
    }
    Ok(table(
        &["ENDPOINT", "STATUS", "ACTIVE", "CLUSTER", "POD"],
        rows,
    ))
}

fn describe_match(route: &Route) -> String {
    let m = &route.matcher;
    let mut parts = vec![match &m.path {
        PathMatch::Any => "/*".to_string(),
        PathMatch::Exact(p) => p.to_string(),
        PathMatch::Prefix(p) => format!("{p}*"),
        PathMatch::SegmentPrefix(p) => format!("{}/*", p.trim_end_matches('/')),
        PathMatch::Regex(r) => format!("~{r}"),
    }];
    if let Some(method) = &m.method {
        parts.push(format!("method {}", describe_string(method)));
    }
    for header in m.headers.iter() {
        parts.push(format!(
            "{}: {}",
            header.name,
            describe_string(&header.value)
        ));
    }
    for query in m.query_params.iter() {
        parts.push(format!("?{}={}", query.name, describe_string(&query.value)));
    }
    parts.join(" ")
}

fn describe_string(value: &StringMatch) -> String {
    match value {
        StringMatch::Exact(v) => v.to_string(),
        StringMatch::Prefix(v) => format!("{v}*"),
        StringMatch::Regex(v) => format!("~{v}"),
        StringMatch::Present => "*".to_string(),
    }
}

fn describe_action(route: &Route) -> String {
    match &route.action {
        Action::Forward(backends) => {
            let total: u32 = backends.iter().map(|b| b.weight).sum();
            backends
                .iter()
                .map(|b| {
                    let target = match &b.target {
                        BackendTarget::Cluster(name) => name.to_string(),
                        BackendTarget::Invalid { status, .. } => format!("invalid ({status})"),
                    };
                    if backends.len() > 1 && total > 0 {
                        format!("{target} {}%", b.weight * 100 / total)
                    } else {
                        target
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
        Action::Redirect(_) => "redirect".to_string(),
        Action::Direct { status, .. } => format!("direct {status}"),
    }
}

fn pretty<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// Columns padded to their widest cell, like kubectl's tables.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("   ").trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns() {
        let out = table(
            &["A", "LONG HEADER"],
            vec![vec!["wide cell".into(), "x".into()]],
        );
        assert_eq!(out, "A           LONG HEADER\nwide cell   x\n");
    }
}
