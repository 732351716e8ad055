//! cria-data: readers for the corpora cria trains on, token shards, and batching.

pub mod corpus;
pub mod error;
pub mod shards;

pub use error::{DataError, Result};
