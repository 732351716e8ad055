//! `cria rm`: a reward model (InstructGPT step 2). The SFT model's trunk with a scalar `score`
//! head, the reward read at each sequence's last token, trained with the ranking loss over all
//! C(K,2) pairs of a prompt's K ranked responses. Saved as `LlamaForSequenceClassification`
//! (`score.weight`, one label). After training, `cria_reward_offset` is set so the rewards of a
//! reference set (the validation responses, else the training ones) average 0.

use crate::batch::{Batch, Group, Layout};
use crate::collective::CollectiveExt;
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::format;
use crate::losses::ranking_loss;
use crate::metrics::{Metrics, Reporter, RunDir};
use crate::prefs::{self, PrefDataConfig, fingerprint};
use crate::scoring::{reward_pad, rewards, score_groups};
use crate::trainer::{self, Objective, TrainSpec};
use cria_core::{Device, Llama, Tensor, checkpoint, device, fsutil};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RmConfig {
    /// The run directory.
    pub out: PathBuf,
    /// The checkpoint to start from (an SFT model; its LM head is replaced by the score head).
    pub init: PathBuf,
    pub data: PrefDataConfig,
    pub train: TrainConfig,
}

impl RmConfig {
    /// Range checks of every setting (the context is checked once the model is known).
    pub fn validate(&self) -> Result<()> {
        self.data.validate()?;
        self.train.validate("train")
    }
}

/// The ranking loss on rewards read at each row's last token.
pub struct RankingObjective;

impl Objective for RankingObjective {
    fn loss(&self, model: &Llama, batch: &Batch, device: &Device) -> Result<(Tensor<1>, Metrics)> {
        Ok(ranking_loss(
            rewards(model, batch, device),
            &batch.aux.groups,
            &batch.aux.tiers,
        ))
    }
}

/// Trains a reward model; returns the checkpoint directory.
pub fn run(cfg: &RmConfig, resolved: String, rep: &mut dyn Reporter) -> Result<PathBuf> {
    cfg.validate()?;
    let inf = device::inference_device();
    let mut base = checkpoint::load_model(&cfg.init, &inf)?;
    let mut tok = checkpoint::load_tokenizer(&cfg.init, &base.cfg)?;
    let prompting = format::resolve(cfg.data.format, &cfg.init, &mut base, &mut tok)?;
    let mut model = match base.cfg.head {
        cria_core::config::Head::Score => base,
        cria_core::config::Head::Lm => base.into_reward_model(cfg.train.seed),
    };
    // transformers reads each row's reward at its rightmost token that is not the pad id:
    // batches are padded with the id the saved config names, so both read the same token.
    let pad = reward_pad(&model, &tok);
    model.cfg.pad_token_id = Some(pad);
    let fmt = &prompting.fmt;
    crate::check::fits_context("data.seq_len", cfg.data.seq_len, model.max_len())?;
    let max = cfg.data.seq_len;
    let (t, v) = prefs::load(&cfg.data, cfg.train.seed, &cfg.out, &tok, fmt, max)?;
    // Ordered pairs: tied responses make none.
    let pairs = |g: &[Group]| {
        g.iter()
            .flat_map(|x| x.iter().flat_map(|a| x.iter().filter(|b| a.tier < b.tier)))
            .count()
    };
    tracing::info!(
        prompts = t.groups.len(),
        pairs = pairs(&t.groups),
        val_prompts = v.groups.len(),
        val_pairs = pairs(&v.groups),
        truncated = t.truncated + v.truncated,
        prompt_cut = t.prompt_cut + v.prompt_cut,
        dropped = t.dropped + v.dropped,
        "reward-model data ready (over-long rows are cut as data.truncation says; dropped \
         preferences had a response cut away entirely)"
    );
    let fp = format!("rm {} seq_len={}", fingerprint(&t.groups), cfg.data.seq_len);
    let (seed, bs) = (cfg.train.seed, cfg.train.batch_size);
    let mut data = prefs::data(t.groups, v.groups, seed, bs, fp, pad, Layout::Score);
    let run = RunDir::new(&cfg.out);
    let spec = TrainSpec {
        extra_files: prompting.checkpoint_files(&cfg.init, &tok)?,
        ..TrainSpec::new(
            &cfg.train,
            &run,
            &cfg.init,
            resolved,
            "rm.toml",
            &RankingObjective,
        )
    };
    let mut model = trainer::train(model, &mut data, &spec, rep)?;
    if !spec.world.is_root() {
        return Ok(run.checkpoint());
    }
    // Rewards are centred on the validation responses, else the training ones.
    let reference = if data.val.is_empty() {
        &data.train
    } else {
        &data.val
    };
    centre(&mut model, reference, pad, bs, &run.checkpoint())?;
    Ok(run.checkpoint())
}

/// Sets the reward offset so the rewards of `reference`'s responses average 0, in the model
/// and in the checkpoint `dir`.
fn centre(
    model: &mut Llama,
    reference: &[Group],
    pad: u32,
    batch: usize,
    dir: &Path,
) -> Result<()> {
    model.cfg.reward_offset = 0.0;
    let scores = score_groups(model, reference, pad, batch);
    if scores.is_empty() {
        return Err(TrainError::Invalid(
            "no responses to centre the rewards on".into(),
        ));
    }
    let mean = scores.iter().map(|x| *x as f64).sum::<f64>() / scores.len() as f64;
    model.cfg.reward_offset = mean;
    set_offset(dir, mean)?;
    tracing::info!(
        offset = mean,
        responses = scores.len(),
        "rewards centred on the reference set"
    );
    Ok(())
}

/// Writes the reward offset into a checkpoint's `config.json` (atomically).
pub fn set_offset(dir: &Path, offset: f64) -> Result<()> {
    let path = dir.join("config.json");
    let mut v = fsutil::read_json(&path)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("cria_reward_offset".into(), serde_json::json!(offset));
    }
    let text = serde_json::to_string_pretty(&v).expect("JSON value");
    fsutil::write_atomic(&path, text.as_bytes())?;
    Ok(())
}
