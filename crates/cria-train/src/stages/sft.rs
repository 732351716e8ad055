//! `cria sft`: supervised fine-tuning on instruction or chat data (InstructGPT step 1; Alpaca).
//! The loss covers assistant replies and the end-of-turn token after each (so the model learns
//! to stop); prompts are masked unless `train_on_inputs`. Over-long examples keep their first
//! `seq_len + 1` tokens and are counted; one left with nothing to learn is dropped and counted.

use crate::batch::{self, Layout, Row};
use crate::check;
use crate::config::TrainConfig;
use crate::data::{self, Shuffled, hold_out};
use crate::error::{Result, TrainError};
use crate::format;
use crate::method::{self, Method};
use crate::metrics::{Reporter, RunDir};
use crate::trainer::{self, TrainSpec};
use cria_core::nn::lora::LoraConfig;
use cria_core::nn::prefix::PrefixConfig;
use cria_core::{checkpoint, device};
use cria_data::chat::{self, ChatFormat, Encoded, FormatChoice};
use cria_data::sft::read_all_with;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SftDataConfig {
    /// Training files: Alpaca, chat (`messages`), ShareGPT or prompt/completion; JSON or JSONL.
    pub train: Vec<PathBuf>,
    /// Validation files; when empty, `val_fraction` of the training records is held out.
    pub val: Vec<PathBuf>,
    pub val_fraction: f64,
    /// Longest example in tokens (the rest is cut off).
    pub seq_len: usize,
    /// Train on prompt tokens too.
    pub train_on_inputs: bool,
    /// Pack examples end to end into full rows instead of padding each to its batch's longest.
    pub packing: bool,
    /// Prompt format: `auto` (the checkpoint's own chat template, else cria's, its tokens
    /// added when the base lacks them), `cria` or `alpaca`. The checkpoint written carries
    /// it as its `chat_template`.
    pub format: FormatChoice,
    /// Skip malformed records instead of stopping, counting them by reason and writing them
    /// to `out/rejects.jsonl`.
    pub skip_invalid: bool,
}

