//! Names a snapshot asks the proxy to resolve itself (ServiceEntry `resolution: DNS`), as
//! Envoy's STRICT_DNS clusters do: every address a name resolves to is an endpoint, and the
//! name is asked again when its answer's TTL runs out. Answers are kept here; the engine
//! compiles them into the snapshot it serves (one request still sees one configuration) and
//! compiles again when an answer changes. A failed lookup keeps the last answer (a resolver
//! hiccup does not empty a cluster) and is retried soon.

use ferry_model::{Endpoint, Snapshot, Str};
use hickory_resolver::TokioResolver;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use tokio::time::{Duration, Instant};

/// Answers are asked again no sooner than this, whatever their TTL (a TTL of 0 would
/// otherwise mean a lookup per loop turn).
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// When a lookup failed, or found nothing, it is tried again after this.
const RETRY: Duration = Duration::from_secs(5);
/// One lookup's time limit, so a silent resolver cannot hold a snapshot back for long.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Default)]
pub struct Dns {
    resolver: tokio::sync::OnceCell<Option<TokioResolver>>,
    answers: Mutex<HashMap<Str, Answer>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    addresses: Vec<IpAddr>,
    refresh_at: Instant,
}

/// The names `snapshot` wants resolved.
pub fn names(snapshot: &Snapshot) -> BTreeSet<Str> {
    snapshot
        .clusters
        .iter()
        .flat_map(|c| c.dns.iter().map(|d| d.host.clone()))
        .collect()
}

impl Dns {
    /// Looks up the names whose answer is missing or due; true when an answer changed.
    pub async fn refresh(&self, names: &BTreeSet<Str>) -> bool {
        let now = Instant::now();
        let due: Vec<Str> = {
            let answers = self.answers.lock().expect("dns answers");
            names
                .iter()
                .filter(|n| answers.get(*n).is_none_or(|a| a.refresh_at <= now))
                .cloned()
                .collect()
        };
        let mut changed = false;
        for name in due {
            let looked_up = self.lookup(&name).await;
            let mut answers = self.answers.lock().expect("dns answers");
            let previous = answers.get(&name).cloned();
            let answer = match looked_up {
                Some(answer) => answer,
                None => Answer {
                    addresses: previous
                        .as_ref()
                        .map_or_else(Vec::new, |p| p.addresses.clone()),
                    refresh_at: Instant::now() + RETRY,
                },
            };
            changed |= previous.is_none_or(|p| p.addresses != answer.addresses);
            answers.insert(name, answer);
        }
        // Names no snapshot asks for any more are forgotten.
        self.answers
            .lock()
            .expect("dns answers")
            .retain(|name, _| names.contains(name));
        changed
    }

    /// When the earliest answer is due.
    pub fn next_refresh(&self) -> Option<Instant> {
        let answers = self.answers.lock().expect("dns answers");
        answers.values().map(|a| a.refresh_at).min()
    }

    /// `snapshot` with the addresses of its DNS clusters' names as their endpoints.
    pub fn fill(&self, snapshot: &Snapshot) -> Snapshot {
        let answers = self.answers.lock().expect("dns answers");
        let mut filled = snapshot.clone();
        filled.clusters = snapshot
            .clusters
            .iter()
            .map(|cluster| {
                if cluster.dns.is_empty() {
                    return cluster.clone();
                }
                let mut cluster = cluster.clone();
                let mut endpoints: Vec<Endpoint> = cluster.endpoints.to_vec();
                for name in cluster.dns.iter() {
                    let addresses = answers.get(&name.host).map(|a| a.addresses.as_slice());
                    endpoints.extend(addresses.unwrap_or_default().iter().map(|ip| Endpoint {
                        address: SocketAddr::new(*ip, name.port),
                        pod: None,
                        workload: None,
                        mtls: None,
                    }));
                }
                endpoints.sort_by_key(|e| e.address);
                endpoints.dedup_by_key(|e| e.address);
                cluster.endpoints = endpoints.into();
                cluster
            })
            .collect();
        filled
    }

    async fn lookup(&self, name: &str) -> Option<Answer> {
        // An IP address written as a DNS endpoint needs no lookup.
        if let Ok(ip) = name.parse::<IpAddr>() {
            let far = Instant::now() + Duration::from_secs(24 * 3600);
            return Some(Answer {
                addresses: vec![ip],
                refresh_at: far,
            });
        }
        let resolver = self.resolver().await.as_ref()?;
        let found = tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(name)).await;
        let lookup = match found {
            Ok(Ok(lookup)) => lookup,
            Ok(Err(e)) => {
                tracing::warn!(name, "DNS lookup failed: {e}");
                return None;
            }
            Err(_) => {
                tracing::warn!(name, "DNS lookup timed out");
                return None;
            }
        };
        let mut addresses: Vec<IpAddr> = lookup.iter().collect();
        addresses.sort();
        addresses.dedup();
        let valid_until = Instant::from_std(lookup.valid_until());
        let refresh_at = valid_until.max(Instant::now() + MIN_REFRESH);
        tracing::debug!(name, ?addresses, "resolved");
        Some(Answer {
            addresses,
            refresh_at,
        })
    }

    /// The system's resolver (`/etc/resolv.conf`), built on first use; None (logged) when
    /// the configuration cannot be read.
    async fn resolver(&self) -> &Option<TokioResolver> {
        self.resolver
            .get_or_init(|| async {
                let built = TokioResolver::builder_tokio().and_then(|mut builder| {
                    builder.options_mut().timeout = Duration::from_secs(1);
                    builder.options_mut().attempts = 2;
                    builder.build()
                });
                match built {
                    Ok(resolver) => Some(resolver),
                    Err(e) => {
                        tracing::error!("no DNS resolver (ServiceEntry DNS hosts stay empty): {e}");
                        None
                    }
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::{Cluster, DnsName, Meta, ServiceId, UpstreamProtocol};
    use std::sync::Arc;

    fn snapshot_with(names: &[(&str, u16)]) -> Snapshot {
        let cluster = Cluster {
            name: "api.example:443".into(),
            meta: Meta::new("ServiceEntry", "default", "api"),
            service: ServiceId::default(),
            protocol: UpstreamProtocol::Http1,
            endpoints: Arc::new([]),
            policy: Default::default(),
            tls: None,
            dns: names
                .iter()
                .map(|(host, port)| DnsName {
                    host: (*host).into(),
                    port: *port,
                })
                .collect(),
            original_destination: false,
        };
        Snapshot {
            clusters: vec![cluster].into(),
            ..Snapshot::default()
        }
    }

    #[tokio::test]
    async fn addresses_become_endpoints_on_the_names_port() {
        let dns = Dns::default();
        let snapshot = snapshot_with(&[("192.0.2.7", 8443), ("2001:db8::1", 443)]);
        assert!(
            dns.refresh(&names(&snapshot)).await,
            "a first answer is a change"
        );
        assert!(!dns.refresh(&names(&snapshot)).await, "nothing due yet");
        let filled = dns.fill(&snapshot);
        let endpoints: Vec<String> = filled.clusters[0]
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(endpoints, ["192.0.2.7:8443", "[2001:db8::1]:443"]);
    }

    #[tokio::test]
    async fn names_no_longer_asked_for_are_forgotten() {
        let dns = Dns::default();
        dns.refresh(&names(&snapshot_with(&[("192.0.2.7", 80)])))
            .await;
        dns.refresh(&BTreeSet::new()).await;
        assert_eq!(dns.next_refresh(), None);
    }
}
