//! Preference records as training rows, shared by the reward model and DPO: each response is
//! rendered after its prompt in the checkpoint's chat format; the loss mask covers the response
//! only (its turns and their end-of-turn tokens).

use crate::error::{Result, TrainError};
use crate::trainer::{Aux, Batch, Shuffled};
use cria_core::tokenizer::Tokenizer;
use cria_data::chat::{ChatFormat, Message};
use cria_data::prefs::Preference;
use cria_data::shards::Order;
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

/// One rendered response: its ids and, per id, whether it belongs to the response.
#[derive(Debug, Clone)]
pub struct Row {
    pub ids: Vec<u32>,
    pub response: Vec<bool>,
    /// The reference model's log-probability of the response (DPO), filled in later.
    pub ref_logp: f32,
}

/// A prompt's responses as rows, best first.
pub type Group = Vec<Row>;

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
    if !val.is_empty() || cfg.val_fraction <= 0.0 || train.len() < 2 {
        return Ok((train, val));
    }
    let mut order = Order::new(seed, train.len());
    let n_val =
        ((train.len() as f64 * cfg.val_fraction).round() as usize).clamp(1, train.len() - 1);
    let mut shuffled: Vec<Preference> = (0..train.len() as u64)
        .map(|k| train[order.index(k)].clone())
        .collect();
    let val = shuffled.split_off(shuffled.len() - n_val);
    Ok((shuffled, val))
}

/// How rows become a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout {
    /// Whole sequences; the reward is read at each row's last token.
    Score,
    /// Inputs and next-token targets, weighted by the response mask (sequence log-probs).
    Tokens,
}

/// Right-padded rows of the given groups.
pub fn make_batch<'a>(groups: impl Iterator<Item = &'a Group>, pad: u32, layout: Layout) -> Batch {
    let groups: Vec<&Group> = groups.collect();
    let rows: Vec<&Row> = groups.iter().flat_map(|g| g.iter()).collect();
    let shift = usize::from(layout == Layout::Tokens);
    let t = rows
        .iter()
        .map(|r| r.ids.len() - shift)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut b = Batch {
        b: rows.len(),
        t,
        aux: Aux {
            lengths: vec![],
            groups: groups.iter().map(|g| g.len()).collect(),
            ref_logps: rows.iter().map(|r| r.ref_logp).collect(),
        },
        ..Default::default()
    };
    let mut weights = vec![];
    for r in &rows {
        let n = r.ids.len() - shift;
        b.inputs.extend_from_slice(&r.ids[..n]);
        b.inputs.extend(std::iter::repeat_n(pad, t - n));
        b.aux.lengths.push(n);
        if layout == Layout::Tokens {
            b.targets.extend_from_slice(&r.ids[1..]);
            b.targets.extend(std::iter::repeat_n(pad, t - n));
            weights.extend(r.response[1..].iter().map(|&w| if w { 1.0 } else { 0.0 }));
            weights.extend(std::iter::repeat_n(0.0, t - n));
        }
    }
    if layout == Layout::Tokens {
        b.weights = Some(weights);
    }
    b
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

/// A content fingerprint of encoded groups (for refusing a resume on other data).
pub fn fingerprint(groups: &[Group]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for g in groups {
        g.len().hash(&mut h);
        for r in g {
            r.ids.hash(&mut h);
            r.response.hash(&mut h);
        }
    }
    format!("groups={} hash={:016x}", groups.len(), h.finish())
}
