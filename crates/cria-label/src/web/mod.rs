//! The labelling application over HTTP: one embedded page (`/`) and the JSON API it calls.
//! Annotators log in, take the next task of a project, and submit it; admins manage people
//! and projects, import prompts, watch agreement and export. Every submission is one SQLite
//! transaction, answered only after it has committed.

mod admin;
mod annotate;
pub mod feedback;
pub mod session;

use crate::auth::LoginLimiter;
use crate::db::Db;
use crate::error::LabelError;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use cria_serve::ServedModel;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// The application's state.
pub struct LabelApp {
    pub db: Arc<Db>,
    pub limiter: LoginLimiter,
    /// The model that samples answers to rank (none: only demonstrations and gold items).
    pub model: Option<Arc<ServedModel>>,
    /// Mark cookies `Secure` (when the page is reached over HTTPS).
    pub secure_cookies: bool,
}

impl LabelApp {
    pub fn new(db: Arc<Db>, model: Option<Arc<ServedModel>>) -> Arc<LabelApp> {
        Arc::new(LabelApp {
            db,
            limiter: LoginLimiter::default(),
            model,
            secure_cookies: false,
        })
    }
}

/// An error as the page reads it: `{"error": {"message"}}` with its status.
#[derive(Debug)]
pub struct WebError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl WebError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        WebError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn limited(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, message)
    }
}

impl From<LabelError> for WebError {
    fn from(e: LabelError) -> Self {
        match &e {
            LabelError::Conflict(m) => Self::new(StatusCode::CONFLICT, m.clone()),
            LabelError::Invalid(_) | LabelError::Record { .. } => Self::bad(e.to_string()),
            LabelError::NotFound(_) => Self::not_found(e.to_string()),
            _ => {
                tracing::error!("{e}");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(json!({"error": {"message": self.message}})),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                s.to_string().parse().expect("a number"),
            );
        }
        r
    }
}

/// A JSON body of type `T`, or a 400 naming what is wrong with it.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, WebError> {
    serde_json::from_slice(body).map_err(|e| WebError::bad(format!("the request body: {e}")))
}

/// Every route of the labelling application.
pub fn router(app: Arc<LabelApp>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/csrf", get(annotate::login_token))
        .route("/api/login", post(annotate::login))
        .route("/api/logout", post(annotate::logout))
        .route("/api/me", get(annotate::me))
        .route("/api/password", post(annotate::password))
        .route("/api/projects", get(annotate::projects))
        .route("/api/projects/{id}/next", post(annotate::next))
        .route(
            "/api/tasks/{id}",
            get(annotate::task).post(annotate::submit),
        )
        .merge(admin::routes())
        .fallback(|| async { WebError::not_found("no such page") })
        .layer(axum::extract::DefaultBodyLimit::max(32 << 20))
        .with_state(app)
}

async fn page() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        Html(include_str!("label.html")),
    )
        .into_response()
}

/// Serves the application on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<LabelApp>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
