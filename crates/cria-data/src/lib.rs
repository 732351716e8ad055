//! cria-data: readers for the corpora cria trains on, token shards, and batching.

pub mod chat;
pub mod corpus;
pub mod error;
pub mod evalsets;
pub mod jinja;
pub mod message;
pub mod prefs;
pub mod records;
pub mod sft;
pub mod shards;
pub mod tasks;
pub mod template;

pub use error::{DataError, Result};
