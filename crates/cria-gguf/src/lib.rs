//! GGUF for cria: `cria export --to gguf` writes what llama.cpp and ollama load (f32, f16, q8_0,
//! q4_0, byte-identical to llama.cpp's quantizer), and the reader maps such files for cria's own
//! quantized inference.

pub mod error;
pub mod export;
pub mod format;
pub mod infer;
pub mod kernels;
mod matrix;
pub mod modelfile;
pub mod packed;
mod pages;
pub mod panels;
pub mod quant;
pub mod tokenizer;

pub use error::{GgufError, Result};
pub use format::{GgufFile, Value};
pub use quant::GgmlType;
