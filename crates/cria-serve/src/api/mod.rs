//! The OpenAI-compatible HTTP API (axum on tokio) over the models' engines.
//!
//! Routes: `GET /health` (503 until the models are loaded), `GET /v1/models`,
//! `GET /v1/models/{id}`, `POST /v1/chat/completions`, `POST /v1/completions`,
//! `POST /tokenize`, `POST /detokenize`, `GET /metrics`, and the web chat page at `/`.
//! With API keys configured every route but `/health` and the page needs
//! `Authorization: Bearer KEY`. `POST /admin/reload` loads the models again from where they
//! came (as SIGHUP does) and needs one of the admin keys, which are kept apart from the API's.

pub mod chat;
pub mod completions;
pub mod error;
mod follow;
pub mod keys;
pub mod metrics;
pub mod params;
mod run;
pub mod text;

use crate::model::ServedModel;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use error::ApiError;
use keys::ApiKey;
use metrics::Metrics;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How the server treats requests.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Keys that may call the API; none means no key is needed.
    pub keys: Vec<ApiKey>,
    /// The largest request body, in bytes.
    pub body_limit: usize,
    /// Requests one key may have running at once (0: no limit).
    pub per_key: usize,
    /// Log prompts and replies (off by default: they are the company's data).
    pub log_requests: bool,
    /// Web origins (`https://intranet.example.com`, or `*`) whose pages may call the API from
    /// a browser (CORS); none by default.
    pub allow_origins: Vec<String>,
    /// Keys that may call `/admin/…`; none means the admin routes are closed.
    pub admin_keys: Vec<ApiKey>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            keys: vec![],
            body_limit: 4 << 20,
            per_key: 0,
            log_requests: false,
            allow_origins: vec![],
            admin_keys: vec![],
        }
    }
}

/// Loads the served models again from where they came (the binary knows where): the names
/// of the models then served, or why loading failed (the old ones are still served then).
pub type Reloader = Arc<
    dyn Fn() -> futures_util::future::BoxFuture<'static, Result<Vec<String>, String>> + Send + Sync,
>;

/// The server's state: its models (replaced whole on reload; requests running keep the ones
/// they started on) and counters.
pub struct App {
    models: RwLock<Vec<Arc<ServedModel>>>,
    ready: AtomicBool,
    pub cfg: ServerConfig,
    pub metrics: Arc<Metrics>,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    reloader: std::sync::OnceLock<Reloader>,
}

/// Who is calling: the name of the key they gave (empty without keys).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub key: String,
}

impl App {
    pub fn new(cfg: ServerConfig) -> Arc<App> {
        Arc::new(App {
            models: RwLock::new(vec![]),
            ready: AtomicBool::new(false),
            cfg,
            metrics: Arc::new(Metrics::default()),
            limits: Mutex::new(HashMap::new()),
            reloader: std::sync::OnceLock::new(),
        })
    }

    /// What `POST /admin/reload` runs (set once, by whoever loaded the models).
    pub fn set_reloader(&self, r: Reloader) {
        let _ = self.reloader.set(r);
    }

    /// Serves `models` from now on (requests running finish on the ones they started with).
    pub fn set_models(&self, models: Vec<ServedModel>) {
        let models = models.into_iter().map(Arc::new).collect();
        *self.models.write().expect("models lock") = models;
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn models(&self) -> Vec<Arc<ServedModel>> {
        self.models.read().expect("models lock").clone()
    }

    /// The model a request names (the only one when it names none).
    pub fn model(&self, name: Option<&str>) -> Result<Arc<ServedModel>, ApiError> {
        if !self.ready.load(Ordering::SeqCst) {
            return Err(ApiError::unavailable("the model is still loading"));
        }
        let models = self.models();
        match name {
            Some(n) if !n.is_empty() => {
                models.iter().find(|m| m.id == n).cloned().ok_or_else(|| {
                    ApiError::model_not_found(
                        n,
                        &models.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
                    )
                })
            }
            _ if models.len() == 1 => Ok(models[0].clone()),
            _ => Err(ApiError::bad_param(
                "model",
                "`model` is required: this server has several models (GET /v1/models lists them)",
            )),
        }
    }

    /// A slot under the caller's concurrency limit, held until their request ends.
    fn permit(&self, caller: &Caller) -> Result<Arc<Option<OwnedSemaphorePermit>>, ApiError> {
        if self.cfg.per_key == 0 {
            return Ok(Arc::new(None));
        }
        let sem = self
            .limits
            .lock()
            .expect("limits lock")
            .entry(caller.key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.cfg.per_key)))
            .clone();
        match sem.try_acquire_owned() {
            Ok(p) => Ok(Arc::new(Some(p))),
            Err(_) => Err(ApiError::rate_limited(format!(
                "this key already has {} requests running, its limit; retry when one ends",
                self.cfg.per_key
            ))),
        }
    }
}

