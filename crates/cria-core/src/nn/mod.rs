//! Layers of the LLaMA family. Each is a plain struct built from a [`VarBuilder`] with its
//! Hugging Face name, with a `forward` and a parameter visitor.
//!
//! [`VarBuilder`]: crate::weights::VarBuilder

pub mod attention;
pub mod linear;
pub mod lora;
pub mod mlp;
pub mod norm;
pub mod prefix;
pub mod rope;

pub use attention::Attention;
pub use linear::Linear;
pub use mlp::Mlp;
pub use norm::RmsNorm;
pub use rope::Rope;

use crate::error::{CoreError, Result};
use crate::model::Llama;
use std::path::Path;

/// True for parameters of an adapter (LoRA or LLaMA-Adapter), which are not part of the base.
pub fn is_adapter_param(name: &str) -> bool {
    lora::is_lora_param(name) || prefix::is_prefix_param(name)
}

/// An adapter's settings, for saving it beside (not inside) its base model.
#[derive(Debug, Clone, Copy)]
pub enum AdapterConfig<'a> {
    Lora(&'a lora::LoraConfig),
    Prefix(&'a prefix::PrefixConfig),
}

impl Llama {
    /// Saves the adapter only, recording `base` as its base model.
    pub fn save_adapter(&self, cfg: AdapterConfig<'_>, base: &str, dir: &Path) -> Result<()> {
        match cfg {
            AdapterConfig::Lora(c) => self.save_lora(c, base, dir),
            AdapterConfig::Prefix(c) => self.save_prefix_adapter(c, base, dir),
        }
    }

    /// Attaches the adapter in `dir`, LoRA or LLaMA-Adapter, by its `adapter_config.json`.
    pub fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join("adapter_config.json");
        let v = crate::fsutil::read_json(&path)?;
        match v.get("peft_type").and_then(|t| t.as_str()) {
            Some("LORA") => self.load_lora(dir).map(|_| ()),
            Some(prefix::PEFT_TYPE) => self.load_prefix_adapter(dir).map(|_| ()),
            other => Err(CoreError::config(
                &path,
                "peft_type",
                format!(
                    "{other:?} is not an adapter cria reads (LORA, {})",
                    prefix::PEFT_TYPE
                ),
            )),
        }
    }
}
