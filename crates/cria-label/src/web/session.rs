//! Who is asking: the session cookie (HttpOnly, SameSite=Strict) names a session in the
//! database; every request that changes something must carry that session's CSRF token in
//! `X-CSRF-Token`. Login itself is guarded the same way with a token from `GET /api/csrf`
//! held in its own cookie (double submit), so no other site can log a browser in.

use super::{LabelApp, WebError};
use crate::auth;
use crate::db::users::{self, Role, User};
use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, Method, header, request::Parts};
use std::sync::Arc;

pub const SESSION_COOKIE: &str = "cria_session";
pub const LOGIN_COOKIE: &str = "cria_login";
/// Sessions last a working week.
pub const SESSION_SECONDS: i64 = 7 * 24 * 3600;

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, for the whole site; `max_age` 0 deletes.
pub fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// Compares two tokens in constant time.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A logged-in person. Extracting it checks the session and, for anything but GET, the
/// CSRF token; a person still on their one-time password may only change it.
pub struct Session {
    pub user: User,
    pub csrf: String,
    /// The hash the session is stored under.
    pub token_hash: String,
}

impl Session {
    pub fn admin(&self) -> Result<(), WebError> {
        if self.user.role == Role::Admin {
            Ok(())
        } else {
            Err(WebError::forbidden("this page is for admins"))
        }
    }
}

/// Paths a person on a one-time password may still reach.
const FIRST_LOGIN: [&str; 3] = ["/api/me", "/api/password", "/api/logout"];

impl FromRequestParts<Arc<LabelApp>> for Session {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<LabelApp>,
    ) -> Result<Self, Self::Rejection> {
        let token = cookie(&parts.headers, SESSION_COOKIE)
            .ok_or_else(|| WebError::unauthorized("log in first"))?;
        let token_hash = auth::token_hash(&token);
        let (user, csrf) = app
            .db
            .read(|c| users::session(c, &token_hash))?
            .ok_or_else(|| WebError::unauthorized("your session has ended: log in again"))?;
        if parts.method != Method::GET {
            let given = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !same(given, &csrf) {
                return Err(WebError::forbidden(
                    "missing or wrong CSRF token (reload the page)",
                ));
            }
        }
        if user.must_change && !FIRST_LOGIN.contains(&parts.uri.path()) {
            return Err(WebError::forbidden(
                "choose your own password first (you logged in with a one-time password)",
            ));
        }
        Ok(Session {
            user,
            csrf,
            token_hash,
        })
    }
}
