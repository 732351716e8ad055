//! cria-core: the one LLaMA-family model (LLaMA 1/2/3, Mistral, Qwen2, TinyLlama), its layers,
//! Hugging Face checkpoint I/O, the tokenizer, sampling and the KV cache.
//!
//! Every training stage and the inference engine use the model defined here; variants are
//! config fields, never copied files.

pub mod checkpoint;
pub mod config;
pub mod device;
pub mod error;
pub mod fsutil;
pub mod generate;
pub mod hash;
pub mod kernels;
pub mod model;
pub mod nn;
pub mod params;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
pub use config::ModelConfig;
pub use error::{CoreError, Result};
pub use model::{KvCache, Llama};
