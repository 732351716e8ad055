//! Passwords, tokens and the login limiter. Passwords are hashed with Argon2id (the `argon2`
//! crate's defaults: 19 MiB, 2 passes, as OWASP recommends) in the PHC string format; tokens
//! are 256 random bits from the operating system.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `n` random bytes from the operating system.
fn random(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the operating system's random source");
    b
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A session or CSRF token: 256 random bits, hex.
pub fn token() -> String {
    hex(&random(32))
}

/// How a session token is stored (a stolen database holds no usable token).
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// A one-time password people can read aloud: 4 groups of 4 from an alphabet without
/// look-alikes (about 80 bits).
pub fn one_time_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let groups: Vec<String> = random(16)
        .chunks(4)
        .map(|c| {
            c.iter()
                .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
                .collect()
        })
        .collect();
    groups.join("-")
}

/// The Argon2id PHC string of `password` with a fresh salt.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&random(16)).expect("16 bytes make a salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("hashing with default parameters")
        .to_string()
}

/// Whether `password` matches the stored `hash` (false for anything unparsable, such as the
/// `!` of users who never log in).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The shortest password people may choose.
pub const MIN_PASSWORD: usize = 10;

/// Failed logins per user name and per client address: after `max` failures within `window`
/// the next tries are refused until the window has passed (a success clears the count).
pub struct LoginLimiter {
    max: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::new(5, Duration::from_secs(15 * 60))
    }
}

impl LoginLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        LoginLimiter {
            max,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `keys` may try again, when any of them is locked.
    pub fn locked(&self, keys: &[&str]) -> Option<u64> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| map.get(*k))
            .filter(|(n, since)| *n >= self.max && since.elapsed() < self.window)
            .map(|(_, since)| (self.window - since.elapsed()).as_secs() + 1)
            .max()
    }

    pub fn failed(&self, keys: &[&str]) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            let e = map.entry(k.to_string()).or_insert((0, Instant::now()));
            if e.1.elapsed() >= self.window {
                *e = (0, Instant::now());
            }
            e.0 += 1;
        }
    }

    pub fn succeeded(&self, keys: &[&str]) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            map.remove(*k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let a = hash_password("correct horse");
        let b = hash_password("correct horse");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_password(&a, "correct horse"));
        assert!(!verify_password(&a, "correct horse!"));
        assert!(
            !verify_password("!", ""),
            "an unusable hash matches nothing"
        );
    }

    #[test]
    fn tokens_and_one_time_passwords_are_fresh() {
        assert_ne!(token(), token());
        assert_eq!(token().len(), 64);
        assert_eq!(token_hash("a"), token_hash("a"));
        let p = one_time_password();
        assert_eq!(p.len(), 19);
        assert_ne!(p, one_time_password());
    }

    #[test]
    fn the_limiter_locks_after_the_failures_and_a_success_clears() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        for _ in 0..2 {
            l.failed(&["ana", "10.0.0.1"]);
        }
        assert_eq!(l.locked(&["ana"]), None);
        l.failed(&["ana", "10.0.0.1"]);
        assert!(l.locked(&["ana"]).is_some_and(|s| s <= 60));
        assert!(
            l.locked(&["bo", "10.0.0.1"]).is_some(),
            "the address is locked too"
        );
        l.succeeded(&["ana"]);
        assert_eq!(l.locked(&["ana"]), None);
        let short = LoginLimiter::new(1, Duration::from_millis(1));
        short.failed(&["x"]);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.locked(&["x"]), None, "the window passes");
    }
}
