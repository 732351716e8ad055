//! Errors of cria-train.

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, TrainError>;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Core(#[from] cria_core::CoreError),
    #[error(transparent)]
    Data(#[from] cria_data::DataError),
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    /// A non-finite loss, gradient norm, validation loss or weight stopped the run; the
    /// message names the last good checkpoint (see `divergence::diverged`).
    #[error("{msg}")]
    Diverged { step: u64, msg: String },
    #[error("cannot resume from {path}: {msg}")]
    Resume { path: PathBuf, msg: String },
    /// A setting out of range: `key` is its path in the config (`train.lr`).
    #[error("{key}: {msg}")]
    Setting { key: String, msg: String },
    #[error("{0}")]
    Invalid(String),
}
