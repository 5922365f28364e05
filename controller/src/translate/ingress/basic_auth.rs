//! The users of an `auth-type: basic` Ingress, from its Secret's htpasswd file (key
//! `auth`). A missing Secret or file keeps the Ingress from being served; a user whose hash
//! proxies cannot verify is reported (that user cannot log in).

use ferry_model::{BasicAuth, BasicAuthUser, PasswordHash};

use super::nginx::{Finding, Settings};
use crate::translate::Context;

/// Fills `settings.basic_auth` from the Secret it names, adding findings.
pub fn resolve(
    cx: &Context<'_>,
    namespace: &str,
    settings: &mut Settings,
    findings: &mut Vec<Finding>,
) {
    let Some(secret) = settings.basic_auth_secret.clone() else {
        return;
    };
    let (name, realm) = (secret.name, secret.realm);
    let secret_namespace = secret.namespace.unwrap_or_else(|| namespace.to_string());
    let finding = |message: String, blocks| Finding {
        name: "auth-secret".into(),
        reason: if blocks {
            "NotEnforced"
        } else {
            "InvalidValue"
        },
        message,
        blocks,
    };
    let Some(file) = htpasswd_file(cx, &secret_namespace, &name) else {
        let message = format!("Secret {secret_namespace}/{name} with an htpasswd file under the key auth not found; the Ingress is not served");
        findings.push(finding(message, true));
        return;
    };
    let mut users = Vec::new();
    for line in file
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let Some((user, hash)) = line.split_once(':') else {
            continue;
        };
        if !BasicAuth::verifiable(hash) {
            let message = format!("user {user:?}: a hash of a form proxies do not verify (bcrypt, $apr1$ or {{SHA}}); that user cannot log in");
            findings.push(finding(message, false));
            continue;
        }
        users.push(BasicAuthUser {
            name: user.into(),
            password_hash: PasswordHash(hash.into()),
        });
    }
    settings.basic_auth = Some(BasicAuth {
        realm: realm.into(),
        users: users.into(),
    });
}

fn htpasswd_file(cx: &Context<'_>, namespace: &str, name: &str) -> Option<String> {
    let secret = cx.inputs.secrets.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(namespace)
            && s.metadata.name.as_deref() == Some(name)
    })?;
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get("auth"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    from_data.or_else(|| secret.string_data.as_ref()?.get("auth").cloned())
}
