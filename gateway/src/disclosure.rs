//! What a client learns when the proxy answers itself. Inside the mesh the full cause
//! (`x-ferry-cause: UH outbound|80||web.shop.svc.cluster.local endpoint 10.1.2.3:8080: ...`)
//! is what makes a failure quick to explain; at the edge it names namespaces, Services and
//! pod addresses to anyone. So a gateway tells external clients the code alone (`UH`) with a
//! generic body, and keeps the full cause for the access log and for clients it trusts: mesh
//! peers (a verified workload certificate), addresses in `--full-cause-cidr`, and requests
//! carrying the `--full-cause-header` it was given. A sidecar's clients are workloads of the
//! mesh: it tells everyone the full cause unless told otherwise.

use ferry_model::authz::IpBlock;
use serde::Serialize;
use std::net::IpAddr;

use crate::header_lookup::HeaderLookup;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Disclosure {
    /// Every client gets the full cause.
    pub full_for_all: bool,
    /// Clients from these ranges get the full cause.
    pub trusted_cidrs: Vec<IpBlock>,
    /// A request with this header and value gets the full cause (the value is a secret: the
    /// dump shows the name only).
    #[serde(serialize_with = "header_name_only")]
    pub trusted_header: Option<(String, String)>,
}

/// What the deciding needs to know of the client.
pub struct Client<'a> {
    pub ip: Option<IpAddr>,
    /// A verified mesh workload certificate.
    pub mesh_peer: bool,
    pub headers: &'a dyn HeaderLookup,
}

impl Disclosure {
    /// Full causes for everyone (a sidecar's default).
    pub fn full() -> Self {
        Disclosure {
            full_for_all: true,
            ..Disclosure::default()
        }
    }

    pub fn tells_full_cause(&self, client: &Client<'_>) -> bool {
        self.full_for_all
            || client.mesh_peer
            || client
                .ip
                .is_some_and(|ip| self.trusted_cidrs.iter().any(|b| b.contains(ip)))
            || self.trusted_header.as_ref().is_some_and(|(name, value)| {
                (0..)
                    .map_while(|n| client.headers.nth_value(name, n))
                    .any(|v| same_secret(v, value.as_bytes()))
            })
    }
}

/// The cause and body an untrusted client gets for a reply with `cause` and `body`: the
/// cause's code alone, and a generic body when the body was the cause itself (direct
/// responses and redirects keep the body their route configured).
pub fn public_reply<'a>(cause: &'a str, body: &'a str) -> (&'a str, &'a str) {
    let code = cause.split_whitespace().next().unwrap_or("");
    let generated = body.strip_suffix('\n') == Some(cause);
    let body = if generated { public_body(code) } else { body };
    (code, body)
}

/// Envoy's wording where it has one.
fn public_body(code: &str) -> &'static str {
    match code {
        "NR" => "no route\n",
        "UH" => "no healthy upstream\n",
        "NC" => "no cluster\n",
        "UF" => "upstream connect error\n",
        "UC" => "upstream connection error\n",
        "UO" => "upstream overflow\n",
        "UT" => "upstream request timeout\n",
        "URX" => "upstream retries exhausted\n",
        "FI" => "fault filter abort\n",
        "RBAC" => "RBAC: access denied\n",
        "BASIC" => "Unauthorized\n",
        "JWT" => "Jwt verification fails\n",
        "DPE" => "bad request\n",
        "CORS" => "\n",
        _ => "request not served\n",
    }
}

/// Compares without stopping at the first difference.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn header_name_only<S: serde::Serializer>(
    header: &Option<(String, String)>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match header {
        Some((name, _)) => s.serialize_some(name),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn client<'a>(ip: &str, headers: &'a HeaderMap) -> Client<'a> {
        Client {
            ip: ip.parse().ok(),
            mesh_peer: false,
            headers,
        }
    }

    #[test]
    fn external_clients_get_the_code_and_a_generic_body() {
        let cause = "UH outbound|80||web.shop.svc.cluster.local endpoint 10.1.2.3:8080";
        let generated = format!("{cause}\n");
        let (code, body) = public_reply(cause, &generated);
        assert_eq!((code, body), ("UH", "no healthy upstream\n"));
        // A direct response keeps its configured body.
        assert_eq!(public_reply("DR shop/vs", "hello"), ("DR", "hello"));
    }

    #[test]
    fn trusted_clients_are_mesh_peers_listed_ranges_and_the_secret_header() {
        let disclosure = Disclosure {
            full_for_all: false,
            trusted_cidrs: vec![IpBlock::parse("10.0.0.0/8").unwrap()],
            trusted_header: Some(("x-debug".into(), "s3cret".into())),
        };
        let none = HeaderMap::new();
        assert!(disclosure.tells_full_cause(&client("10.2.3.4", &none)));
        assert!(!disclosure.tells_full_cause(&client("192.0.2.1", &none)));
        let mut with_secret = HeaderMap::new();
        with_secret.insert("x-debug", "s3cret".parse().unwrap());
        assert!(disclosure.tells_full_cause(&client("192.0.2.1", &with_secret)));
        let mut wrong = HeaderMap::new();
        wrong.insert("x-debug", "guess".parse().unwrap());
        assert!(!disclosure.tells_full_cause(&client("192.0.2.1", &wrong)));
        let peer = Client {
            mesh_peer: true,
            ..client("192.0.2.1", &none)
        };
        assert!(disclosure.tells_full_cause(&peer));
        let dump = serde_json::to_value(&disclosure).unwrap();
        assert_eq!(
            dump["trusted_header"], "x-debug",
            "the secret stays out of dumps"
        );
    }
}
