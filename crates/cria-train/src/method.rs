//! What fine-tuning changes: every weight, a LoRA adapter (Hu et al. 2021) or a LLaMA-Adapter
//! prompt (Zhang et al. 2023) on a frozen base; which parameters train as a result; and the
//! guard that keeps a reward model out of the stages that need a language model.

use crate::error::{Result, TrainError};
use cria_core::Llama;
use cria_core::config::Head;
use cria_core::nn::AdapterConfig;
use cria_core::nn::lora::{LoraConfig, is_lora_param};
use cria_core::nn::prefix::{PrefixConfig, is_prefix_param};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What fine-tuning changes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Every weight.
    #[default]
    Full,
    /// A LoRA adapter on a frozen base (settings in `[lora]`); checkpoints hold the adapter.
    Lora,
    /// A LLaMA-Adapter prompt on the top layers of a frozen base (settings in `[adapter]`).
    #[serde(rename = "llama-adapter")]
    LlamaAdapter,
}

/// A predicate over parameter names: which ones train.
pub type Trainable = dyn Fn(&str) -> bool + Sync;

/// Every parameter trains.
pub fn every_param(_: &str) -> bool {
    true
}

/// A model made ready for its method: what its checkpoints record about the adapter (`None`:
/// full weights), and which parameters train (`None`: all).
pub struct Adapted<'a> {
    pub adapter: Option<AdapterConfig<'a>>,
    pub trainable: Option<&'static Trainable>,
}

/// Refuses a method the stage does not offer, e.g. `method: DPO trains `full` or `lora``.
pub fn offered(method: Method, stage: &str, offered: &[Method]) -> Result<()> {
    if offered.contains(&method) {
        return Ok(());
    }
    let names: Vec<&str> = offered
        .iter()
        .map(|m| match m {
            Method::Full => "`full`",
            Method::Lora => "`lora`",
            Method::LlamaAdapter => "`llama-adapter`",
        })
        .collect();
    Err(TrainError::Invalid(format!(
        "method: {stage} trains {}",
        names.join(" or ")
    )))
}

/// Range checks of the method's settings (`lora.*`, `adapter.*`).
pub fn validate(method: Method, lora: &LoraConfig, prefix: Option<&PrefixConfig>) -> Result<()> {
    match (method, prefix) {
        (Method::Full, _) => Ok(()),
        (Method::Lora, _) => Ok(lora.validate()?),
        (Method::LlamaAdapter, Some(p)) => {
            crate::check::at_least("adapter.len", p.len as u64, 1)?;
            crate::check::at_least("adapter.layers", p.layers as u64, 1)
        }
        (Method::LlamaAdapter, None) => Err(TrainError::Invalid(
            "method: `llama-adapter` is not offered here".into(),
        )),
    }
}

/// Adds the method's adapter to `model` (initialised from `seed`); a LLaMA-Adapter needs its
/// settings in `prefix`.
pub fn apply<'a>(
    model: &mut Llama,
    method: Method,
    lora: &'a LoraConfig,
    prefix: Option<&'a PrefixConfig>,
    seed: u64,
) -> Result<Adapted<'a>> {
    Ok(match (method, prefix) {
        (Method::Full, _) => Adapted {
            adapter: None,
            trainable: None,
        },
        (Method::Lora, _) => {
            model.add_lora(lora, seed)?;
            Adapted {
                adapter: Some(AdapterConfig::Lora(lora)),
                trainable: Some(&is_lora_param),
            }
        }
        (Method::LlamaAdapter, Some(p)) => {
            model.add_prefix_adapter(p, seed)?;
            Adapted {
                adapter: Some(AdapterConfig::Prefix(p)),
                trainable: Some(&is_prefix_param),
            }
        }
        (Method::LlamaAdapter, None) => {
            return Err(TrainError::Invalid(
                "method: `llama-adapter` is not offered here".into(),
            ));
        }
    })
}

/// The same weights with every LoRA adapter taken off: the frozen reference of a LoRA policy
/// (and the policy itself when there is none), with nothing copied but the handles.
pub fn without_lora(model: &Llama) -> Llama {
    let mut reference = model.clone();
    for layer in &mut reference.layers {
        for (_, lin) in layer.projections_mut() {
            lin.lora = None;
        }
    }
    reference
}

/// Refuses a reward model where a language model is needed (`init` of SFT, DPO and PPO).
pub fn require_lm(model: &Llama, dir: &Path) -> Result<()> {
    require_lm_as(model, dir, "init")
}

/// Refuses a reward model given as `what` (a setting or flag) where a language model is
/// needed.
pub fn require_lm_as(model: &Llama, dir: &Path, what: &str) -> Result<()> {
    if model.cfg.head != Head::Lm {
        return Err(TrainError::Invalid(format!(
            "{what}: {} is a reward model (a score head, no language-model head); give a \
             language model such as an SFT checkpoint",
            dir.display()
        )));
    }
    Ok(())
}

/// Refuses a language model given as `what` where a reward model is needed.
pub fn require_reward_model(model: &Llama, dir: &Path, what: &str) -> Result<()> {
    if model.cfg.head != Head::Score {
        return Err(TrainError::Invalid(format!(
            "{what}: {} is a language model, not a reward model (train one with `cria rm`)",
            dir.display()
        )));
    }
    Ok(())
}
