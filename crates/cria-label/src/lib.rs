//! cria-label: human feedback from a company's own people, the first two steps of
//! InstructGPT (Ouyang et al. 2022) — labellers write demonstrations, then rank K answers the
//! model gave — kept at home.
//!
//! - [`db`]: the labels database (SQLite, WAL, one transaction per submission, versioned
//!   schema): people and sessions, projects of prompts and sampled answers, assignments and
//!   labels, chat feedback.
//! - [`auth`]: Argon2 passwords, tokens, the login limiter.
//! - [`import`], [`sampler`]: prompts in, K answers sampled per prompt by the served model.
//! - [`quality`]: inter-annotator agreement as InstructGPT reports it, gold items, Likert
//!   scores and flags.
//! - [`export`]: the files `cria sft`, `cria rm` and `cria dpo` read.
//! - [`web`]: the embedded web application, and the chat page's feedback routes.

pub mod auth;
pub mod db;
pub mod error;
pub mod export;
pub mod import;
pub mod quality;
pub mod sampler;
pub mod web;

pub use db::Db;
pub use error::{LabelError, Result};
