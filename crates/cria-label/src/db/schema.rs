//! The schema, as ordered migrations: migration `i` takes `user_version` from `i` to `i + 1`.
//! A database newer than this build is refused rather than touched.

use crate::error::{LabelError, Result};
use rusqlite::Connection;
use std::path::Path;

const MIGRATIONS: &[&str] = &[
    // 1: people, sessions, projects of prompts with sampled answers, assignments and labels.
    r#"
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'annotator', 'chat')),
        password TEXT NOT NULL,
        created INTEGER NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        -- Set while the password is the one-time password `user add` printed.
        must_change INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        csrf TEXT NOT NULL,
        created INTEGER NOT NULL,
        expires INTEGER NOT NULL
    );
    CREATE TABLE projects (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('demonstration', 'ranking', 'pairwise', 'feedback')),
        k INTEGER NOT NULL,
        overlap INTEGER NOT NULL,
        sampling TEXT NOT NULL,
        instructions TEXT NOT NULL DEFAULT '',
        created INTEGER NOT NULL
    );
    CREATE TABLE prompts (
        id INTEGER PRIMARY KEY,
        project_id INTEGER NOT NULL REFERENCES projects(id),
        messages TEXT NOT NULL,
        gold TEXT,
        source TEXT NOT NULL DEFAULT '',
        created INTEGER NOT NULL
    );
    CREATE INDEX prompts_by_project ON prompts(project_id);
    CREATE TABLE answers (
        id INTEGER PRIMARY KEY,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id),
        idx INTEGER NOT NULL,
        text TEXT NOT NULL,
        model TEXT NOT NULL,
        UNIQUE (prompt_id, idx)
    );
    CREATE TABLE assignments (
        id INTEGER PRIMARY KEY,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id),
        user_id INTEGER NOT NULL REFERENCES users(id),
        status TEXT NOT NULL CHECK (status IN ('open', 'done', 'skipped')),
        shown INTEGER NOT NULL,
        UNIQUE (prompt_id, user_id)
    );
    CREATE INDEX assignments_by_user ON assignments(user_id, status);
    CREATE TABLE labels (
        id INTEGER PRIMARY KEY,
        assignment_id INTEGER NOT NULL UNIQUE REFERENCES assignments(id),
        body TEXT NOT NULL,
        seconds REAL NOT NULL,
        created INTEGER NOT NULL
    );
    "#,
];

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`VERSION`], each migration in its own transaction.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let err = |source| LabelError::Db {
        path: path.to_path_buf(),
        source,
    };
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if found > VERSION {
        return Err(LabelError::NewerSchema {
            path: path.to_path_buf(),
            found,
            known: VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let t = conn.transaction().map_err(err)?;
        t.execute_batch(sql).map_err(err)?;
        t.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(err)?;
        t.commit().map_err(err)?;
        tracing::info!(version = i + 1, "{}: schema migrated", path.display());
    }
    Ok(())
}
