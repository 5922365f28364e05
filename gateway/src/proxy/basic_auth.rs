//! HTTP Basic authentication on a route (RFC 7617; ingress-nginx `auth-type: basic`): the
//! `Authorization: Basic` credentials must name a user of the route with the password its
//! htpasswd hash stands for; otherwise 401 with the realm's challenge.

use base64::Engine;
use ferry_model::{BasicAuth, Meta};

use super::decide::{Decision, Reply};
use super::facts::RequestFacts;

/// The 401 for a request without valid credentials, if it has none.
pub fn check(req: &RequestFacts<'_>, auth: &BasicAuth, meta: &Meta) -> Option<Reply> {
    let credentials =
        crate::header_lookup::first_text(req.headers, "authorization").and_then(decode);
    let valid = credentials.is_some_and(|(user, password)| {
        auth.users
            .iter()
            .find(|u| *u.name == *user)
            .is_some_and(|u| {
                crate::htpasswd::verified::verify(&u.password_hash.0, &user, &password)
            })
    });
    if valid {
        return None;
    }
    let mut reply = Decision::reply(401, format!("BASIC {meta}: missing or wrong credentials"));
    reply.body = "Unauthorized".into();
    let realm = auth.realm.replace(['"', '\\'], "");
    reply.headers.push((
        "www-authenticate".into(),
        format!("Basic realm=\"{realm}\", charset=\"UTF-8\""),
    ));
    Some(reply)
}

/// `Basic base64(user:password)`; the scheme's name in any case.
fn decode(header: &str) -> Option<(String, String)> {
    let (scheme, token) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_decode_from_the_header() {
        assert_eq!(
            decode("Basic YWxpY2U6czNjcmV0"),
            Some(("alice".into(), "s3cret".into()))
        );
        assert_eq!(decode("basic YWxpY2U6czNjcmV0").unwrap().0, "alice");
        assert_eq!(decode("Bearer YWxpY2U6czNjcmV0"), None);
        assert_eq!(decode("Basic !!!"), None);
    }
}
