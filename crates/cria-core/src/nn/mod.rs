//! Layers of the LLaMA family. Each is a plain struct built from a [`VarBuilder`] with its
//! Hugging Face name, with a `forward` and a parameter visitor.
//!
//! [`VarBuilder`]: crate::weights::VarBuilder

pub mod attention;
pub mod linear;
pub mod lora;
pub mod mlp;
pub mod norm;
pub mod rope;

pub use attention::Attention;
pub use linear::Linear;
pub use mlp::Mlp;
pub use norm::RmsNorm;
pub use rope::Rope;
