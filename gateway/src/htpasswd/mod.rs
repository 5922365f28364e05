//! Password hashes of htpasswd files (ingress-nginx `auth-type: basic`): bcrypt
//! (`$2y$`, `$2a$`, `$2b$`, through the bcrypt crate), Apache's MD5 (`$apr1$`, on the md-5
//! crate: no maintained crate verifies it) and `{SHA}` (SHA-1, through ring). Any other
//! format verifies nothing: a user with such a hash cannot log in.

pub mod verified;

use base64::Engine;
use md5::{Digest, Md5};

/// Whether `password` matches `hash`.
pub fn verify(hash: &str, password: &str) -> bool {
    if hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$") {
        bcrypt::verify(password, hash).unwrap_or(false)
    } else if let Some(rest) = hash.strip_prefix("$apr1$") {
        let Some((salt, _)) = rest.split_once('$') else {
            return false;
        };
        constant_time_eq(apr1(password, salt).as_bytes(), hash.as_bytes())
    } else if let Some(digest) = hash.strip_prefix("{SHA}") {
        let sha =
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
        let encoded = base64::engine::general_purpose::STANDARD.encode(sha.as_ref());
        constant_time_eq(encoded.as_bytes(), digest.as_bytes())
    } else {
        false
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Apache's variant of MD5-crypt (Poul-Henning Kamp's algorithm with the magic `$apr1$`):
/// the full `$apr1$salt$checksum` string.
fn apr1(password: &str, salt: &str) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt.as_bytes()[..salt.len().min(8)];
    let pw = password.as_bytes();
    let alternate = Md5::new()
        .chain_update(pw)
        .chain_update(salt)
        .chain_update(pw)
        .finalize();
    let mut context = Md5::new();
    context.update(pw);
    context.update(MAGIC);
    context.update(salt);
    let mut left = pw.len();
    while left > 0 {
        let take = left.min(16);
        context.update(&alternate[..take]);
        left -= take;
    }
    let mut bits = pw.len();
    while bits > 0 {
        if bits & 1 == 1 {
            context.update([0u8]);
        } else {
            context.update(&pw[..1]);
        }
        bits >>= 1;
    }
    let mut digest = context.finalize();
    for round in 0..1000 {
        let mut next = Md5::new();
        if round % 2 == 1 {
            next.update(pw);
        } else {
            next.update(digest);
        }
        if round % 3 != 0 {
            next.update(salt);
        }
        if round % 7 != 0 {
            next.update(pw);
        }
        if round % 2 == 1 {
            next.update(digest);
        } else {
            next.update(pw);
        }
        digest = next.finalize();
    }
    let d = digest;
    let groups = [
        (d[0], d[6], d[12]),
        (d[1], d[7], d[13]),
        (d[2], d[8], d[14]),
        (d[3], d[9], d[15]),
        (d[4], d[10], d[5]),
    ];
    let mut checksum = String::with_capacity(22);
    for (a, b, c) in groups {
        push_crypt64(
            &mut checksum,
            (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c),
            4,
        );
    }
    push_crypt64(&mut checksum, u32::from(d[11]), 2);
    format!("$apr1${}${checksum}", String::from_utf8_lossy(salt))
}

/// crypt's base-64 alphabet, least significant six bits first.
fn push_crypt64(out: &mut String, mut value: u32, count: usize) {
    const ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for _ in 0..count {
        out.push(ALPHABET[(value & 0x3f) as usize] as char);
        value >>= 6;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apache_md5_matches_htpasswd() {
        // Produced by `htpasswd -m` / `openssl passwd -apr1` for "password".
        assert!(verify("$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00", "password"));
        assert!(verify("$apr1$RandSalt$PgCXHRrkpSt4cbyC2C6bm/", "password"));
        assert!(!verify("$apr1$RandSalt$PgCXHRrkpSt4cbyC2C6bm/", "passwore"));
    }

    #[test]
    fn bcrypt_and_sha1_and_nothing_else() {
        let hash = bcrypt::hash("s3cret", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        assert!(verify(&hash, "s3cret"));
        assert!(!verify(&hash, "s3creT"));
        assert!(verify("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "password"));
        assert!(!verify("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "Password"));
        assert!(
            !verify("rl5ZcT9xhkAkE", "password"),
            "DES crypt is not verified"
        );
        assert!(!ferry_model::BasicAuth::verifiable("rl5ZcT9xhkAkE"));
        assert!(ferry_model::BasicAuth::verifiable(
            "$apr1$RandSalt$PgCXHRrkpSt4cbyC2C6bm/"
        ));
    }
}
