//! cria-serve: what serves a cria model. [`engine`] is the inference engine — one scheduler
//! thread owns the model and a fixed number of slots, requests join the running batch at the
//! next step and leave when done (continuous batching); it sees token ids only. The HTTP API
//! and the web chat page build on it.

pub mod engine;
mod prefix;

pub use engine::{Engine, EngineConfig, Event, Request, Stats, SubmitError, Usage};
