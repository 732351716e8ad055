//! Preference records as training rows, shared by the reward model and DPO: each response is
//! rendered after its prompt in the checkpoint's chat format; the loss mask covers the response
//! only (its turns and their end-of-turn tokens).

use crate::batch::{Group, Layout, Row, make_batch};
use crate::data::{Shuffled, hold_out};
use crate::error::{Result, TrainError};
use cria_core::hash::{FNV_OFFSET, fnv1a, fnv1a_ids};
use cria_core::tokenizer::Tokenizer;
use cria_data::chat::{ChatFormat, Message};
use cria_data::prefs::Preference;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrefDataConfig {
    /// Preference files: pairs (with or without `prompt`), HH-RLHF transcripts, K-way rankings.
    pub train: Vec<PathBuf>,
    /// Validation files; when empty, `val_fraction` of the training records is held out.
    pub val: Vec<PathBuf>,
    pub val_fraction: f64,
    /// Longest row in tokens; longer ones keep their first `seq_len` tokens (counted in the log).
    pub seq_len: usize,
}

impl Default for PrefDataConfig {
    fn default() -> Self {
        PrefDataConfig {
            train: vec![],
            val: vec![],
            val_fraction: 0.1,
            seq_len: 512,
        }
    }
}

impl PrefDataConfig {
    /// Range checks of `data.*`.
    pub fn validate(&self) -> Result<()> {
        if self.train.is_empty() {
            return Err(TrainError::Invalid(
                "data.train is empty: name preference files".into(),
            ));
        }
        crate::check::at_least("data.seq_len", self.seq_len as u64, 1)?;
        crate::check::fraction("data.val_fraction", self.val_fraction)
    }
}

/// Rendered preferences, how many rows were cut to the length limit, and how many
/// preferences were dropped because a response lost all its tokens to the cut.
pub struct Encoded {
    pub groups: Vec<Group>,
    pub truncated: usize,
    pub dropped: usize,
}

/// Renders every preference, cutting rows to `max` tokens.
pub fn encode(
    prefs: &[Preference],
    tok: &Tokenizer,
    fmt: &ChatFormat,
    max: usize,
) -> Result<Encoded> {
    let (mut truncated, mut dropped) = (0, 0);
    let mut groups = Vec::with_capacity(prefs.len());
    for (n, p) in prefs.iter().enumerate() {
        let at =
            |e: cria_core::CoreError| TrainError::Invalid(format!("preference {}: {e}", n + 1));
        let prompt = fmt.encode(&p.prompt, tok, true, false).map_err(at)?;
        let mut group = Vec::with_capacity(p.responses.len());
        for r in &p.responses {
            let conv: Vec<Message> = p.prompt.iter().chain(r).cloned().collect();
            let full = fmt.encode(&conv, tok, false, false).map_err(at)?;
            if !full.ids.starts_with(&prompt.ids) {
                return Err(TrainError::Invalid(format!(
                    "preference {}: the chat format renders the prompt differently inside the \
                     conversation, so the response cannot be located",
                    n + 1
                )));
            }
            let mut response = full.train;
            response[..prompt.ids.len()]
                .iter_mut()
                .for_each(|t| *t = false);
            let mut ids = full.ids;
            if ids.len() > max {
                ids.truncate(max);
                response.truncate(max);
                truncated += 1;
            }
            group.push(Row {
                ids,
                response,
                ref_logp: 0.0,
            });
        }
        // A row needs a response token after its first (targets are ids[1..]); a preference
        // whose prompt fills the limit has nothing to compare.
        if group.iter().all(|r| r.response.iter().skip(1).any(|t| *t)) {
            groups.push(group);
        } else {
            dropped += 1;
        }
    }
    Ok(Encoded {
        groups,
        truncated,
        dropped,
    })
}

/// Splits off validation preferences: the named files, else `val_fraction` of the training
/// records in a seeded order.
pub fn split(cfg: &PrefDataConfig, seed: u64) -> Result<(Vec<Preference>, Vec<Preference>)> {
    if cfg.train.is_empty() {
        return Err(TrainError::Invalid(
            "data.train is empty: name preference files".into(),
        ));
    }
    let train = cria_data::prefs::read_all_preferences(&cfg.train)?;
    let val = cria_data::prefs::read_all_preferences(&cfg.val)?;
    if !val.is_empty() {
        return Ok((train, val));
    }
    Ok(hold_out(train, cfg.val_fraction, seed))
}

/// The training and validation preferences (see [`split`]) rendered in `fmt` and cut to `max`
/// tokens; an error when no training preference keeps a response within the limit.
pub fn load(
    cfg: &PrefDataConfig,
    seed: u64,
    tok: &Tokenizer,
    fmt: &ChatFormat,
    max: usize,
) -> Result<(Encoded, Encoded)> {
    let (train, val) = split(cfg, seed)?;
    let (t, v) = (encode(&train, tok, fmt, max)?, encode(&val, tok, fmt, max)?);
    if t.groups.is_empty() {
        return Err(TrainError::Invalid(format!(
            "no preference has a response within data.seq_len = {} tokens",
            cfg.seq_len
        )));
    }
    Ok((t, v))
}

/// Preference groups in a seeded order, `batch_size` prompts per micro-batch.
pub fn data(
    train: Vec<Group>,
    val: Vec<Group>,
    seed: u64,
    batch_size: usize,
    fingerprint: String,
    pad: u32,
    layout: Layout,
) -> Shuffled<Group> {
    Shuffled::new(
        train,
        val,
        seed,
        batch_size,
        fingerprint,
        move |g: &[&Group]| make_batch(g.iter().copied(), pad, layout),
    )
}

/// A content fingerprint of encoded groups (for refusing a resume on other data); FNV-1a,
/// so it reads the same with every toolchain.
pub fn fingerprint(groups: &[Group]) -> String {
    let mut h = FNV_OFFSET;
    for g in groups {
        h = fnv1a(&(g.len() as u64).to_le_bytes(), h);
        for r in g {
            h = fnv1a_ids(&r.ids, fnv1a(&(r.ids.len() as u64).to_le_bytes(), h));
            let mask: Vec<u8> = r.response.iter().map(|&x| u8::from(x)).collect();
            h = fnv1a(&mask, h);
        }
    }
    format!("groups={} hash={h:016x}", groups.len())
}