impl Default for SftDataConfig {
    fn default() -> Self {
        SftDataConfig {
            train: vec![],
            val: vec![],
            val_fraction: 0.05,
            seq_len: 512,
            train_on_inputs: false,
            packing: false,
            format: FormatChoice::Auto,
            skip_invalid: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    /// The run directory.
    pub out: PathBuf,
    /// The Hugging Face checkpoint to fine-tune.
    pub init: PathBuf,
    pub method: Method,
    pub lora: LoraConfig,
    pub adapter: PrefixConfig,
    pub data: SftDataConfig,
    pub train: TrainConfig,
}

impl SftConfig {
    /// Range checks of every setting (the context is checked once the model is known).
    pub fn validate(&self) -> Result<()> {
        if self.data.train.is_empty() {
            return Err(TrainError::Invalid(
                "data.train is empty: name instruction or chat files".into(),
            ));
        }
        check::at_least("data.seq_len", self.data.seq_len as u64, 1)?;
        check::fraction("data.val_fraction", self.data.val_fraction)?;
        method::validate(self.method, &self.lora, Some(&self.adapter))?;
        self.train.validate("train")
    }
}

/// Encoded examples and how many were cut or dropped.
pub struct Prepared {
    pub examples: Vec<Encoded>,
    pub truncated: usize,
    pub dropped: usize,
}

/// Encodes conversations, truncating to `max` tokens.
pub fn prepare(
    convs: &[Vec<chat::Message>],
    tok: &cria_core::tokenizer::Tokenizer,
    fmt: &ChatFormat,
    max: usize,
    train_on_inputs: bool,
) -> Result<Prepared> {
    let mut p = Prepared {
        examples: vec![],
        truncated: 0,
        dropped: 0,
    };
    for (i, c) in convs.iter().enumerate() {
        let mut e = fmt
            .encode(c, tok, false, train_on_inputs)
            .map_err(|e| TrainError::Invalid(format!("example {}: {e}", i + 1)))?;
        if e.ids.len() > max {
            e.ids.truncate(max);
            e.train.truncate(max);
            p.truncated += 1;
        }
        // Targets are ids[1..]: an example needs a trainable position after the first.
        if e.train.iter().skip(1).any(|t| *t) {
            p.examples.push(e);
        } else {
            p.dropped += 1;
        }
    }
    Ok(p)
}

/// Rows of at most `max` tokens: one example each, or examples packed end to end; the loss
/// covers what each example trains on.
fn rows(examples: Vec<Encoded>, max: usize, packing: bool) -> Vec<Row> {
    let row = |e: Encoded| Row {
        ids: e.ids,
        response: e.train,
        ref_logp: 0.0,
        tier: 0,
    };
    if !packing {
        return examples.into_iter().map(row).collect();
    }
    let mut out = Vec::new();
    let mut cur = Encoded {
        ids: vec![],
        train: vec![],
    };
    for e in examples {
        if !cur.ids.is_empty() && cur.ids.len() + e.ids.len() > max {
            out.push(std::mem::replace(
                &mut cur,
                Encoded {
                    ids: vec![],
                    train: vec![],
                },
            ));
        }
        cur.ids.extend(e.ids);
        cur.train.extend(e.train);
    }
    if !cur.ids.is_empty() {
        out.push(cur);
    }
    out.into_iter().map(row).collect()
}

/// The training and validation rows (validation: the named files, else `val_fraction` of
/// the training records) and a fingerprint of the training rows.
fn load_rows(
    cfg: &SftConfig,
    tok: &cria_core::tokenizer::Tokenizer,
    fmt: &ChatFormat,
    max: usize,
) -> Result<(Vec<Row>, Vec<Row>, String)> {
    let mut rejects = data::rejects(cfg.data.skip_invalid);
    let mut convs = read_all_with(&cfg.data.train, &mut rejects)?;
    let mut val_convs = read_all_with(&cfg.data.val, &mut rejects)?;
    data::write_rejects(&rejects, &cfg.out)?;
    if val_convs.is_empty() {
        (convs, val_convs) = hold_out(convs, cfg.data.val_fraction, cfg.train.seed);
    }
    let train = prepare(&convs, tok, fmt, max, cfg.data.train_on_inputs)?;
    let val = prepare(&val_convs, tok, fmt, max, cfg.data.train_on_inputs)?;
    tracing::info!(
        examples = train.examples.len(),
        val_examples = val.examples.len(),
        truncated = train.truncated + val.truncated,
        dropped = train.dropped + val.dropped,
        "SFT data ready (over-long examples keep their first seq_len+1 tokens; dropped ones had no reply left)"
    );
    if train.examples.is_empty() {
        return Err(TrainError::Invalid(format!(
            "no training example has a reply within data.seq_len = {} tokens ({} cut short)",
            cfg.data.seq_len, train.truncated
        )));
    }
    let rows_train = rows(train.examples, max, cfg.data.packing);
    let rows_val = rows(val.examples, max, cfg.data.packing);
    let n_tokens: usize = rows_train.iter().map(|r| r.ids.len()).sum();
    let fingerprint = format!(
        "rows={} tokens={n_tokens} seq_len={} packing={}",
        rows_train.len(),
        cfg.data.seq_len,
        cfg.data.packing
    );
    Ok((rows_train, rows_val, fingerprint))
}

/// Runs supervised fine-tuning; returns the checkpoint directory.
pub fn run(cfg: &SftConfig, resolved: String, rep: &mut dyn Reporter) -> Result<PathBuf> {
    cfg.validate()?;
    let mut model = checkpoint::load_model(&cfg.init, &device::inference_device())?;
    method::require_lm(&model, &cfg.init)?;
    let mut tok = checkpoint::load_tokenizer(&cfg.init, &model.cfg)?;
    let prompting = format::resolve(cfg.data.format, &cfg.init, &mut model, &mut tok)?;
    if prompting.added_tokens > 0 && cfg.method != Method::Full {
        return Err(TrainError::Invalid(format!(
            "{} has no chat template and no cria chat tokens; a frozen base cannot learn new \
             tokens' embeddings with method = {:?}: use data.format = \"alpaca\" (no new \
             tokens), or method = \"full\"",
            cfg.init.display(),
            cfg.method
        )));
    }
    let adapted = method::apply(
        &mut model,
        cfg.method,
        &cfg.lora,
        Some(&cfg.adapter),
        cfg.train.seed,
    )?;
    let fmt = &prompting.fmt;
    check::fits_context("data.seq_len", cfg.data.seq_len, model.max_len())?;
    let max = cfg.data.seq_len + 1;
    let (train, val, fingerprint) = load_rows(cfg, &tok, fmt, max)?;
    let pad = tok.pad_id();
    let mut data = Shuffled::new(
        train,
        val,
        cfg.train.seed,
        cfg.train.batch_size,
        fingerprint,
        move |rows: &[&Row]| batch::of_rows(rows, vec![1; rows.len()], pad, Layout::Tokens),
    );
    let run = RunDir::new(&cfg.out);
    let spec = TrainSpec {
        adapter: adapted.adapter.map(|a| (a, cfg.init.as_path())),
        trainable: adapted.trainable,
        extra_files: prompting.checkpoint_files(&cfg.init, &tok)?,
        ..TrainSpec::new(
            &cfg.train,
            &run,
            &cfg.init,
            resolved,
            "sft.toml",
            &trainer::LmLoss,
        )
    };
    trainer::train(model, &mut data, &spec, rep)?;
    Ok(run.checkpoint())
}
