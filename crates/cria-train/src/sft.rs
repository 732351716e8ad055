//! `cria sft`: supervised fine-tuning on instruction or chat data (InstructGPT step 1; Alpaca).
//! The loss covers assistant replies and the end-of-turn token after each (so the model learns
//! to stop); prompts are masked unless `train_on_inputs`. Over-long examples keep their first
//! `seq_len + 1` tokens and are counted; one left with nothing to learn is dropped and counted.

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::trainer::{self, Batch, Reporter, RunDir, Shuffled, TrainSpec};
use cria_core::nn::AdapterConfig;
use cria_core::nn::lora::{LoraConfig, is_lora_param};
use cria_core::nn::prefix::{PrefixConfig, is_prefix_param};
use cria_core::{checkpoint, device, fsutil, tokenizer::PAD};
use cria_data::chat::{self, ALPACA_TEMPLATE, CHAT_TEMPLATE, ChatFormat, Encoded, FormatChoice};
use cria_data::sft::read_all;
use cria_data::shards::Order;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    /// Prompt format: `auto` (the checkpoint's own chat template, else cria's), `cria` or
    /// `alpaca`. The checkpoint written carries it as its `chat_template`.
    pub format: FormatChoice,
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
        }
    }
}

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

/// Refuses a reward model where a language model is needed (`init` of SFT, DPO and PPO).
pub fn require_lm(model: &cria_core::Llama, dir: &Path) -> Result<()> {
    if model.cfg.head != cria_core::config::Head::Lm {
        return Err(TrainError::Invalid(format!(
            "init: {} is a reward model (a score head, no language-model head); start from a \
             language model such as an SFT checkpoint",
            dir.display()
        )));
    }
    Ok(())
}

/// A predicate over parameter names: which ones train.
pub type Trainable = dyn Fn(&str) -> bool;

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

/// Rows of at most `max` tokens: one example each, or examples packed end to end.
fn rows(examples: Vec<Encoded>, max: usize, packing: bool) -> Vec<Encoded> {
    if !packing {
        return examples;
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
    out
}

/// SFT rows padded to the longest, with their loss masks as weights.
fn sft_batch(rows: &[&Encoded], pad: u32) -> Batch {
    let t = rows.iter().map(|r| r.ids.len() - 1).max().unwrap_or(1);
    let (mut inputs, mut targets, mut weights) = (vec![], vec![], vec![]);
    for r in rows {
        let n = r.ids.len() - 1;
        inputs.extend_from_slice(&r.ids[..n]);
        targets.extend_from_slice(&r.ids[1..]);
        weights.extend(r.train[1..].iter().map(|&w| if w { 1.0 } else { 0.0 }));
        for _ in n..t {
            inputs.push(pad);
            targets.push(pad);
            weights.push(0.0);
        }
    }
    Batch {
        inputs,
        targets,
        weights: Some(weights),
        b: rows.len(),
        t,
        ..Default::default()
    }
}

/// `tokenizer_config.json` of the base with `template` as its chat template (and the BOS/EOS
/// strings the template uses, so transformers renders it the same).
fn tokenizer_config_with_template(
    init: &Path,
    template: &str,
    tok: &cria_core::tokenizer::Tokenizer,
) -> Result<Vec<u8>> {
    let path = init.join("tokenizer_config.json");
    let mut v = if path.exists() {
        fsutil::read_json(&path)?
    } else {
        serde_json::json!({})
    };
    let (bos, eos) = cria_data::template::special_strings(init, tok)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("chat_template".into(), template.trim_end().into());
        for (k, s) in [("bos_token", bos), ("eos_token", eos)] {
            if !o.contains_key(k) && !s.is_empty() {
                o.insert(k.into(), s.into());
            }
        }
    }
    Ok(serde_json::to_vec_pretty(&v).expect("JSON value"))
}

/// Runs supervised fine-tuning; returns the checkpoint directory.
pub fn run(cfg: &SftConfig, resolved: String, rep: &mut dyn Reporter) -> Result<PathBuf> {
    if cfg.data.train.is_empty() {
        return Err(TrainError::Invalid(
            "data.train is empty: name instruction or chat files".into(),
        ));
    }
    let mut model = checkpoint::load_model(&cfg.init, &device::inference_device())?;
    require_lm(&model, &cfg.init)?;
    let (adapter, trainable): (Option<AdapterConfig<'_>>, Option<&Trainable>) = match cfg.method {
        Method::Full => (None, None),
        Method::Lora => {
            model.add_lora(&cfg.lora, cfg.train.seed)?;
            (Some(AdapterConfig::Lora(&cfg.lora)), Some(&is_lora_param))
        }
        Method::LlamaAdapter => {
            model.add_prefix_adapter(&cfg.adapter, cfg.train.seed)?;
            (
                Some(AdapterConfig::Prefix(&cfg.adapter)),
                Some(&is_prefix_param),
            )
        }
    };
    let tok = checkpoint::load_tokenizer(&cfg.init, &model.cfg)?;
    let fmt = ChatFormat::choose(cfg.data.format, &cfg.init, &tok)?;
    let max = (cfg.data.seq_len + 1).min(model.max_len());
    let mut convs = read_all(&cfg.data.train)?;
    let mut val_convs = read_all(&cfg.data.val)?;
    if val_convs.is_empty() && cfg.data.val_fraction > 0.0 {
        let mut order = Order::new(cfg.train.seed, convs.len());
        let perm: Vec<usize> = (0..convs.len() as u64).map(|k| order.index(k)).collect();
        let n_val = ((convs.len() as f64 * cfg.data.val_fraction).round() as usize)
            .clamp(1, convs.len().saturating_sub(1));
        let mut shuffled: Vec<Vec<chat::Message>> =
            perm.into_iter().map(|i| convs[i].clone()).collect();
        val_convs = shuffled.split_off(shuffled.len() - n_val.min(shuffled.len()));
        convs = shuffled;
    }
    let train = prepare(&convs, &tok, &fmt, max, cfg.data.train_on_inputs)?;
    let val = prepare(&val_convs, &tok, &fmt, max, cfg.data.train_on_inputs)?;
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
    let pad = tok.token_to_id(PAD).or(tok.eos_id).unwrap_or(0);
    let mut data = Shuffled::new(
        rows_train,
        rows_val,
        cfg.train.seed,
        cfg.train.batch_size,
        fingerprint,
        move |rows: &[&Encoded]| sft_batch(rows, pad),
    );
    let run = RunDir {
        root: cfg.out.clone(),
    };
    let spec = TrainSpec {
        cfg: &cfg.train,
        run: &run,
        tokenizer_dir: Some(&cfg.init),
        resolved_config: resolved,
        config_file: "sft.toml",
        adapter: adapter.map(|a| (a, cfg.init.as_path())),
        trainable,
        // The format trained in is written into the checkpoint, so chat and transformers
        // render prompts the same way; a checkpoint's own template is kept as it is.
        extra_files: match &fmt {
            ChatFormat::Cria(_) => vec![(
                "tokenizer_config.json".into(),
                tokenizer_config_with_template(&cfg.init, CHAT_TEMPLATE, &tok)?,
            )],
            ChatFormat::Template(t) if t.is(ALPACA_TEMPLATE) => vec![(
                "tokenizer_config.json".into(),
                tokenizer_config_with_template(&cfg.init, ALPACA_TEMPLATE, &tok)?,
            )],
            ChatFormat::Template(_) => vec![],
        },
        objective: &trainer::LmLoss,
    };
    trainer::train(model, &mut data, &spec, rep)?;
    Ok(run.checkpoint())
}
