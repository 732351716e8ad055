//! Feedback from `cria serve`'s chat page (`--feedback-db`): routes the server mounts behind
//! its API keys. A thumb on a reply, and after "regenerate", which of the two replies is
//! better; they land in the labels database ([`crate::db::feedback`]) under the chat user of
//! the caller's key.

use crate::db::{Db, feedback};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use cria_serve::api::Caller;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The routes, for `cria_serve::api::serve_with`.
pub fn routes<S: Clone + Send + Sync + 'static>(db: Arc<Db>) -> Router<S> {
    Router::new()
        .route(
            "/feedback",
            get(|| async { axum::Json(json!({"enabled": true})) }),
        )
        .route("/feedback/rate", post(rate))
        .route("/feedback/compare", post(compare))
        .with_state(db)
}

/// A refused feedback post, answered in OpenAI's error shape as the rest of the API.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.1, "type": "invalid_request_error", "param": null, "code": null}});
        (self.0, axum::Json(body)).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Refused {
    Refused(status, message.into())
}

/// The JSON body of a feedback post (JSON only: a form on another site cannot send it).
fn body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, b: &[u8]) -> Result<T, Refused> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send feedback as application/json",
        ));
    }
    serde_json::from_slice(b)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("the request body: {e}")))
}

/// The conversation so far: `{role, content}` messages ending with the user's turn.
fn conversation(m: &[Value]) -> Result<(), Refused> {
    let ok = m
        .iter()
        .all(|x| x["role"].is_string() && x["content"].is_string())
        && m.last().is_some_and(|x| x["role"] == "user");
    if ok {
        Ok(())
    } else {
        Err(error(
            StatusCode::BAD_REQUEST,
            "messages: the conversation up to the reply, {role, content} turns ending with the user's",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rate {
    model: String,
    messages: Vec<Value>,
    reply: String,
    rating: String,
}

async fn rate(
    State(db): State<Arc<Db>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response, Refused> {
    let r: Rate = body(&headers, &b)?;
    conversation(&r.messages)?;
    let up = match r.rating.as_str() {
        "up" => true,
        "down" => false,
        _ => return Err(error(StatusCode::BAD_REQUEST, "rating: `up` or `down`")),
    };
    let id = db
        .tx(|t| feedback::rate(t, &caller.key, &r.model, &r.messages, &r.reply, up))
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(axum::Json(json!({"saved": id})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Compare {
    model: String,
    messages: Vec<Value>,
    answers: [String; 2],
    preferred: Option<usize>,
}

async fn compare(
    State(db): State<Arc<Db>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    b: Bytes,
) -> Result<Response, Refused> {
    let c: Compare = body(&headers, &b)?;
    conversation(&c.messages)?;
    let id = db
        .tx(|t| {
            feedback::compare(
                t,
                &caller.key,
                &c.model,
                &c.messages,
                c.answers,
                c.preferred,
            )
        })
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(axum::Json(json!({"saved": id})).into_response())
}
