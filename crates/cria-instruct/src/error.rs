//! What can go wrong making instruction data, each with what a person needs to fix it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InstructError {
    /// A bad seed task: the file, its line and the field at fault.
    #[error("{path}:{line}: {field}: {msg}")]
    Seed {
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
    /// The teacher cannot be reached or does not answer as an OpenAI-compatible server does.
    #[error("teacher {url}: {msg}")]
    Teacher { url: String, msg: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, InstructError>;

impl InstructError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        InstructError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
