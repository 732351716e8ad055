//! Logging in and out, choosing one's password, and labelling: the next task of a project,
//! a task by id (one's own only), and submitting it.

use super::session::{
    LOGIN_COOKIE, SESSION_COOKIE, SESSION_SECONDS, Session, cookie, same, set_cookie,
};
use super::{LabelApp, WebError, parse};
use crate::auth;
use crate::db::projects::{self, Kind};
use crate::db::tasks::{self, Submission};
use crate::db::users;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{AppendHeaders, IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

type Res = Result<Response, WebError>;

fn me_json(s: &Session) -> Value {
    json!({
        "name": s.user.name,
        "role": s.user.role.as_str(),
        "must_change": s.user.must_change,
        "csrf": s.csrf,
        "flags": tasks::FLAGS,
    })
}

/// A token for the login form, also set as a cookie the login must match.
pub async fn login_token(State(app): State<Arc<LabelApp>>) -> Response {
    let t = auth::token();
    (
        [(
            header::SET_COOKIE,
            set_cookie(LOGIN_COOKIE, &t, 3600, app.secure_cookies),
        )],
        axum::Json(json!({ "csrf": t })),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    name: String,
    password: String,
}

/// Opens a session for a name and password (limited per name and per address).
pub async fn login(
    State(app): State<Arc<LabelApp>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Res {
    let given = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match cookie(&headers, LOGIN_COOKIE) {
        Some(c) if same(&c, given) => {}
        _ => {
            return Err(WebError::forbidden(
                "missing or wrong login token (reload the page)",
            ));
        }
    }
    let l: Login = parse(&body)?;
    let ip = addr.ip().to_string();
    let keys = [l.name.as_str(), ip.as_str()];
    if let Some(wait) = app.limiter.locked(&keys) {
        let mut e = WebError::limited(format!(
            "too many failed logins: try again in {} minutes",
            wait.div_ceil(60)
        ));
        e.retry_after = Some(wait);
        return Err(e);
    }
    let found = app.db.read(|c| users::by_name(c, &l.name))?;
    // The hash is checked even for unknown names, so timing does not tell which names exist.
    let hash = found
        .as_ref()
        .map_or(DUMMY_HASH.as_str(), |(_, h)| h.as_str());
    let ok = auth::verify_password(hash, &l.password);
    let user = match found {
        Some((u, _)) if ok && !u.disabled && u.role != users::Role::Chat => u,
        _ => {
            app.limiter.failed(&keys);
            return Err(WebError::unauthorized("wrong name or password"));
        }
    };
    app.limiter.succeeded(&keys);
    let token = auth::token();
    let csrf = auth::token();
    app.db.tx(|t| {
        users::open_session(
            t,
            user.id,
            &auth::token_hash(&token),
            &csrf,
            SESSION_SECONDS,
        )
    })?;
    tracing::info!(user = %user.name, "logged in");
    let s = Session {
        user,
        csrf,
        token_hash: String::new(),
    };
    // Two cookies: `AppendHeaders` keeps both (a plain header list would keep the last).
    Ok((
        AppendHeaders([
            (
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &token, SESSION_SECONDS, app.secure_cookies),
            ),
            (
                header::SET_COOKIE,
                set_cookie(LOGIN_COOKIE, "", 0, app.secure_cookies),
            ),
        ]),
        axum::Json(me_json(&s)),
    )
        .into_response())
}

static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| auth::hash_password("not a password anyone has"));

pub async fn logout(State(app): State<Arc<LabelApp>>, s: Session) -> Res {
    app.db.tx(|t| users::close_session(t, &s.token_hash))?;
    Ok((
        [(
            header::SET_COOKIE,
            set_cookie(SESSION_COOKIE, "", 0, app.secure_cookies),
        )],
        axum::Json(json!({"logged_out": true})),
    )
        .into_response())
}

pub async fn me(s: Session) -> Response {
    axum::Json(me_json(&s)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    old: String,
    new: String,
}

/// Replaces one's password (the old one is asked again); other sessions of the person end.
pub async fn password(State(app): State<Arc<LabelApp>>, s: Session, body: Bytes) -> Res {
    let p: NewPassword = parse(&body)?;
    let (_, hash) = app
        .db
        .read(|c| users::by_name(c, &s.user.name))?
        .ok_or_else(|| WebError::unauthorized("no such user"))?;
    if !auth::verify_password(&hash, &p.old) {
        return Err(WebError::forbidden("the current password is wrong"));
    }
    if p.new.chars().count() < auth::MIN_PASSWORD {
        return Err(WebError::bad(format!(
            "choose a password of at least {} characters",
            auth::MIN_PASSWORD
        )));
    }
    if p.new == p.old {
        return Err(WebError::bad("the new password is the old one"));
    }
    let token = auth::token();
    app.db.tx(|t| {
        users::set_password(t, s.user.id, &auth::hash_password(&p.new), false)?;
        users::open_session(
            t,
            s.user.id,
            &auth::token_hash(&token),
            &s.csrf,
            SESSION_SECONDS,
        )
    })?;
    Ok((
        [(
            header::SET_COOKIE,
            set_cookie(SESSION_COOKIE, &token, SESSION_SECONDS, app.secure_cookies),
        )],
        axum::Json(json!({"changed": true})),
    )
        .into_response())
}

/// The projects people label (not the chat feedback), with this person's share of each.
pub async fn projects(State(app): State<Arc<LabelApp>>, s: Session) -> Res {
    let list = app.db.read(|c| {
        let mut out = vec![];
        for p in projects::list(c)?
            .into_iter()
            .filter(|p| p.kind != Kind::Feedback)
        {
            let mine = tasks::count_by(c, p.id, s.user.id)?;
            let progress = projects::progress(c, &p)?;
            out.push(json!({
                "id": p.id,
                "name": p.name,
                "kind": p.kind,
                "k": p.k,
                "instructions": p.instructions,
                "done_by_me": mine,
                "ready": progress.ready,
            }));
        }
        Ok(out)
    })?;
    Ok(axum::Json(json!({ "projects": list })).into_response())
}

/// The person's open task in a project, or a new one; `{"task": null}` when none is left.
pub async fn next(State(app): State<Arc<LabelApp>>, s: Session, Path(id): Path<i64>) -> Res {
    let task = app.db.tx(|t| {
        let p = projects::by_id(t, id)?
            .filter(|p| p.kind != Kind::Feedback)
            .ok_or_else(|| crate::error::LabelError::NotFound(format!("project {id}")))?;
        tasks::next(t, s.user.id, &p)
    })?;
    Ok(axum::Json(json!({ "task": task })).into_response())
}

pub async fn task(State(app): State<Arc<LabelApp>>, s: Session, Path(id): Path<i64>) -> Res {
    let task = app.db.read(|c| tasks::task(c, id, s.user.id))?;
    Ok(axum::Json(json!({ "task": task })).into_response())
}

/// Saves a label: answered only once its transaction has committed.
pub async fn submit(
    State(app): State<Arc<LabelApp>>,
    s: Session,
    Path(id): Path<i64>,
    body: Bytes,
) -> Res {
    let sub: Submission = parse(&body)?;
    let seconds = app.db.tx(|t| tasks::submit(t, s.user.id, id, &sub))?;
    Ok(axum::Json(json!({"saved": id, "seconds": seconds})).into_response())
}
