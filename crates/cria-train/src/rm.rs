//! `cria rm`: a reward model (InstructGPT step 2). The SFT model's trunk with a scalar `score`
//! head, the reward read at each sequence's last token, trained with the ranking loss over all
//! C(K,2) pairs of a prompt's K ranked responses. Saved as `LlamaForSequenceClassification`
//! (`score.weight`, one label). After training, `cria_reward_offset` is set so the rewards of a
//! reference set (the validation responses, else the training ones) average 0.

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::losses::ranking_loss;
use crate::prefs::{Group, Layout, PrefDataConfig, encode, fingerprint, make_batch, split};
use crate::trainer::{self, Batch, Metrics, Objective, Reporter, RunDir, TrainSpec};
use cria_core::{Device, Llama, Tensor, checkpoint, device, fsutil, tokenizer::PAD};
use cria_data::chat::ChatFormat;
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

/// The ranking loss on rewards read at each row's last token.
pub struct RankingObjective;

impl Objective for RankingObjective {
    fn loss(&self, model: &Llama, batch: &Batch, device: &Device) -> Result<(Tensor<1>, Metrics)> {
        let r = model.rewards(trainer::input_ids(batch, device), &batch.aux.lengths);
        Ok(ranking_loss(r, &batch.aux.groups))
    }
}

/// Rewards of every row of `groups`, in order, computed `batch` groups at a time.
pub fn score_groups(model: &Llama, groups: &[Group], pad: u32, batch: usize) -> Vec<f32> {
    let device = model.device();
    let mut out = Vec::new();
    for chunk in groups.chunks(batch.max(1)) {
        let b = make_batch(chunk.iter(), pad, Layout::Score);
        let r = model.rewards(trainer::input_ids(&b, &device), &b.aux.lengths);
        out.extend(r.into_data().try_to_vec::<f32>().expect("f32"));
    }
    out
}

/// Trains a reward model; returns the checkpoint directory.
pub fn run(cfg: &RmConfig, resolved: String, rep: &mut dyn Reporter) -> Result<PathBuf> {
    let inf = device::inference_device();
    let base = checkpoint::load_model(&cfg.init, &inf)?;
    let tok = checkpoint::load_tokenizer(&cfg.init, &base.cfg)?;
    let pad = tok.token_to_id(PAD).or(tok.eos_id).unwrap_or(0);
    let mut model = match base.cfg.head {
        cria_core::config::Head::Score => base,
        cria_core::config::Head::Lm => base.into_reward_model(cfg.train.seed),
    };
    // transformers finds each row's last token by the pad id.
    model.cfg.pad_token_id.get_or_insert(pad);
    let fmt = ChatFormat::for_checkpoint(&cfg.init, &tok)?;
    let (train_p, val_p) = split(&cfg.data, cfg.train.seed)?;
    let max = cfg.data.seq_len.min(model.max_len());
    let (t, v) = (
        encode(&train_p, &tok, &fmt, max)?,
        encode(&val_p, &tok, &fmt, max)?,
    );
    let (train, val) = (t.groups, v.groups);
    if train.is_empty() {
        return Err(TrainError::Invalid(format!(
            "no preference has a response within data.seq_len = {} tokens",
            cfg.data.seq_len
        )));
    }
    let pairs = |g: &[Group]| g.iter().map(|x| x.len() * (x.len() - 1) / 2).sum::<usize>();
    tracing::info!(
        prompts = train.len(),
        pairs = pairs(&train),
        val_prompts = val.len(),
        val_pairs = pairs(&val),
        truncated = t.truncated + v.truncated,
        dropped = t.dropped + v.dropped,
        "reward-model data ready (over-long rows keep their first seq_len tokens; dropped \
         preferences had a response cut away entirely)"
    );
    let fp = format!("rm {} seq_len={}", fingerprint(&train), cfg.data.seq_len);
    let mut data = crate::prefs::data(
        train,
        val,
        cfg.train.seed,
        cfg.train.batch_size,
        fp,
        pad,
        Layout::Score,
    );
    let run = RunDir {
        root: cfg.out.clone(),
    };
    let spec = TrainSpec {
        cfg: &cfg.train,
        run: &run,
        tokenizer_dir: Some(&cfg.init),
        resolved_config: resolved,
        config_file: "rm.toml",
        adapter: None,
        trainable: None,
        extra_files: vec![],
        objective: &RankingObjective,
    };
    let mut model = trainer::train(model, &mut data, &spec, rep)?;
    let reference = if data.val.is_empty() {
        &data.train
    } else {
        &data.val
    };
    model.cfg.reward_offset = 0.0;
    let scores = score_groups(&model, reference, pad, cfg.train.batch_size);
    if scores.is_empty() {
        return Err(TrainError::Invalid(
            "no responses to centre the rewards on".into(),
        ));
    }
    let mean = scores.iter().map(|x| *x as f64).sum::<f64>() / scores.len() as f64;
    model.cfg.reward_offset = mean;
    set_offset(&run.checkpoint(), mean)?;
    tracing::info!(
        offset = mean,
        responses = scores.len(),
        "rewards centred on the reference set"
    );
    Ok(run.checkpoint())
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

/// Rewards of whole conversations (each ending with the reply to score), rendered in `fmt`.
pub fn score_conversations(
    model: &Llama,
    fmt: &ChatFormat,
    tok: &cria_core::tokenizer::Tokenizer,
    convs: &[Vec<cria_data::chat::Message>],
    batch: usize,
) -> Result<Vec<f32>> {
    let pad = tok.token_to_id(PAD).or(tok.eos_id).unwrap_or(0);
    let groups = convs
        .iter()
        .map(|c| {
            let e = fmt.encode(c, tok, false, false)?;
            let mut ids = e.ids;
            ids.truncate(model.max_len());
            Ok(vec![crate::prefs::Row {
                response: vec![false; ids.len()],
                ids,
                ref_logp: 0.0,
            }])
        })
        .collect::<Result<Vec<Group>>>()?;
    Ok(score_groups(model, &groups, pad, batch))
}
