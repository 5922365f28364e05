//! JSON Web Key Sets named by RequestAuthentication `jwksUri` (or found by OpenID discovery
//! from the issuer): fetched and refreshed here — by the controller in a cluster, by a
//! standalone gateway for itself — so proxies receive keys in their snapshot and never reach
//! out. A failed refresh keeps the last good keys; with none, every token of that issuer is
//! refused (the translator compiles an empty key set).

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

use crate::inputs::Inputs;
use crate::translate::duration::parse_ms;

/// How often good keys are fetched again (istiod's default refresh interval).
pub const REFRESH: Duration = Duration::from_secs(20 * 60);
/// First retry after a failure; doubled up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(5 * 60);
/// Fetch timeout when the rule sets none (Istio's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// A key set larger than this is refused (they are a few KiB).
const MAX_BODY: usize = 1024 * 1024;

/// The keys known for one source, as the translator reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchedJwks {
    /// The last good JWKS document.
    pub keys: Option<String>,
    /// Why the last attempt failed, if it did.
    pub error: Option<String>,
}

/// Where a rule's keys come from: its `jwksUri`, or else OpenID discovery from its issuer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeySource {
    Uri(String),
    Discovery(String),
}

impl KeySource {
    /// The key the translator looks the keys up by in `Inputs::jwks`.
    pub fn key(&self) -> String {
        match self {
            KeySource::Uri(uri) => uri.clone(),
            KeySource::Discovery(issuer) => format!("openid:{issuer}"),
        }
    }
}

/// The key sources the RequestAuthentications name, with each one's fetch timeout.
pub fn wanted(inputs: &Inputs) -> BTreeMap<KeySource, Duration> {
    let mut out = BTreeMap::new();
    for policy in &inputs.request_authentications {
        for rule in &policy.spec.jwt_rules {
            if rule.jwks.is_some() {
                continue;
            }
            let source = match &rule.jwks_uri {
                Some(uri) => KeySource::Uri(uri.clone()),
                None if !rule.issuer.is_empty() => KeySource::Discovery(rule.issuer.clone()),
                None => continue,
            };
            let timeout = rule
                .timeout
                .as_deref()
                .and_then(|t| parse_ms(t).ok())
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_TIMEOUT);
            out.insert(source, timeout);
        }
    }
    out
}

struct Entry {
    fetched: FetchedJwks,
    due: Instant,
    retry: Duration,
}

/// Fetched key sets, refreshed in the background for the sources currently wanted.
pub struct JwksCache {
    entries: Mutex<BTreeMap<KeySource, Entry>>,
    wanted: watch::Sender<BTreeMap<KeySource, Duration>>,
    /// Notified when a key set (or its error) changes: time to translate again.
    pub changed: Arc<Notify>,
}

impl Default for JwksCache {
    fn default() -> Self {
        JwksCache {
            entries: Mutex::new(BTreeMap::new()),
            wanted: watch::channel(BTreeMap::new()).0,
            changed: Arc::new(Notify::new()),
        }
    }
}

impl JwksCache {
    /// Says which sources the current objects name (others are forgotten).
    pub fn want(&self, inputs: &Inputs) {
        let wanted = wanted(inputs);
        self.wanted.send_if_modified(|current| {
            let differs = *current != wanted;
            *current = wanted.clone();
            differs
        });
    }

