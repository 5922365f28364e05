//! Who is calling: a proxy presents its projected ServiceAccount token (audience `ferry`),
//! and the API server says whose it is (TokenReview), as istiod authenticates CSRs.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The audience Ferry's projected tokens are minted for; tokens for other audiences (the
/// default API-server one included) are refused, so a token stolen from elsewhere is useless.
pub const AUDIENCE: &str = "ferry";

/// A positive review is reused this long (a proxy reconnecting in a loop must not hammer the
/// API server); a revoked token stops working within it.
const CACHE_FOR: Duration = Duration::from_secs(60);
const CACHE_ENTRIES: usize = 4096;

/// The ServiceAccount a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub namespace: String,
    pub service_account: String,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service_account)
    }
}

pub struct TokenReviewer {
    client: kube::Client,
    cache: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl TokenReviewer {
    pub fn new(client: kube::Client) -> TokenReviewer {
        TokenReviewer {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The ServiceAccount of `token`, or why it is not accepted.
    pub async fn review(&self, token: &str) -> Result<Caller, String> {
        if let Some(caller) = self.cached(token) {
            return Ok(caller);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.into()),
                audiences: Some(vec![AUDIENCE.into()]),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let reviewed = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("TokenReview failed: {e}"))?;
        let caller = caller_of(&reviewed)?;
        let mut cache = self.cache.lock().expect("token cache");
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(token.into(), (caller.clone(), Instant::now()));
        Ok(caller)
    }

    fn cached(&self, token: &str) -> Option<Caller> {
        let cache = self.cache.lock().expect("token cache");
        let (caller, at) = cache.get(token)?;
        (at.elapsed() < CACHE_FOR).then(|| caller.clone())
    }
}

/// The caller named by a completed review: authenticated, for our audience, and a
/// ServiceAccount (`system:serviceaccount:<ns>:<name>`), nothing else.
fn caller_of(review: &TokenReview) -> Result<Caller, String> {
    let status = review.status.as_ref().ok_or("TokenReview without status")?;
    if status.authenticated != Some(true) {
        let why = status.error.as_deref().unwrap_or("not authenticated");
        return Err(format!("token refused: {why}"));
    }
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.iter().any(|a| a == AUDIENCE) {
        return Err(format!("token is not for audience {AUDIENCE:?}"));
    }
    let username = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or_default();
    let rest = username
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(|| format!("{username:?} is not a ServiceAccount"))?;
    let (namespace, service_account) = rest
        .split_once(':')
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty())
        .ok_or_else(|| format!("{username:?} is not a ServiceAccount"))?;
    Ok(Caller {
        namespace: namespace.into(),
        service_account: service_account.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    fn review(authenticated: bool, user: &str, audiences: &[&str]) -> TokenReview {
        TokenReview {
            status: Some(TokenReviewStatus {
                authenticated: Some(authenticated),
                audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
                user: Some(UserInfo {
                    username: Some(user.into()),
                    ..UserInfo::default()
                }),
                error: None,
            }),
            ..TokenReview::default()
        }
    }

    #[test]
    fn only_authenticated_service_accounts_of_our_audience_pass() {
        let ok = caller_of(&review(
            true,
            "system:serviceaccount:weather:web",
            &["ferry"],
        ));
        assert_eq!(
            ok.unwrap(),
            Caller {
                namespace: "weather".into(),
                service_account: "web".into()
            }
        );
        assert!(caller_of(&review(false, "system:serviceaccount:a:b", &["ferry"])).is_err());
        assert!(caller_of(&review(true, "system:serviceaccount:a:b", &["api"])).is_err());
        assert!(caller_of(&review(true, "alice", &["ferry"])).is_err());
        assert!(caller_of(&review(true, "system:serviceaccount:a", &["ferry"])).is_err());
    }
}
