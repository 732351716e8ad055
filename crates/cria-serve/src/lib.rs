//! cria-serve: what serves a cria model.
//!
//! - [`engine`]: the inference engine — one scheduler thread owns the model and a fixed
//!   number of slots, requests join the running batch at the next step and leave when done
//!   (continuous batching); it sees token ids only.
//! - [`runner`]: what the engine runs — a checkpoint in burn or a GGUF file's quantized
//!   weights.
//! - [`model`]: a model as the server offers it (engine, tokenizer, chat format).
//! - [`api`]: the OpenAI-compatible HTTP API and the web chat page.

pub mod api;
pub mod engine;
pub mod model;
mod prefix;
pub mod runner;

pub use engine::{
    Counts, Engine, EngineConfig, Event, Logprobs, Request, Stats, SubmitError, Usage,
};
pub use model::{Member, ServedModel};
pub use runner::{Runner, Want};
