//! DestinationRule trafficPolicy -> cluster policy, with Istio's override order:
//! top level < top-level portLevelSettings < subset < subset portLevelSettings.

use ferry_model::{
    ClusterPolicy, HashOn, Limits, LoadBalancer, OutlierDetection, ProxyProtocol, RetryBudget,
    TcpKeepalive,
};

use crate::inputs::istio::{
    self, ClientTlsSettings, ConnectionPool, DestinationRule, LoadBalancerSettings, TrafficPolicy,
};
use crate::translate::duration::parse_ms;

pub type Problem = (String, String);

/// The three sections a more specific level replaces as a whole.
#[derive(Default)]
struct Sections<'a> {
    pool: Option<(&'a ConnectionPool, String)>,
    lb: Option<(&'a LoadBalancerSettings, String)>,
    outlier: Option<(&'a istio::OutlierDetection, String)>,
}

impl<'a> Sections<'a> {
    fn overlay(&mut self, policy: &'a TrafficPolicy, field: &str, port: u16) {
        self.take(
            policy.connection_pool.as_ref(),
            policy.load_balancer.as_ref(),
            policy.outlier_detection.as_ref(),
            field,
        );
        for (i, p) in policy.port_level_settings.iter().enumerate() {
            if p.port.as_ref().is_some_and(|s| s.number == u32::from(port)) {
                let field = format!("{field}.portLevelSettings[{i}]");
                self.take(
                    p.connection_pool.as_ref(),
                    p.load_balancer.as_ref(),
                    p.outlier_detection.as_ref(),
                    &field,
                );
            }
        }
    }

    fn take(
        &mut self,
        pool: Option<&'a ConnectionPool>,
        lb: Option<&'a LoadBalancerSettings>,
        outlier: Option<&'a istio::OutlierDetection>,
        field: &str,
    ) {
        if let Some(p) = pool {
            self.pool = Some((p, format!("{field}.connectionPool")));
        }
        if let Some(l) = lb {
            self.lb = Some((l, format!("{field}.loadBalancer")));
        }
        if let Some(o) = outlier {
            self.outlier = Some((o, format!("{field}.outlierDetection")));
        }
    }
}

pub fn cluster_policy(
    dr: &DestinationRule,
    subset: Option<&str>,
    port: u16,
) -> Result<ClusterPolicy, Problem> {
    let mut sections = Sections::default();
    let mut budget = None;
    if let Some(top) = &dr.spec.traffic_policy {
        sections.overlay(top, "spec.trafficPolicy", port);
        budget = top.retry_budget.as_ref();
    }
    let named = dr
        .spec
        .subsets
        .iter()
        .enumerate()
        .find(|(_, s)| Some(s.name.as_str()) == subset);
    if let Some((i, s)) = named {
        if let Some(policy) = &s.traffic_policy {
            sections.overlay(policy, &format!("spec.subsets[{i}].trafficPolicy"), port);
            budget = policy.retry_budget.as_ref().or(budget);
        }
    }
    let mut policy = ClusterPolicy {
        proxy_protocol: proxy_protocol(dr, named)?,
        ..ClusterPolicy::default()
    };
    if let Some((pool, field)) = sections.pool {
        apply_pool(&mut policy, pool, &field)?;
    }
    if let Some((lb, field)) = sections.lb {
        policy.load_balancer = load_balancer(lb, &field)?;
    }
    if let Some((outlier, field)) = sections.outlier {
        policy.outlier = Some(outlier_detection(outlier, &field)?);
    }
    policy.retry_budget = budget.map(|b| RetryBudget {
        percent: b
            .percent
            .as_ref()
            .map_or(20, |p| p.value.clamp(0.0, 100.0).round() as u32),
        min_retry_concurrency: b.min_retry_concurrency.unwrap_or(3),
    });
    Ok(policy)
}

/// The DestinationRule `tls` block in force for `subset` (the subset's own over the top
/// level), with its field path. Modes: DISABLE and ISTIO_MUTUAL steer the mesh's mTLS; SIMPLE
/// and MUTUAL originate TLS (see `upstream_tls`). Port-level `tls` is not supported yet and
/// is an error rather than plaintext sent where TLS was asked for.
pub fn client_tls<'a>(
    dr: &'a DestinationRule,
    subset: Option<&str>,
) -> Result<Option<(&'a ClientTlsSettings, String)>, Problem> {
    let mut found = None;
    let levels = dr
        .spec
        .subsets
        .iter()
        .enumerate()
        .filter(|(_, s)| Some(s.name.as_str()) == subset)
        .map(|(i, s)| {
            (
                s.traffic_policy.as_ref(),
                format!("spec.subsets[{i}].trafficPolicy"),
            )
        });
    let top = std::iter::once((
        dr.spec.traffic_policy.as_ref(),
        "spec.trafficPolicy".to_string(),
    ));
    for (policy, field) in top.chain(levels) {
        let Some(policy) = policy else { continue };
        for (i, port) in policy.port_level_settings.iter().enumerate() {
            if port.tls.is_some() {
                let field = format!("{field}.portLevelSettings[{i}].tls");
                return Err((field, "port-level tls is not supported yet".into()));
            }
        }
        let Some(tls) = &policy.tls else { continue };
        match tls.mode.as_deref() {
            None | Some("DISABLE" | "ISTIO_MUTUAL" | "SIMPLE" | "MUTUAL") => {}
            Some(other) => {
                let message =
                    format!("mode {other:?} is not one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL");
                return Err((format!("{field}.tls.mode"), message));
            }
        }
        found = Some((tls, format!("{field}.tls")));
    }
    Ok(found)
}

fn duration(value: &Option<String>, field: String) -> Result<Option<u64>, Problem> {
    value
        .as_deref()
        .map(parse_ms)
        .transpose()
        .map_err(|e| (field, e))
}

fn positive(value: Option<i32>) -> Option<u32> {
    value.filter(|v| *v > 0).map(|v| v as u32)
}

/// The subset's `proxyProtocol`, else the top-level one.
fn proxy_protocol(
    dr: &DestinationRule,
    subset: Option<(usize, &istio::Subset)>,
) -> Result<Option<ProxyProtocol>, Problem> {
    let from_subset = subset.and_then(|(i, s)| {
        let policy = s.traffic_policy.as_ref()?;
        let settings = policy.proxy_protocol.as_ref()?;
        Some((
            settings,
            format!("spec.subsets[{i}].trafficPolicy.proxyProtocol.version"),
        ))
    });
    let top = dr.spec.traffic_policy.as_ref().and_then(|p| {
        let settings = p.proxy_protocol.as_ref()?;
        Some((
            settings,
            "spec.trafficPolicy.proxyProtocol.version".to_string(),
        ))
    });
    let Some((settings, field)) = from_subset.or(top) else {
        return Ok(None);
    };
    match settings.version.as_deref().unwrap_or("V1") {
        "V1" => Ok(Some(ProxyProtocol::V1)),
        "V2" => Ok(Some(ProxyProtocol::V2)),
        other => Err((
            field,
            format!("PROXY protocol version {other}: expected V1 or V2"),
        )),
    }
}

fn apply_pool(
    policy: &mut ClusterPolicy,
    pool: &ConnectionPool,
    field: &str,
) -> Result<(), Problem> {
    let (tcp, http) = (pool.tcp.as_ref(), pool.http.as_ref());
    policy.connect_timeout_ms = duration(
        &tcp.and_then(|t| t.connect_timeout.clone()),
        format!("{field}.tcp.connectTimeout"),
    )?;
    let tcp_idle = duration(
        &tcp.and_then(|t| t.idle_timeout.clone()),
        format!("{field}.tcp.idleTimeout"),
    )?;
    let http_idle = duration(
        &http.and_then(|h| h.idle_timeout.clone()),
        format!("{field}.http.idleTimeout"),
    )?;
    policy.idle_timeout_ms = http_idle.or(tcp_idle);
    if let Some(keepalive) = tcp.and_then(|t| t.tcp_keepalive.as_ref()) {
        let field = format!("{field}.tcp.tcpKeepalive");
        policy.tcp_keepalive = Some(TcpKeepalive {
            probes: keepalive.probes,
            time_ms: duration(&keepalive.time, format!("{field}.time"))?,
            interval_ms: duration(&keepalive.interval, format!("{field}.interval"))?,
        });
    }
    policy.limits = Limits {
        max_connections: positive(tcp.and_then(|t| t.max_connections)),
        max_pending_requests: positive(http.and_then(|h| h.http1_max_pending_requests)),
        max_requests: positive(http.and_then(|h| h.http2_max_requests)),
        max_requests_per_connection: positive(http.and_then(|h| h.max_requests_per_connection)),
        max_retries: positive(http.and_then(|h| h.max_retries)),
    };
    Ok(())
}

fn load_balancer(lb: &LoadBalancerSettings, field: &str) -> Result<LoadBalancer, Problem> {
    if let Some(hash) = &lb.consistent_hash {
        let on = if let Some(h) = &hash.http_header_name {
            HashOn::Header(h.to_ascii_lowercase().into())
        } else if let Some(c) = &hash.http_cookie {
            let ttl = duration(&c.ttl, format!("{field}.consistentHash.httpCookie.ttl"))?;
            HashOn::Cookie {
                name: c.name.as_str().into(),
                path: c.path.as_deref().map(Into::into),
                ttl_seconds: ttl.map(|ms| ms / 1000),
            }
        } else if hash.use_source_ip == Some(true) {
            HashOn::SourceIp
        } else if let Some(q) = &hash.http_query_parameter_name {
            HashOn::QueryParameter(q.as_str().into())
        } else {
            return Err((format!("{field}.consistentHash"), "one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is required".into()));
        };
        return Ok(LoadBalancer::ConsistentHash(on));
    }
    match lb.simple.as_deref().unwrap_or("UNSPECIFIED") {
        "UNSPECIFIED" | "ROUND_ROBIN" => Ok(LoadBalancer::RoundRobin),
        "LEAST_REQUEST" | "LEAST_CONN" => Ok(LoadBalancer::LeastRequest),
        "RANDOM" => Ok(LoadBalancer::Random),
        other => Err((
            format!("{field}.simple"),
            format!("load balancer {other} is not supported"),
        )),
    }
}

/// Istio's defaults: 5 consecutive 5xx, 10 s interval, 30 s base ejection, at most 10% ejected.
fn outlier_detection(
    o: &istio::OutlierDetection,
    field: &str,
) -> Result<OutlierDetection, Problem> {
    Ok(OutlierDetection {
        consecutive_5xx: o
            .consecutive_5xx_errors
            .or(o.consecutive_errors.map(|e| e.max(0) as u32))
            .unwrap_or(5),
        consecutive_gateway_errors: o.consecutive_gateway_errors.unwrap_or(0),
        interval_ms: duration(&o.interval, format!("{field}.interval"))?.unwrap_or(10_000),
        base_ejection_ms: duration(&o.base_ejection_time, format!("{field}.baseEjectionTime"))?
            .unwrap_or(30_000),
        max_ejection_percent: o
            .max_ejection_percent
            .map_or(10, |p| p.clamp(0, 100) as u32),
        min_health_percent: o.min_health_percent.map_or(0, |p| p.clamp(0, 100) as u32),
    })
}
