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
    /// A malformed record or line: `line` is `None` for a JSON list (the message names the
    /// record) or a whole file.
    #[error("{}: {msg}", location(.path, *.line))]
    Record {
        path: PathBuf,
        line: Option<usize>,
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

fn location(path: &std::path::Path, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}:{l}", path.display()),
        None => path.display().to_string(),
    }
}

impl DataError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
