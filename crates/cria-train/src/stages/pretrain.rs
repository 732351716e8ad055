//! `cria pretrain`: next-token prediction on a text corpus, from scratch (model shape in the
//! config) or continuing an existing Hugging Face checkpoint (`init`).

use crate::check;
use crate::collective::CollectiveExt;
use crate::config::TrainConfig;
use crate::data::{CorpusSpec, TokenShards};
use crate::error::{Result, TrainError};
use crate::metrics::{Reporter, RunDir};
use crate::trainer::{self, TrainSpec};
use cria_core::checkpoint;
use cria_core::config::{Arch, ModelConfig};
use cria_core::tokenizer::{self, Tokenizer};
use cria_core::weights::VarBuilder;
use cria_core::{Llama, device};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The shape of a model trained from scratch (Hugging Face field names).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelShape {
    pub arch: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub initializer_range: f64,
}

impl Default for ModelShape {
    fn default() -> Self {
        ModelShape {
            arch: "llama".into(),
            hidden_size: 256,
            intermediate_size: 688,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: 4,
            max_position_embeddings: 1024,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: true,
            initializer_range: 0.02,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Corpus files or directories (.txt, .md, .jsonl; optionally .gz).
    pub inputs: Vec<PathBuf>,
    pub seq_len: usize,
    /// Fraction of the token stream held out for validation.
    pub val_fraction: f64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            inputs: vec![],
            seq_len: 256,
            val_fraction: 0.05,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    /// The run directory: shards, metrics and the checkpoint go here.
    pub out: PathBuf,
    /// Continue pretraining this Hugging Face checkpoint instead of starting from scratch.
    pub init: Option<PathBuf>,
    /// Tokenizer (a `tokenizer.json` or a directory holding one) for a model from scratch.
    pub tokenizer: Option<PathBuf>,
    pub model: ModelShape,
    pub data: DataConfig,
    pub train: TrainConfig,
}

fn arch_of(name: &str) -> Result<Arch> {
    match name {
        "llama" => Ok(Arch::Llama),
        "mistral" => Ok(Arch::Mistral),
        "qwen2" => Ok(Arch::Qwen2),
        "qwen3" => Ok(Arch::Qwen3),
        "phi3" => Ok(Arch::Phi3),
        other => Err(TrainError::Invalid(format!(
            "model.arch `{other}` is not supported (llama, mistral, qwen2, qwen3, phi3)"
        ))),
    }
}

impl ModelShape {
    /// Range checks of the shape (`model.*`).
    pub fn validate(&self) -> Result<()> {
        arch_of(&self.arch)?;
        for (key, v) in [
            ("model.hidden_size", self.hidden_size),
            ("model.intermediate_size", self.intermediate_size),
            ("model.num_hidden_layers", self.num_hidden_layers),
            ("model.num_attention_heads", self.num_attention_heads),
            ("model.num_key_value_heads", self.num_key_value_heads),
            (
                "model.max_position_embeddings",
                self.max_position_embeddings,
            ),
        ] {
            check::at_least(key, v as u64, 1)?;
        }
        let heads = self.num_attention_heads;
        if !self.hidden_size.is_multiple_of(heads)
            || !heads.is_multiple_of(self.num_key_value_heads)
        {
            return Err(TrainError::Invalid(format!(
                "model: hidden_size {} must divide by num_attention_heads {heads}, which must divide by num_key_value_heads {}",
                self.hidden_size, self.num_key_value_heads
            )));
        }
        check::positive("model.rope_theta", self.rope_theta)?;
        check::positive("model.rms_norm_eps", self.rms_norm_eps)?;
        check::positive("model.initializer_range", self.initializer_range)
    }

    pub fn to_config(&self, tok: &Tokenizer) -> Result<ModelConfig> {
        self.validate()?;
        let heads = self.num_attention_heads;
        Ok(ModelConfig {
            arch: arch_of(&self.arch)?,
            head: Default::default(),
            reward_offset: 0.0,
            vocab_size: tok.vocab_size(),
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: self.num_key_value_heads,
            head_dim: self.hidden_size / heads,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            rope_scaling: None,
            max_position_embeddings: self.max_position_embeddings,
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_bias: self.arch == "qwen2",
            qk_norm: self.arch == "qwen3",
            o_bias: false,
            mlp_bias: false,
            sliding_window: vec![None; self.num_hidden_layers],
            initializer_range: self.initializer_range,
            bos_token_id: tok.bos_id,
            eos_token_id: tok.eos_id.into_iter().collect(),
            pad_token_id: tok.token_to_id(tokenizer::PAD),
            extras: Default::default(),
        })
    }
}

impl PretrainConfig {
    /// Range checks of every setting (the context is checked once the model is known).
    pub fn validate(&self) -> Result<()> {
        if self.data.inputs.is_empty() {
            return Err(TrainError::Invalid(
                "data.inputs is empty: name corpus files or directories".into(),
            ));
        }
        check::at_least("data.seq_len", self.data.seq_len as u64, 1)?;
        check::fraction("data.val_fraction", self.data.val_fraction)?;
        if self.init.is_none() {
            self.model.validate()?;
        }
        self.train.validate("train")
    }
}

/// Resolves the tokenizer path: a file, or a directory holding `tokenizer.json`.
pub fn tokenizer_file(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("tokenizer.json")
    } else {
        p.to_path_buf()
    }
}

/// Runs pretraining; returns the checkpoint directory.
pub fn run(cfg: &PretrainConfig, resolved: String, rep: &mut dyn Reporter) -> Result<PathBuf> {
    cfg.validate()?;
    let infer = device::inference_device();
    let (model, tok, tok_dir): (Llama, Tokenizer, PathBuf) = match &cfg.init {
        Some(init) => {
            let model = checkpoint::load_model(init, &infer)?;
            let tok = checkpoint::load_tokenizer(init, &model.cfg)?;
            (model, tok, init.clone())
        }
        None => {
            let path = cfg.tokenizer.as_deref().ok_or_else(|| {
                TrainError::Invalid("set `tokenizer` (or `init` to continue a checkpoint)".into())
            })?;
            let file = tokenizer_file(path);
            let tok = Tokenizer::from_file(&file)?;
            let mcfg = cfg.model.to_config(&tok)?;
            let mut vb = VarBuilder::init(cfg.train.seed, mcfg.initializer_range, &infer);
            let model = Llama::new(&mcfg, &mut vb)?;
            let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
            (model, tok, dir)
        }
    };
    check::fits_context("data.seq_len", cfg.data.seq_len, model.max_len())?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| cria_core::CoreError::io(&cfg.out, e))?;
    let corpus = CorpusSpec {
        inputs: &cfg.data.inputs,
        seq_len: cfg.data.seq_len,
        val_fraction: cfg.data.val_fraction,
        seed: cfg.train.seed,
        batch_size: cfg.train.batch_size,
    };
    // Ranks tokenise in turn: the first on each filesystem writes the shards, the rest reuse.
    let world = crate::collective::world();
    let mut data =
        world.one_at_a_time(|| TokenShards::prepare(&corpus, &tok, &cfg.out.join("data")))?;
    let run = RunDir::new(&cfg.out);
    let spec = TrainSpec::new(
        &cfg.train,
        &run,
        &tok_dir,
        resolved,
        "pretrain.toml",
        &trainer::LmLoss,
    );
    trainer::train(model, &mut data, &spec, rep)?;
    Ok(run.checkpoint())
}
