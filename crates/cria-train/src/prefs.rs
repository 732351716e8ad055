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
use std::path::{Path, PathBuf};

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
    /// Skip malformed records instead of stopping, counting them by reason and writing them
    /// to `out/rejects.jsonl`.
    pub skip_invalid: bool,
    /// Which tokens an over-long row keeps: `keep_start` (its first `seq_len`, cutting the
    /// answers' ends) or `keep_end` (the prompt's last tokens and the answers whole, as TRL's
    /// `max_prompt_length` keeps them; answers are cut only when they alone are too long).
    pub truncation: Truncation,
    /// How a checkpoint without a chat template is prompted: `auto`/`cria` (cria's tokens,
    /// added when missing) or `alpaca` (see cria_train::format).
    pub format: cria_data::chat::FormatChoice,
}

/// The side an over-long preference row is cut from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    #[default]
    KeepStart,
    KeepEnd,
}

impl Default for PrefDataConfig {
    fn default() -> Self {
        PrefDataConfig {
            train: vec![],
            val: vec![],
            val_fraction: 0.1,
            seq_len: 512,
            skip_invalid: false,
            truncation: Truncation::KeepStart,
            format: cria_data::chat::FormatChoice::Auto,
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

/// Rendered preferences, how many rows were cut to the length limit, how many preferences
/// lost prompt tokens (`keep_end`), and how many were dropped because a response lost all its
/// tokens to the cut.
pub struct Encoded {
    pub groups: Vec<Group>,
    pub truncated: usize,
    pub prompt_cut: usize,
    pub dropped: usize,
}

/// Renders every preference, cutting rows to `max` tokens from the side `truncation` says.
pub fn encode(
    prefs: &[Preference],
    tok: &Tokenizer,
    fmt: &ChatFormat,
    max: usize,
    truncation: Truncation,
) -> Result<Encoded> {
    let mut out = Encoded {
        groups: Vec::with_capacity(prefs.len()),
        truncated: 0,
        prompt_cut: 0,
        dropped: 0,
    };
    for (n, p) in prefs.iter().enumerate() {
        let (mut group, prompt_len) = render(p, n, tok, fmt)?;
        if truncation == Truncation::KeepEnd {
            let keep =
                usize::from(tok.bos_id.is_some() && group[0].ids.first() == tok.bos_id.as_ref());
            out.prompt_cut += usize::from(cut_prompt(&mut group, prompt_len, keep, max));
        }
        for row in &mut group {
            if row.ids.len() > max {
                row.ids.truncate(max);
                row.response.truncate(max);
                out.truncated += 1;
            }
        }
        // A row needs a response token after its first (targets are ids[1..]); a preference
        // whose prompt fills the limit has nothing to compare.
        if group.iter().all(|r| r.response.iter().skip(1).any(|t| *t)) {
            out.groups.push(group);
        } else {
            out.dropped += 1;
        }
    }
    Ok(out)
}

/// Each response rendered after the prompt (the mask covering the response), and the
/// prompt's length in tokens.
fn render(p: &Preference, n: usize, tok: &Tokenizer, fmt: &ChatFormat) -> Result<(Group, usize)> {
    let at = |e: cria_core::CoreError| TrainError::Invalid(format!("preference {}: {e}", n + 1));
    let prompt = fmt.encode(&p.prompt, tok, true, false).map_err(at)?;
    let mut group = Vec::with_capacity(p.responses.len());
    for (r, &tier) in p.responses.iter().zip(&p.tiers) {
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
        group.push(Row {
            ids: full.ids,
            response,
            ref_logp: 0.0,
            tier,
        });
    }
    Ok((group, prompt.ids.len()))
}

/// Drops the prompt's earliest tokens (after the first `keep`, a BOS) from every row, as many
/// as the longest row is over `max`, leaving at least one prompt token; returns whether any
/// were dropped. Every row of a preference keeps the same prompt.
fn cut_prompt(group: &mut Group, prompt_len: usize, keep: usize, max: usize) -> bool {
    let longest = group.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    let room = prompt_len.saturating_sub(keep + 1);
    let cut = longest.saturating_sub(max).min(room);
    if cut == 0 {
        return false;
    }
    for row in group.iter_mut() {
        row.ids.drain(keep..keep + cut);
        row.response.drain(keep..keep + cut);
    }
    true
}

/// Splits off validation preferences: the named files, else `val_fraction` of the training
/// records in a seeded order.
pub fn split(
    cfg: &PrefDataConfig,
    seed: u64,
    out: &Path,
) -> Result<(Vec<Preference>, Vec<Preference>)> {
    if cfg.train.is_empty() {
        return Err(TrainError::Invalid(
            "data.train is empty: name preference files".into(),
        ));
    }
    let mut rejects = crate::data::rejects(cfg.skip_invalid);
    let train = cria_data::prefs::read_all_preferences_with(&cfg.train, &mut rejects)?;
    let val = cria_data::prefs::read_all_preferences_with(&cfg.val, &mut rejects)?;
    crate::data::write_rejects(&rejects, out)?;
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
    out: &Path,
    tok: &Tokenizer,
    fmt: &ChatFormat,
    max: usize,
) -> Result<(Encoded, Encoded)> {
    let (train, val) = split(cfg, seed, out)?;
    let (t, v) = (
        encode(&train, tok, fmt, max, cfg.truncation)?,
        encode(&val, tok, fmt, max, cfg.truncation)?,
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(prompt: &[u32], reply: &[u32]) -> Row {
        Row::reply(prompt, reply)
    }

    #[test]
    fn keep_end_drops_the_prompts_first_tokens_after_bos_for_every_row() {
        // BOS 1, prompt 1 10 11 12 13 (5 tokens), replies of 3 and 2 tokens; max 6: the
        // longer row is 8, so 2 prompt tokens after BOS go, from both rows alike.
        let mut g = vec![
            row(&[1, 10, 11, 12, 13], &[20, 21, 22]),
            row(&[1, 10, 11, 12, 13], &[30, 31]),
        ];
        assert!(cut_prompt(&mut g, 5, 1, 6));
        assert_eq!(g[0].ids, vec![1, 12, 13, 20, 21, 22]);
        assert_eq!(g[1].ids, vec![1, 12, 13, 30, 31]);
        assert_eq!(g[0].response, vec![false, false, false, true, true, true]);
        // At least one prompt token stays: with max 3 only 3 of the 4 after BOS can go.
        let mut g = vec![row(&[1, 10, 11, 12, 13], &[20, 21, 22])];
        assert!(cut_prompt(&mut g, 5, 1, 3));
        assert_eq!(g[0].ids, vec![1, 13, 20, 21, 22]);
        // Short enough: nothing changes.
        let mut g = vec![row(&[1, 10], &[20])];
        assert!(!cut_prompt(&mut g, 2, 1, 8));
        assert_eq!(g[0].ids, vec![1, 10, 20]);
    }
}