    /// What the translator gets, by [`KeySource::key`].
    pub fn fetched(&self) -> BTreeMap<String, FetchedJwks> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .map(|(source, entry)| (source.key(), entry.fetched.clone()))
            .collect()
    }

    /// Fetches what is due, forever.
    pub async fn run(self: Arc<Self>) {
        let mut wanted_rx = self.wanted.subscribe();
        loop {
            let wanted = wanted_rx.borrow_and_update().clone();
            self.forget_unwanted(&wanted);
            for (source, timeout) in &wanted {
                if self.is_due(source) {
                    let result = fetch_keys(source, *timeout).await;
                    self.record(source, result);
                }
            }
            let pause = self.next_due().unwrap_or(REFRESH);
            tokio::select! {
                _ = wanted_rx.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<KeySource, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget_unwanted(&self, wanted: &BTreeMap<KeySource, Duration>) {
        self.lock().retain(|source, _| wanted.contains_key(source));
    }

    fn is_due(&self, source: &KeySource) -> bool {
        self.lock()
            .get(source)
            .is_none_or(|e| e.due <= Instant::now())
    }

    fn next_due(&self) -> Option<Duration> {
        let now = Instant::now();
        self.lock()
            .values()
            .map(|e| e.due.saturating_duration_since(now))
            .min()
    }

    fn record(&self, source: &KeySource, result: Result<String, String>) {
        let changed = {
            let mut entries = self.lock();
            let entry = entries.entry(source.clone()).or_insert_with(|| Entry {
                fetched: FetchedJwks::default(),
                due: Instant::now(),
                retry: RETRY_MIN,
            });
            let before = entry.fetched.clone();
            match result {
                Ok(keys) => {
                    entry.fetched = FetchedJwks {
                        keys: Some(keys),
                        error: None,
                    };
                    entry.retry = RETRY_MIN;
                    entry.due = Instant::now() + REFRESH;
                }
                Err(error) => {
                    tracing::warn!(source = %source.key(), "JWKS not fetched: {error}");
                    entry.fetched.error = Some(error);
                    entry.due = Instant::now() + entry.retry;
                    entry.retry = (entry.retry * 2).min(RETRY_MAX);
                }
            }
            entry.fetched != before
        };
        if changed {
            self.changed.notify_one();
        }
    }
}

/// The JWKS document of a source (following discovery to its `jwks_uri`).
pub async fn fetch_keys(source: &KeySource, timeout: Duration) -> Result<String, String> {
    let uri = match source {
        KeySource::Uri(uri) => uri.clone(),
        KeySource::Discovery(issuer) => {
            let discovery = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            let document = get(&discovery, timeout).await?;
            let config: serde_json::Value = serde_json::from_str(&document)
                .map_err(|e| format!("{discovery}: not JSON: {e}"))?;
            config["jwks_uri"]
                .as_str()
                .ok_or_else(|| format!("{discovery}: no jwks_uri"))?
                .to_string()
        }
    };
    let body = get(&uri, timeout).await?;
    let (keys, _) = public_key_set(&body).map_err(|e| format!("{uri}: {e}"))?;
    Ok(keys)
}

/// One GET, HTTP or HTTPS (system roots), answered 200 within `timeout`.
async fn get(uri: &str, timeout: Duration) -> Result<String, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no system root certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let request = http::Request::get(uri)
        .header("accept", "application/json")
        .body(Empty::new())
        .map_err(|e| format!("{uri}: {e}"))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "not UTF-8".to_string())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result.map_err(|e| format!("{uri}: {e}")),
        Err(_) => Err(format!("{uri}: no answer within {timeout:?}")),
    }
}

/// The public verification keys of a JWKS document, re-serialized with only the members
/// verification needs (a private member pasted by mistake is never passed on). Returns the
/// set and the keys left out, with why. Symmetric (`oct`) keys are left out: a key set is
/// published, so a shared secret in one is not a secret.
pub fn public_key_set(document: &str) -> Result<(String, Vec<String>), String> {
    let value: serde_json::Value =
        serde_json::from_str(document).map_err(|e| format!("not JSON: {e}"))?;
    let keys = value["keys"]
        .as_array()
        .ok_or("not a JWKS: no \"keys\" list")?;
    let mut kept = Vec::new();
    let mut left_out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match serde_json::from_value::<jsonwebtoken::jwk::Jwk>(key.clone()) {
            Ok(jwk)
                if matches!(
                    jwk.algorithm,
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
                ) =>
            {
                left_out.push(format!("keys[{i}]: symmetric (oct) keys are not accepted"));
            }
            Ok(jwk) => kept.push(jwk),
            Err(e) => left_out.push(format!("keys[{i}]: {e}")),
        }
    }
    let set = jsonwebtoken::jwk::JwkSet { keys: kept };
    let text = serde_json::to_string(&set).map_err(|e| e.to_string())?;
    Ok((text, left_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_members_and_secrets_are_left_out() {
        let document = r#"{"keys": [
            {"kty": "RSA", "kid": "a", "alg": "RS256", "n": "sXch", "e": "AQAB", "d": "SECRET"},
            {"kty": "oct", "kid": "b", "k": "c2VjcmV0"},
            {"kty": "weird"}
        ]}"#;
        let (set, left_out) = public_key_set(document).unwrap();
        assert!(
            set.contains("\"kid\":\"a\"") && !set.contains("SECRET"),
            "{set}"
        );
        assert!(!set.contains("c2VjcmV0"), "{set}");
        assert_eq!(left_out.len(), 2, "{left_out:?}");
        assert!(public_key_set("{}").is_err());
    }
}