/// The API's routes.
pub fn router(app: Arc<App>) -> Router {
    router_with(app, Router::new())
}

/// The API's routes with `extra` ones behind the same API keys (they see the [`Caller`]), such
/// as the chat page's feedback routes of `cria serve --feedback-db`.
pub fn router_with(app: Arc<App>, extra: Router<Arc<App>>) -> Router {
    let api = Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(get_model))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/metrics", get(metrics))
        .merge(extra)
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize));
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/admin/reload", post(reload))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(app.cfg.body_limit))
        .layer(middleware::from_fn_with_state(app.clone(), cors))
        .with_state(app)
}

async fn authorize(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let caller = if app.cfg.keys.is_empty() {
        Caller::default()
    } else {
        let Some(given) = bearer(req.headers()) else {
            app.metrics.error(401);
            return ApiError::unauthorized(
                "this server needs an API key: send `Authorization: Bearer KEY`",
            )
            .into_response();
        };
        match keys::find(&app.cfg.keys, given) {
            Some(k) => Caller {
                key: k.name.clone(),
            },
            None => {
                app.metrics.error(401);
                return ApiError::unauthorized("the API key is not one this server accepts")
                    .into_response();
            }
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// CORS for the configured origins only: a preflight is answered here (before any key is
/// asked for), and responses to an allowed origin say so.
async fn cors(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| app.cfg.allow_origins.iter().any(|a| a == "*" || a == o))
        .map(str::to_string);
    let Some(origin) = origin else {
        return next.run(req).await;
    };
    let preflight = req.method() == axum::http::Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut r = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            "GET, POST, OPTIONS".parse().expect("a header"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "authorization, content-type".parse().expect("a header"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            "600".parse().expect("a header"),
        );
        r
    } else {
        next.run(req).await
    };
    if let Ok(v) = origin.parse() {
        r.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    r.headers_mut()
        .insert(header::VARY, "Origin".parse().expect("a header"));
    r
}

/// The body, or the error a client expects (413 past the limit).
fn body(app: &App, b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(app.cfg.body_limit),
        _ => ApiError::bad_request(format!("could not read the request body: {e}")),
    })
}

/// An error response, counted.
fn answer(app: &App, r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(|e| {
        app.metrics.error(e.status.as_u16());
        e.into_response()
    })
}

async fn chat_completions(
    State(app): State<Arc<App>>,
    axum::Extension(caller): axum::Extension<Caller>,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let r = match body(&app, b) {
        Ok(b) => chat::handle(&app, &caller, &b).await,
        Err(e) => Err(e),
    };
    answer(&app, r)
}

async fn completions(
    State(app): State<Arc<App>>,
    axum::Extension(caller): axum::Extension<Caller>,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let r = match body(&app, b) {
        Ok(b) => completions::handle(&app, &caller, &b).await,
        Err(e) => Err(e),
    };
    answer(&app, r)
}

/// `POST /admin/reload`: loads every model again from where it came; answers with the names
/// served from then on. Requests running finish on the models they started with.
async fn reload(State(app): State<Arc<App>>, headers: axum::http::HeaderMap) -> Response {
    let r = async {
        if app.cfg.admin_keys.is_empty() {
            return Err(ApiError::forbidden(
                "this server has no admin keys: start it with --admin-key-file to reload over \
                 HTTP, or send it SIGHUP",
            ));
        }
        let given = bearer(&headers).ok_or_else(|| {
            ApiError::unauthorized("/admin/reload needs an admin key: `Authorization: Bearer KEY`")
        })?;
        let Some(who) = keys::find(&app.cfg.admin_keys, given) else {
            return Err(ApiError::unauthorized(
                "the key is not one of this server's admin keys",
            ));
        };
        let reloader = app
            .reloader
            .get()
            .cloned()
            .ok_or_else(|| ApiError::unavailable("the models are still loading"))?;
        tracing::info!(admin = %who.name, "reload asked for over HTTP");
        let names = reloader().await.map_err(|e| {
            ApiError::internal(format!("reload failed, still serving the old models: {e}"))
        })?;
        Ok(axum::Json(json!({"reloaded": names})).into_response())
    }
    .await;
    answer(&app, r)
}

/// The key of an `Authorization: Bearer KEY` header.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

async fn health(State(app): State<Arc<App>>) -> Response {
    if app.ready.load(Ordering::SeqCst) {
        axum::Json(json!({"status": "ok"})).into_response()
    } else {
        ApiError::unavailable("loading").into_response()
    }
}

fn model_json(m: &ServedModel) -> Value {
    json!({
        "id": m.id,
        "object": "model",
        "created": m.created,
        "owned_by": "cria",
        "root": m.root,
        "parent": m.parent,
        "max_model_len": m.engine.max_len(),
    })
}

async fn list_models(State(app): State<Arc<App>>) -> Response {
    let data: Vec<Value> = app.models().iter().map(|m| model_json(m)).collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn get_model(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let r = app
        .model(Some(&id))
        .map(|m| axum::Json(model_json(&m)).into_response());
    answer(&app, r)
}

async fn tokenize(State(app): State<Arc<App>>, b: Result<Bytes, BytesRejection>) -> Response {
    let r = (|| {
        let o = params::object(&body(&app, b)?)?;
        let m = app.model(params::string(&o, "model")?)?;
        let add_special = match o.get("add_special_tokens") {
            Some(Value::Bool(b)) => *b,
            _ => true,
        };
        let text = params::string(&o, "prompt")?
            .ok_or_else(|| ApiError::bad_param("prompt", "`prompt` (a string) is required"))?;
        let ids = m
            .tok
            .encode(text, add_special)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(axum::Json(json!({
            "count": ids.len(),
            "max_model_len": m.engine.max_len(),
            "tokens": ids,
        }))
        .into_response())
    })();
    answer(&app, r)
}

async fn detokenize(State(app): State<Arc<App>>, b: Result<Bytes, BytesRejection>) -> Response {
    let r = (|| {
        let o = params::object(&body(&app, b)?)?;
        let m = app.model(params::string(&o, "model")?)?;
        let bad = || ApiError::bad_param("tokens", "`tokens` must be a list of token ids");
        let ids = o
            .get("tokens")
            .and_then(Value::as_array)
            .ok_or_else(bad)?
            .iter()
            .map(|t| {
                t.as_u64()
                    .filter(|&t| t < m.tok.vocab_size() as u64)
                    .map(|t| t as u32)
            })
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(bad)?;
        let text = m
            .tok
            .decode(&ids, false)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(axum::Json(json!({"prompt": text})).into_response())
    })();
    answer(&app, r)
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app.metrics.render(&app.models());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn page() -> Html<&'static str> {
    Html(include_str!("../web/index.html"))
}

async fn not_found(State(app): State<Arc<App>>, req: Request) -> Response {
    app.metrics.error(404);
    ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path())).into_response()
}

async fn wrong_method(req: Request) -> Response {
    let mut e = ApiError::bad_request(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ));
    e.status = StatusCode::METHOD_NOT_ALLOWED;
    e.into_response()
}

/// Serves `app` on `listener` until `shutdown` resolves; requests running then may finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, Router::new(), shutdown).await
}

/// [`serve`] with `extra` routes behind the API keys ([`router_with`]).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    extra: Router<Arc<App>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router_with(app, extra))
        .with_graceful_shutdown(shutdown)
        .await
}
