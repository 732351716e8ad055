//! Errors of cria-data, each naming the file and, where there is one, the line and field.

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, DataError>;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Record {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{path}:{line}: not valid UTF-8 (byte offset {offset}); convert the file to UTF-8")]
    Utf8 {
        path: PathBuf,
        line: usize,
        offset: usize,
    },
    #[error("{0}")]
    Empty(String),
    #[error(transparent)]
    Core(#[from] cria_core::CoreError),
    #[error("{path}: {msg}")]
    Shard { path: PathBuf, msg: String },
}

impl DataError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
