//! cria-instruct: instruction data from a handful of seed tasks (self-instruct, Wang et al.
//! 2022; Stanford Alpaca's variant), with any teacher the company runs itself.
//!
//! - [`seeds`]: seed tasks in the published format.
//! - [`teacher`]: an OpenAI-compatible endpoint or a local checkpoint, with retries.
//! - [`prompts`], [`filters`], [`rouge`]: what the teacher is asked, how replies are read and
//!   filtered, and ROUGE-L as `rouge_score` computes it (bit-parallel, pruned).
//! - [`pipeline`]: the stages, each resumable; [`store`]: their crash-safe record.

pub mod error;
pub mod filters;
pub mod pipeline;
pub mod prompts;
pub mod rouge;
pub mod seeds;
pub mod store;
pub mod teacher;

pub use error::{InstructError, Result};
