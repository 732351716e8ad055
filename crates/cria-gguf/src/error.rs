//! Errors of GGUF export and loading, each naming the file and what in it is wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A GGUF file that is not what its header promises (or not GGUF at all).
    #[error("{path}: not a readable GGUF file: {msg}")]
    Format { path: PathBuf, msg: String },
    /// A GGUF file cria reads but a model it cannot run (architecture, tensor type, key).
    #[error("{path}: {msg}")]
    Model { path: PathBuf, msg: String },
    /// A checkpoint that cannot be written as GGUF faithfully.
    #[error("cannot export {what} as GGUF: {why}")]
    Export { what: String, why: String },
    #[error(transparent)]
    Core(#[from] cria_core::CoreError),
}

pub type Result<T> = std::result::Result<T, GgufError>;

impl GgufError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.into(),
            source,
        }
    }
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        GgufError::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn model(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        GgufError::Model {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn export(what: impl Into<String>, why: impl Into<String>) -> Self {
        GgufError::Export {
            what: what.into(),
            why: why.into(),
        }
    }
}
