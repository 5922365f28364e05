//! One dashboard over several controller replicas. Each replica keeps the summaries of the
//! proxies connected to it; this asks every replica (`ferry dashboard` reaches each through
//! its own port-forward) and adds their windows up: edges are counts and buckets, so the
//! merged graph is what one controller with every proxy would have drawn. Objects (Gateways,
//! messages, routes) are the same cluster's in every replica: the first that answers gives
//! them.

use futures::future::join_all;
use http::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

use super::server::{self, Answer, Refused};
use super::views::{self, TrafficView};
use super::{now_ms, Window};

/// How long a replica may take to answer before the view is drawn without it.
const REPLICA_TIMEOUT: Duration = Duration::from_secs(5);

/// One controller replica's dashboard API.
#[async_trait::async_trait]
pub trait Replica: Send + Sync + 'static {
    /// Who it is, for messages (the pod's name).
    fn name(&self) -> &str;
    /// `GET /api/...` on the replica's dashboard, as JSON.
    async fn get(&self, path_and_query: &str) -> Result<Value, String>;
}

pub struct Replicas {
    replicas: Vec<Box<dyn Replica>>,
}

impl Replicas {
    pub fn new(replicas: Vec<Box<dyn Replica>>) -> Replicas {
        Replicas { replicas }
    }

    /// Every replica's answer (or why it gave none), in order.
    async fn ask_all(&self, path: &str) -> Vec<(&str, Result<Value, String>)> {
        let asks = self.replicas.iter().map(|replica| async move {
            let answer = tokio::time::timeout(REPLICA_TIMEOUT, replica.get(path))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {REPLICA_TIMEOUT:?}")));
            (replica.name(), answer)
        });
        join_all(asks).await
    }

    /// The first replica's answer that came.
    async fn ask_any(&self, path: &str) -> Result<Value, Refused> {
        let mut reasons = Vec::new();
        for (name, answer) in self.ask_all(path).await {
            match answer {
                Ok(value) => return Ok(value),
                Err(e) => reasons.push(format!("{name}: {e}")),
            }
        }
        Err(Refused(StatusCode::BAD_GATEWAY, reasons.join("; ")))
    }

    /// The replicas' windows added up, and the replicas that did not answer.
    async fn traffic(&self, window: Window) -> (TrafficView, Vec<String>) {
        let mut merged = TrafficView {
            edges: Vec::new(),
            errors: Vec::new(),
            dropped_edges: 0,
        };
        let mut missing = Vec::new();
        let path = format!("/api/export?window={}", window.label());
        for (name, answer) in self.ask_all(&path).await {
            match answer.and_then(|export| TrafficView::from_export(&export)) {
                Ok(view) => merged.merge(view),
                Err(e) => missing.push(format!("{name}: {e}")),
            }
        }
        (merged, missing)
    }

    async fn node(&self, id: &str) -> Result<Value, Refused> {
        let (view, missing) = self.traffic(Window::OneMinute).await;
        let (_, mut page) = views::node(&view, id, now_ms())
            .ok_or_else(|| Refused::new(StatusCode::NOT_FOUND, "no such node"))?;
        let encoded: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
        if let Ok(config) = self.ask_any(&format!("/api/node?id={encoded}")).await {
            for field in ["routes", "policies", "services"] {
                page[field] = config[field].clone();
            }
        }
        page["unansweredReplicas"] = json!(missing);
        Ok(page)
    }

    async fn proxies(&self) -> Value {
        let mut proxies = Vec::new();
        let mut missing = Vec::new();
        for (name, answer) in self.ask_all("/api/proxies").await {
            match answer {
                Ok(value) => {
                    proxies.extend(value["proxies"].as_array().cloned().unwrap_or_default())
                }
                Err(e) => missing.push(format!("{name}: {e}")),
            }
        }
        json!({ "proxies": proxies, "unansweredReplicas": missing })
    }

    async fn overview(&self) -> Value {
        let answers = self.ask_all("/api/overview").await;
        let sum = |field: &str| -> u64 {
            answers
                .iter()
                .filter_map(|(_, a)| a.as_ref().ok()?[field].as_u64())
                .sum()
        };
        let first = answers
            .iter()
            .find_map(|(_, a)| a.as_ref().ok())
            .cloned()
            .unwrap_or_default();
        json!({
            "mode": "cluster",
            "replicas": self.replicas.len(),
            "replicasAnswering": answers.iter().filter(|(_, a)| a.is_ok()).count(),
            "edgesKept": sum("edgesKept"),
            "edgeLimit": first["edgeLimit"],
            "bytesPerEdge": first["bytesPerEdge"],
            "droppedEdges": sum("droppedEdges"),
            "summariesReceived": sum("summariesReceived"),
            "assetsBuilt": super::assets::BUILT,
        })
    }
}

#[async_trait::async_trait]
impl Answer for Replicas {
    async fn answer(&self, api: &str, query: &HashMap<String, String>) -> Result<Value, Refused> {
        match api {
            "graph" | "export" => {
                let window = server::window(query)?;
                let (view, missing) = self.traffic(window).await;
                let mut answer = if api == "graph" {
                    views::graph(&view, window, now_ms())
                } else {
                    views::export(&view, window, now_ms())
                };
                answer["unansweredReplicas"] = json!(missing);
                Ok(answer)
            }
            "node" => {
                let id = query.get("id").ok_or_else(|| {
                    Refused::new(StatusCode::BAD_REQUEST, "id: kind/namespace/name")
                })?;
                self.node(id).await
            }
            "proxies" => Ok(self.proxies().await),
            "overview" => Ok(self.overview().await),
            "gateways" | "messages" => self.ask_any(&format!("/api/{api}")).await,
            _ => Err(Refused::new(
                StatusCode::NOT_FOUND,
                server::API_INDEX.trim(),
            )),
        }
    }
}
