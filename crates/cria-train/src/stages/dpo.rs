//! `cria dpo`: Direct Preference Optimization (Rafailov et al. 2023) with the sigmoid loss. The
//! reference is the starting checkpoint, frozen: with LoRA that is the base with the adapter
//! off. Its log-probabilities depend only on the data, so they are computed once before
//! training (one forward pass over the data) and the reference model is then dropped: only the
//! policy stays in memory. K-way rankings contribute every ordered pair of their responses,
//! or (`pairs = "best"`) the best response against each other one.

use crate::batch::{Batch, Group, Layout};
use crate::check;
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::format;
use crate::losses::{chosen_nll, dpo_loss};
use crate::method::{self, Method};
use crate::metrics::{Metrics, Reporter, RunDir};
use crate::prefs::{self, PrefDataConfig, fingerprint};
use crate::scoring::{batch_logps, group_logps};
use crate::trainer::{self, Objective, TrainSpec};
use cria_core::nn::lora::LoraConfig;
use cria_core::{Device, Llama, Tensor, checkpoint, device};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DpoConfig {
    /// The run directory.
    pub out: PathBuf,
    /// The SFT checkpoint: the policy's start and the frozen reference.
    pub init: PathBuf,
    /// `full` or `lora` (`llama-adapter` is not offered for DPO).
    pub method: Method,
    pub lora: LoraConfig,
    /// Strength of the implicit KL constraint: larger stays closer to the reference.
    pub beta: f64,
    /// Which pairs a K-way ranking gives: `all` ordered pairs (K(K−1)/2), or the `best`
    /// response against each of the others (K−1).
    pub pairs: Pairs,
    /// Weight of the chosen responses' per-token NLL added to the DPO loss (0 = plain DPO;
    /// TRL's `loss_type = ["sigmoid", "sft"]`, the RPO loss). It keeps the chosen answers
    /// likely while DPO pushes the rejected ones down, which small models otherwise pay for
    /// in garbled answers.
    pub sft_weight: f64,
    pub data: PrefDataConfig,
    pub train: TrainConfig,
}

impl Default for DpoConfig {
    fn default() -> Self {
        DpoConfig {
            out: PathBuf::new(),
            init: PathBuf::new(),
            method: Method::Full,
            lora: LoraConfig::default(),
            beta: 0.1,
            pairs: Pairs::All,
            sft_weight: 0.0,
            data: PrefDataConfig::default(),
            train: TrainConfig::default(),
        }
    }
}

impl DpoConfig {
    /// Range checks of every setting (the context is checked once the model is known).
    pub fn validate(&self) -> Result<()> {
        check::positive("beta", self.beta)?;
        check::non_negative("sft_weight", self.sft_weight)?;
        method::offered(self.method, "DPO", &[Method::Full, Method::Lora])?;
        method::validate(self.method, &self.lora, None)?;
        self.data.validate()?;
        self.train.validate("train")
    }
}

/// The pairs DPO trains on from a ranking of K responses.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pairs {
    /// Every (better, worse) pair.
    #[default]
    All,
    /// The best response against each of the others: every pair teaches what the labeller
    /// liked most, not the order among answers that are all bad.
    Best,
}

/// DPO's loss on rows in chosen/rejected pairs carrying their reference log-probs.
pub struct DpoObjective {
    pub beta: f64,
    /// Weight of the chosen responses' per-token NLL (see [`DpoConfig::sft_weight`]).
    pub sft_weight: f64,
}

impl Objective for DpoObjective {
    fn loss(&self, model: &Llama, batch: &Batch, device: &Device) -> Result<(Tensor<1>, Metrics)> {
        let lp = batch_logps(model, batch, device);
        let (loss, mut metrics) = dpo_loss(lp.clone(), &batch.aux.ref_logps, self.beta);
        if self.sft_weight == 0.0 {
            return Ok((loss, metrics));
        }
        let w = batch.weights.as_ref().expect("token layout has weights");
        let chosen_tokens: f32 = w
            .chunks(batch.t)
            .step_by(2)
            .map(|row| row.iter().sum::<f32>())
            .sum();
        let nll = chosen_nll(lp, chosen_tokens);
        metrics.insert("nll".into(), nll.clone().into_scalar::<f32>() as f64);
        Ok((loss + nll * self.sft_weight, metrics))
    }
}

/// The (better, worse) pairs of each group that `which` asks for, as two-row groups; tied
/// responses make no pair, and `best` takes every response tied for first.
fn pairs(groups: Vec<Group>, which: Pairs) -> Vec<Group> {
    let mut out = Vec::new();
    for g in groups {
        let top = g.first().map_or(0, |r| r.tier);
        for i in 0..g.len() {
            if which == Pairs::Best && g[i].tier != top {
                break;
            }
            for j in i + 1..g.len() {
                if g[i].tier < g[j].tier {
                    out.push(vec![g[i].clone(), g[j].clone()]);
                }
            }
        }
    }
    out
}

