//! The admin's side: people (add, reset a password, disable), projects (create, import
//! prompts), quality (progress, agreement, reports) and export. Every route checks the role.

use super::session::Session;
use super::{LabelApp, WebError, parse};
use crate::auth;
use crate::db::projects::{self, NewProject};
use crate::db::tasks;
use crate::db::users::{self, Role};
use crate::{export, import, quality};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type Res = Result<Response, WebError>;

pub fn routes() -> Router<Arc<LabelApp>> {
    Router::new()
        .route("/api/admin/users", get(users_list).post(user_add))
        .route("/api/admin/users/{id}/reset", post(user_reset))
        .route("/api/admin/users/{id}/disable", post(user_disable))
        .route("/api/admin/projects", get(projects_list).post(project_add))
        .route("/api/admin/projects/{id}/prompts", post(prompts_add))
        .route("/api/admin/projects/{id}/stats", get(stats))
        .route("/api/admin/export", get(export_file))
}

async fn users_list(State(app): State<Arc<LabelApp>>, s: Session) -> Res {
    s.admin()?;
    let list: Vec<Value> = app
        .db
        .read(users::list)?
        .into_iter()
        .filter(|u| u.role != Role::Chat)
        .map(|u| {
            json!({"id": u.id, "name": u.name, "role": u.role.as_str(),
                   "disabled": u.disabled, "must_change": u.must_change})
        })
        .collect();
    Ok(axum::Json(json!({ "users": list })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    role: String,
}

/// Adds a person; the answer holds their one-time password (shown once).
async fn user_add(State(app): State<Arc<LabelApp>>, s: Session, body: Bytes) -> Res {
    s.admin()?;
    let u: NewUser = parse(&body)?;
    let role = match Role::parse(&u.role) {
        Some(r @ (Role::Admin | Role::Annotator)) => r,
        _ => return Err(WebError::bad("role: `admin` or `annotator`")),
    };
    let password = auth::one_time_password();
    let hash = auth::hash_password(&password);
    let user = app.db.tx(|t| users::add(t, &u.name, role, &hash))?;
    tracing::info!(admin = %s.user.name, user = %user.name, "user added");
    Ok(axum::Json(json!({"name": user.name, "password": password})).into_response())
}

async fn user_reset(State(app): State<Arc<LabelApp>>, s: Session, Path(id): Path<i64>) -> Res {
    s.admin()?;
    let password = auth::one_time_password();
    let hash = auth::hash_password(&password);
    let name = app.db.tx(|t| {
        let u = users::by_id(t, id)?
            .filter(|u| u.role != Role::Chat)
            .ok_or_else(|| crate::error::LabelError::NotFound(format!("user {id}")))?;
        users::set_password(t, id, &hash, true)?;
        Ok(u.name)
    })?;
    Ok(axum::Json(json!({"name": name, "password": password})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Disable {
    disabled: bool,
}

async fn user_disable(
    State(app): State<Arc<LabelApp>>,
    s: Session,
    Path(id): Path<i64>,
    body: Bytes,
) -> Res {
    s.admin()?;
    let d: Disable = parse(&body)?;
    if id == s.user.id && d.disabled {
        return Err(WebError::bad("you cannot disable yourself"));
    }
    app.db.tx(|t| users::set_disabled(t, id, d.disabled))?;
    Ok(axum::Json(json!({"id": id, "disabled": d.disabled})).into_response())
}

async fn projects_list(State(app): State<Arc<LabelApp>>, s: Session) -> Res {
    s.admin()?;
    let list = app.db.read(|c| {
        projects::list(c)?
            .into_iter()
            .map(|p| {
                let progress = projects::progress(c, &p)?;
                Ok(json!({"project": p, "progress": progress}))
            })
            .collect::<crate::error::Result<Vec<_>>>()
    })?;
    Ok(axum::Json(json!({ "projects": list })).into_response())
}

async fn project_add(State(app): State<Arc<LabelApp>>, s: Session, body: Bytes) -> Res {
    s.admin()?;
    let p: NewProject = parse(&body)?;
    if let Some(m) = &app.model {
        let k = p.check()?;
        if k > m.engine.parallel() {
            return Err(WebError::bad(format!(
                "k {k}: the model samples at most {} answers at once (start `cria label serve` with --parallel {k} or more)",
                m.engine.parallel()
            )));
        }
    }
    let project = app.db.tx(|t| projects::create(t, &p))?;
    Ok(axum::Json(json!({ "project": project })).into_response())
}

/// Imports an uploaded prompt file (its name in `X-File-Name`, for the messages).
async fn prompts_add(
    State(app): State<Arc<LabelApp>>,
    s: Session,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Res {
    s.admin()?;
    let project = app
        .db
        .read(|c| projects::by_id(c, id))?
        .ok_or_else(|| WebError::not_found(format!("project {id}")))?;
    let name = headers
        .get("x-file-name")
        .and_then(|v| v.to_str().ok())
        .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).to_string())
        .filter(|n| !n.is_empty() && !n.starts_with('.'))
        .unwrap_or_else(|| "upload.jsonl".to_string());
    // The readers take files: the upload goes to a private temporary directory.
    let dir = std::env::temp_dir().join(format!("cria-import-{}", auth::token()));
    std::fs::create_dir_all(&dir).map_err(|e| WebError::bad(e.to_string()))?;
    let path = dir.join(&name);
    let result = std::fs::write(&path, &body)
        .map_err(|e| WebError::bad(e.to_string()))
        .and_then(|_| import::import(&app.db, &project, &path).map_err(WebError::from));
    let _ = std::fs::remove_dir_all(&dir);
    let prefix = format!("{}/", dir.display());
    let n = result.map_err(|mut e| {
        e.message = e.message.replace(&prefix, "");
        e
    })?;
    tracing::info!(admin = %s.user.name, project = %project.name, prompts = n, "prompts imported");
    Ok(axum::Json(json!({ "imported": n })).into_response())
}

async fn stats(State(app): State<Arc<LabelApp>>, s: Session, Path(id): Path<i64>) -> Res {
    s.admin()?;
    let (project, progress, labels, reports) = app.db.read(|c| {
        let p = projects::by_id(c, id)?
            .ok_or_else(|| crate::error::LabelError::NotFound(format!("project {id}")))?;
        Ok((
            p.clone(),
            projects::progress(c, &p)?,
            tasks::labels(c, &p)?,
            tasks::reports(c, &p)?,
        ))
    })?;
    let q = quality::measure(&labels);
    let reports: Vec<Value> = reports
        .into_iter()
        .map(|(prompt, by, reason)| json!({"prompt": prompt, "annotator": by, "reason": reason}))
        .collect();
    Ok(axum::Json(json!({
        "project": project,
        "progress": progress,
        "quality": q,
        "agreement": q.agreement.rate(),
        "gold": q.gold.rate(),
        "reports": reports,
    }))
    .into_response())
}

#[derive(Deserialize)]
struct ExportQuery {
    what: String,
    #[serde(default)]
    merge: bool,
    #[serde(default)]
    project: Option<String>,
}

/// The labels as a JSONL file cria's stages read.
async fn export_file(
    State(app): State<Arc<LabelApp>>,
    s: Session,
    Query(q): Query<ExportQuery>,
) -> Res {
    s.admin()?;
    let only = q.project.as_deref();
    let (records, _) = match q.what.as_str() {
        "sft" => export::demonstrations(&app.db, only)?,
        "rankings" => export::rankings(&app.db, only, q.merge)?,
        "ratings" => export::ratings(&app.db)?,
        other => {
            return Err(WebError::bad(format!(
                "what `{other}`: sft, rankings or ratings"
            )));
        }
    };
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/jsonl".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.jsonl\"", q.what),
            ),
        ],
        text,
    )
        .into_response())
}
