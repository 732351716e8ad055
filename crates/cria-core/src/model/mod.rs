//! The LLaMA-family causal language model and its loss.

pub mod fused;
pub mod llama;
pub mod loss;
pub mod ragged;

pub use llama::{Block, KvCache, Llama};
pub use loss::{cross_entropy, token_logprobs};
