//! The labels database: SQLite in WAL mode, every user action one transaction, the schema
//! version in `user_version` with ordered migrations ([`schema`]), every query with bound
//! parameters. A submission is acknowledged only after its transaction has committed with
//! `synchronous = FULL`, so a crash (even of the machine) never loses an acknowledged label.

pub mod feedback;
pub mod projects;
mod schema;
pub mod tasks;
pub mod users;

use crate::error::{LabelError, Result};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use schema::VERSION;

/// One open database, shared by the web handlers (a lock around one connection: labelling is
/// human-paced, and one writer is what SQLite allows anyway).
pub struct Db {
    conn: Mutex<Connection>,
    pub path: PathBuf,
}

impl Db {
    /// Opens (creating it when missing) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Db> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| LabelError::io(dir, e))?;
        }
        let err = |source| LabelError::Db {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        schema::migrate(&mut conn, path)?;
        Ok(Db {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// Runs `f` in one immediate transaction (it takes the write lock at once, so two
    /// submissions never interleave), committed when `f` succeeds and rolled back otherwise.
    pub fn tx<T>(&self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let t = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let out = f(&t).map_err(|e| self.located(e))?;
        t.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Runs read-only `f` on the connection.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|e| self.located(e))
    }

    fn err(&self, source: rusqlite::Error) -> LabelError {
        LabelError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// A query's error with this database's path.
    fn located(&self, e: LabelError) -> LabelError {
        match e {
            LabelError::Sql(s) => self.err(s),
            other => other,
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
