//! What can go wrong in the labelling tool, each carrying what a person needs to act on it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("{path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{path}: the database's schema version is {found}, newer than this cria knows ({known}); use a newer cria"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// A query failed (the database's path is added where the query ran, see `Db::tx`).
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    /// A bad record in an input file: the file, its line and the field at fault.
    #[error("{path}:{line}: {field}: {msg}")]
    Record {
        path: PathBuf,
        line: usize,
        field: String,
        msg: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A request or command the tool refuses, with why.
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    /// Done already (a task submitted twice).
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T> = std::result::Result<T, LabelError>;

impl LabelError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        LabelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
