//! Credentials that passed a slow hash (bcrypt, `$apr1$`) lately, so a browser's every
//! request does not cost a bcrypt round (tens of milliseconds of a worker thread each).
//! Only successes are kept, under a 128-bit keyed hash of (stored hash, user, password) —
//! never the password — for [`TTL`]; a changed password or hash is a different key. The
//! table is bounded: full, it is emptied.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(300);
const CAPACITY: usize = 4096;

struct Verified {
    keys: [std::collections::hash_map::RandomState; 2],
    at: Mutex<HashMap<u128, Instant>>,
}

fn table() -> &'static Verified {
    static TABLE: OnceLock<Verified> = OnceLock::new();
    TABLE.get_or_init(|| Verified {
        keys: [Default::default(), Default::default()],
        at: Mutex::new(HashMap::new()),
    })
}

fn key(table: &Verified, hash: &str, user: &str, password: &str) -> u128 {
    let [a, b] = &table.keys;
    let high = a.hash_one((hash, user, password)) as u128;
    let low = b.hash_one((hash, user, password)) as u128;
    (high << 64) | low
}

/// Whether `password` is `user`'s, by `hash` — from the table when it passed lately.
pub fn verify(hash: &str, user: &str, password: &str) -> bool {
    let slow = !hash.starts_with("{SHA}");
    if !slow {
        return super::verify(hash, password);
    }
    let table = table();
    let key = key(table, hash, user, password);
    let lock = || table.at.lock().unwrap_or_else(|p| p.into_inner());
    if lock().get(&key).is_some_and(|at| at.elapsed() < TTL) {
        return true;
    }
    if !super::verify(hash, password) {
        return false;
    }
    let mut at = lock();
    if at.len() >= CAPACITY {
        at.clear();
    }
    at.insert(key, Instant::now());
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_verified_password_is_remembered_and_a_wrong_one_never() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        assert!(super::verify(&hash, "alice", "s3cret"));
        let table = super::table();
        let remembered = super::key(table, &hash, "alice", "s3cret");
        assert!(
            table.at.lock().unwrap().contains_key(&remembered),
            "remembered"
        );
        assert!(super::verify(&hash, "alice", "s3cret"));
        assert!(!super::verify(&hash, "alice", "wrong"));
        let wrong = super::key(table, &hash, "alice", "wrong");
        assert!(
            !table.at.lock().unwrap().contains_key(&wrong),
            "failures are not kept"
        );
        assert!(!super::verify(&hash, "alice", "s3cret!"));
        let other = bcrypt::hash("other", 4).unwrap();
        assert!(
            !super::verify(&other, "alice", "s3cret"),
            "the stored hash is in the key"
        );
    }
}
