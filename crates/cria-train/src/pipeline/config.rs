//! The pipeline file: one section per stage, with the stage's own settings minus the paths
//! the pipeline wires itself.

use crate::stages::dpo::DpoConfig;
use crate::stages::ppo::PpoConfig;
use crate::stages::pretrain::PretrainConfig;
use crate::stages::rm::RmConfig;
use crate::stages::sft::SftConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorldStage {
    pub seed: u64,
    /// `tiny` or `demo`.
    pub size: String,
    /// Chance the simulated labeller swaps each adjacent pair of a ranking.
    pub disagreement: f64,
}

impl Default for WorldStage {
    fn default() -> Self {
        WorldStage {
            seed: 1,
            size: "demo".into(),
            disagreement: 0.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerStage {
    /// Corpus files or directories (default: the world's corpus).
    pub input: Vec<PathBuf>,
    pub vocab_size: usize,
    pub min_frequency: u64,
}

impl Default for TokenizerStage {
    fn default() -> Self {
        TokenizerStage {
            input: vec![],
            vocab_size: 2048,
            min_frequency: 2,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalStage {
    pub max_new_tokens: usize,
    pub kl_samples: usize,
    /// Window for the held-out perplexity (on the pretraining validation tokens).
    pub seq_len: usize,
    /// The report's bound on an aligned model's KL to SFT (nats per reply).
    pub max_kl: f64,
    /// Held-out sets (default: the world's `eval/` files): questions with answers
    /// (`{question, answer(s)}`), a TruthfulQA-layout CSV, harmful and benign prompts.
    pub facts: Option<PathBuf>,
    /// Conversations whose last question is scored (`{messages, answers}`).
    pub multiturn: Option<PathBuf>,
    pub truthful: Option<PathBuf>,
    pub harmful: Option<PathBuf>,
    pub benign: Option<PathBuf>,
}

impl EvalStage {
    /// Range checks of `eval.*`.
    pub fn validate(&self) -> crate::Result<()> {
        use crate::check::{at_least, positive};
        at_least("max_new_tokens", self.max_new_tokens as u64, 1)?;
        at_least("kl_samples", self.kl_samples as u64, 1)?;
        at_least("seq_len", self.seq_len as u64, 1)?;
        positive("max_kl", self.max_kl)
    }
}

impl Default for EvalStage {
    fn default() -> Self {
        EvalStage {
            max_new_tokens: 48,
            kl_samples: 2,
            seq_len: 128,
            max_kl: 10.0,
            facts: None,
            multiturn: None,
            truthful: None,
            harmful: None,
            benign: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Every stage writes into a directory of its own under this one.
    pub out: PathBuf,
    /// Start from this Hugging Face checkpoint: no tokenizer or pretraining stage.
    pub init: Option<PathBuf>,
    /// Every stage skips malformed data records instead of stopping (each stage writes its
    /// `rejects.jsonl`).
    pub skip_invalid: bool,
    pub world: Option<WorldStage>,
    pub tokenizer: Option<TokenizerStage>,
    pub pretrain: Option<PretrainConfig>,
    pub sft: Option<SftConfig>,
    pub rm: Option<RmConfig>,
    pub dpo: Option<DpoConfig>,
    pub ppo: Option<PpoConfig>,
    pub eval: Option<EvalStage>,
}

/// One stage of a resolved plan.
pub enum Stage {
    World(WorldStage),
    Tokenizer(TokenizerStage),
    Pretrain(Box<PretrainConfig>),
    Sft(Box<SftConfig>),
    Rm(Box<RmConfig>),
    Dpo(Box<DpoConfig>),
    Ppo(Box<PpoConfig>),
    Eval(EvalStage),
}

impl Stage {
    pub fn name(&self) -> &'static str {
        match self {
            Stage::World(_) => "world",
            Stage::Tokenizer(_) => "tokenizer",
            Stage::Pretrain(_) => "pretrain",
            Stage::Sft(_) => "sft",
            Stage::Rm(_) => "rm",
            Stage::Dpo(_) => "dpo",
            Stage::Ppo(_) => "ppo",
            Stage::Eval(_) => "eval",
        }
    }
}