/// Fills in each row's reference log-probability with `reference`.
///
/// With several ranks the batches are dealt out round-robin and the results gathered (each
/// row is filled by one rank and summed with zeros elsewhere), so every rank holds the values
/// one process computes, batch for batch.
fn fill_reference(reference: &Llama, groups: &mut [Group], pad: u32, batch: usize) {
    let world = crate::collective::world();
    let batch = batch.max(1);
    let mut lp = vec![0.0f32; groups.iter().map(|g| g.len()).sum()];
    let mut at = 0;
    for (k, chunk) in groups.chunks(batch).enumerate() {
        let rows: usize = chunk.iter().map(|g| g.len()).sum();
        if k % world.size() == world.rank() {
            lp[at..at + rows].copy_from_slice(&group_logps(reference, chunk, pad, batch));
        }
        at += rows;
    }
    world.all_reduce_f32(&mut lp);
    for (row, v) in groups.iter_mut().flatten().zip(lp) {
        row.ref_logp = v;
    }
}

/// Runs DPO; returns the checkpoint directory.
pub fn run(cfg: &DpoConfig, resolved: String, rep: &mut dyn Reporter) -> Result<PathBuf> {
    cfg.validate()?;
    let inf = device::inference_device();
    let mut reference = checkpoint::load_model(&cfg.init, &inf)?;
    method::require_lm(&reference, &cfg.init)?;
    let mut tok = checkpoint::load_tokenizer(&cfg.init, &reference.cfg)?;
    let prompting = format::resolve(cfg.data.format, &cfg.init, &mut reference, &mut tok)?;
    if prompting.added_tokens > 0 && cfg.method != Method::Full {
        return Err(TrainError::Invalid(
            "the starting checkpoint has no chat template and no cria chat tokens: LoRA cannot \
             learn new tokens; use data.format = \"alpaca\" or method = \"full\""
                .into(),
        ));
    }
    let pad = tok.pad_id();
    let fmt = &prompting.fmt;
    check::fits_context("data.seq_len", cfg.data.seq_len, reference.max_len())?;
    let max = cfg.data.seq_len + 1;
    let (t, v) = prefs::load(&cfg.data, cfg.train.seed, &cfg.out, &tok, fmt, max)?;
    let (mut train, mut val) = (pairs(t.groups, cfg.pairs), pairs(v.groups, cfg.pairs));
    let fp = format!(
        "dpo {} beta={} seq_len={}",
        fingerprint(&train),
        cfg.beta,
        cfg.data.seq_len
    );
    tracing::info!(
        pairs = train.len(),
        val_pairs = val.len(),
        truncated = t.truncated + v.truncated,
        prompt_cut = t.prompt_cut + v.prompt_cut,
        dropped = t.dropped + v.dropped,
        "DPO data ready; computing the reference log-probabilities"
    );
    fill_reference(&reference, &mut train, pad, cfg.train.batch_size);
    fill_reference(&reference, &mut val, pad, cfg.train.batch_size);
    let mut model = reference;
    let adapted = method::apply(&mut model, cfg.method, &cfg.lora, None, cfg.train.seed)?;
    let (seed, bs) = (cfg.train.seed, cfg.train.batch_size);
    let mut data = prefs::data(train, val, seed, bs, fp, pad, Layout::Tokens);
    let run = RunDir::new(&cfg.out);
    let objective = DpoObjective {
        beta: cfg.beta,
        sft_weight: cfg.sft_weight,
    };
    let spec = TrainSpec {
        adapter: adapted.adapter.map(|a| (a, cfg.init.as_path())),
        trainable: adapted.trainable,
        extra_files: prompting.checkpoint_files(&cfg.init, &tok)?,
        ..TrainSpec::new(
            &cfg.train, &run, &cfg.init, resolved, "dpo.toml", &objective,
        )
    };
    trainer::train(model, &mut data, &spec, rep)?;
    Ok(run.checkpoint())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Row;

    fn group(ids: &[u32]) -> Group {
        ids.iter()
            .enumerate()
            .map(|(tier, &i)| Row {
                ids: vec![i],
                response: vec![true],
                ref_logp: 0.0,
                tier,
            })
            .collect()
    }

    #[test]
    fn rankings_give_all_ordered_pairs_or_the_best_against_each() {
        let firsts = |ps: Vec<Group>| -> Vec<(u32, u32)> {
            ps.iter().map(|p| (p[0].ids[0], p[1].ids[0])).collect()
        };
        let all = firsts(pairs(vec![group(&[1, 2, 3]), group(&[7, 8])], Pairs::All));
        assert_eq!(all, vec![(1, 2), (1, 3), (2, 3), (7, 8)]);
        let best = firsts(pairs(vec![group(&[1, 2, 3, 4])], Pairs::Best));
        assert_eq!(best, vec![(1, 2), (1, 3), (1, 4)]);
        // Ties: 1 and 2 share first place, 3 and 4 the second.
        let mut tied = group(&[1, 2, 3, 4]);
        for (row, tier) in tied.iter_mut().zip([0, 0, 1, 1]) {
            row.tier = tier;
        }
        let all = firsts(pairs(vec![tied.clone()], Pairs::All));
        assert_eq!(all, vec![(1, 3), (1, 4), (2, 3), (2, 4)]);
        let best = firsts(pairs(vec![tied], Pairs::Best));
        assert_eq!(best, vec![(1, 3), (1, 4), (2, 3), (2, 4)]);
    }
}
