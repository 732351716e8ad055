//! PPO's third step: per-token quantities of the sampled replies under the old policy, the
//! frozen reference and (PPO) the value model, and the advantages:
//!
//! - PPO: InstructGPT's KL-penalised reward `-β (log π - log π_sft)` at every reply token plus
//!   the score at the last, and advantages by GAE (Schulman et al. 2016), whitened over the
//!   batch;
//! - RLOO: each reply's reward is its score minus `β Σ_t (log π - log π_sft)`, its advantage
//!   that reward minus the mean of the other replies to its prompt;
//! - GRPO: each reply's advantage is its score centred (and scaled) within its prompt's group;
//!   the KL to the reference is a term of the loss, so the reference's log-probs are kept.

use super::Ctx;
use super::config::Algorithm;
use crate::batch::{Batch, Layout, Row, make_batch};
use crate::losses::{
    gae, grpo_advantages, kl_penalised_rewards, kl_penalised_scores, reply_kl, rloo_advantages,
    whiten,
};
use crate::sampler::Sample;
use crate::scoring::token_logps;
use cria_core::params::to_vec;
use cria_core::{Llama, Tensor};

/// One iteration's replies and the per-token quantities the update needs, `B*T` each
/// (row-major over the right-padded batch of prompt + reply); those an algorithm does not use
/// are empty.
#[derive(Default)]
pub(super) struct Buffer {
    pub batch: Batch,
    pub mask: Vec<f32>,
    pub old_logp: Vec<f32>,
    /// The reference's log-probs (GRPO's loss).
    pub ref_logp: Vec<f32>,
    /// The value model's values and GAE's returns (PPO).
    pub old_values: Vec<f32>,
    /// The same values as a tracked tensor of the training device, `(B, T)`, when the
    /// iteration takes one update of all its rows (see [`single_update`]): that update's value
    /// loss starts from this forward pass instead of running its own.
    pub values: Option<Tensor<2>>,
    pub returns: Vec<f32>,
    /// Each token's advantage (a critic-free reply's at each of its tokens).
    pub adv: Vec<f32>,
    /// Each reply's advantage (the critic-free algorithms; `B` values).
    pub row_adv: Vec<f32>,
    /// Sampled KL to the reference, nats per reply.
    pub kl: f64,
    pub reply_tokens: usize,
    /// The share of prompts whose replies all scored the same (no signal for RLOO and GRPO).
    pub flat_groups: Option<f64>,
}

/// The buffer of `samples` (sampled with their log-probabilities by the policy; the replies to
/// one prompt consecutive), with `scores` the shaped reward of each reply and `beta` the KL
/// coefficient.
pub(super) fn advantages(
    ctx: &Ctx<'_>,
    reference: &Llama,
    value: Option<&Llama>,
    samples: &[Sample],
    scores: &[f32],
    beta: f64,
) -> Buffer {
    let groups: Vec<Vec<Row>> = samples
        .iter()
        .map(|s| vec![Row::reply(&s.prompt, &s.reply)])
        .collect();
    let batch = make_batch(groups.iter(), ctx.setup.pad, Layout::Tokens);
    let mask: Vec<f32> = batch.weights.clone().expect("token layout");
    let (inf, temp) = (&ctx.inf, ctx.cfg.rollout.temperature);
    // Each rank runs the three models on its share of the rows; every rank gets all rows.
    let world = crate::collective::world();
    let part = rows_of(&batch, crate::dp::my_rows(world, batch.b));
    let (b, t) = (batch.b, batch.t);
    let gather = |v: Vec<f32>| crate::dp::gather_rows(world, b, t, &v);
    let old_logp = sampled_logps(samples, &mask, t);
    let algorithm = ctx.cfg.ppo.algorithm;
    let once = single_update(ctx, world.size(), b);
    // The reference's and the value model's passes are independent: side by side they keep
    // both cores busy through each other's single-threaded stretches.
    let (ref_part, value_part) = rayon::join(
        || to_vec(token_logps(reference, &part, inf, temp).0),
        || {
            (algorithm == Algorithm::Ppo)
                .then(|| value_pass(ctx, value.expect("PPO has a value model"), &part, once))
        },
    );
    let ref_logp = gather(ref_part);
    let mut buf = Buffer {
        old_logp,
        ref_logp,
        reply_tokens: mask.iter().filter(|m| **m > 0.0).count(),
        mask,
        batch,
        old_values: vec![],
        values: None,
        returns: vec![],
        adv: vec![],
        row_adv: vec![],
        kl: 0.0,
        flat_groups: None,
    };
    let row_kl = reply_kl(&buf.old_logp, &buf.ref_logp, &buf.mask, buf.batch.t);
    buf.kl = row_kl.iter().sum::<f64>() / buf.batch.b as f64;
    match algorithm {
        Algorithm::Ppo => {
            let (values, tracked) = value_part.expect("PPO's values");
            buf.old_values = gather(values);
            buf.values = tracked;
            gae_advantages(ctx, &mut buf, scores, beta);
        }
        Algorithm::Rloo | Algorithm::Grpo => {
            let k = ctx.cfg.samples_per_prompt();
            buf.row_adv = if algorithm == Algorithm::Rloo {
                rloo_advantages(&kl_penalised_scores(scores, &row_kl, beta), k)
            } else {
                grpo_advantages(scores, k, ctx.cfg.ppo.scale_advantages)
            };
            let flat = scores
                .chunks(k)
                .filter(|g| g.iter().all(|x| *x == g[0]))
                .count();
            buf.flat_groups = Some(flat as f64 / (scores.len() / k) as f64);
            buf.adv = (0..buf.mask.len())
                .map(|i| buf.row_adv[i / t] * buf.mask[i])
                .collect();
            if algorithm == Algorithm::Rloo {
                buf.ref_logp = vec![];
            }
        }
    }
    buf
}

/// The value model's values of `part`'s positions, and with `once` ([`single_update`]) the
/// same values as a tracked tensor: the update's own forward pass, graph kept (the value model
/// is on the training device already), whose values are the old values exactly.
fn value_pass(
    ctx: &Ctx<'_>,
    value: &Llama,
    part: &Batch,
    once: bool,
) -> (Vec<f32>, Option<Tensor<2>>) {
    if once {
        let tracked = value.scores(part.input_ids(&ctx.train_dev));
        (to_vec(tracked.clone().detach()), Some(tracked))
    } else {
        let v = value.clone().to_device(&ctx.inf);
        (to_vec(v.scores(part.input_ids(&ctx.inf))), None)
    }
}

/// Whether an iteration's update is one step on all `rows` replies in one process (one epoch,
/// one minibatch, one rank): the value model's weights do not change between computing the
/// old values and the value loss then, so one forward pass serves both. With several ranks
/// each computes old values for a contiguous share of rows but updates every n-th row, so
/// they keep the two passes.
pub(super) fn single_update(ctx: &Ctx<'_>, ranks: usize, rows: usize) -> bool {
    let p = &ctx.cfg.ppo;
    p.algorithm == Algorithm::Ppo && p.epochs == 1 && p.minibatch_size >= rows && ranks == 1
}

/// PPO's advantages and returns: GAE over each reply's KL-penalised per-token rewards against
/// the value model's values, the advantages whitened over the batch.
fn gae_advantages(ctx: &Ctx<'_>, buf: &mut Buffer, scores: &[f32], beta: f64) {
    let p = &ctx.cfg.ppo;
    let (t, mask) = (buf.batch.t, &buf.mask);
    let (mut adv, mut returns) = (vec![0f32; mask.len()], vec![0f32; mask.len()]);
    for (r, &score) in scores.iter().enumerate() {
        let pos: Vec<usize> = (r * t..(r + 1) * t).filter(|&i| mask[i] > 0.0).collect();
        if pos.is_empty() {
            continue;
        }
        let pick = |v: &[f32]| pos.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        let (lp, rl, vals) = (
            pick(&buf.old_logp),
            pick(&buf.ref_logp),
            pick(&buf.old_values),
        );
        let rewards = kl_penalised_rewards(&lp, &rl, score, beta);
        let (a, ret) = gae(&rewards, &vals, p.gamma, p.lam);
        for ((&i, a), ret) in pos.iter().zip(a).zip(ret) {
            adv[i] = a;
            returns[i] = ret;
        }
    }
    let maskb: Vec<bool> = mask.iter().map(|x| *x > 0.0).collect();
    whiten(&mut adv, &maskb, true);
    buf.adv = adv;
    buf.returns = returns;
    buf.ref_logp = vec![];
}

/// The old policy's log-probabilities at the reply positions of the right-padded batch, as
/// sampling computed them (the step that drew each token had its distribution at hand): the
/// old-policy forward pass PPO would otherwise run. They equal a forward pass's up to the
/// order f32 sums are added in.
fn sampled_logps(samples: &[Sample], mask: &[f32], t: usize) -> Vec<f32> {
    let mut out = vec![0f32; mask.len()];
    for (r, s) in samples.iter().enumerate() {
        let pos: Vec<usize> = (r * t..(r + 1) * t).filter(|&i| mask[i] > 0.0).collect();
        assert!(
            pos.len() == s.reply.len() && s.logps.len() == s.reply.len(),
            "one sampled log-probability per reply token"
        );
        for (i, lp) in pos.into_iter().zip(&s.logps) {
            out[i] = *lp;
        }
    }
    out
}

/// Rows `range` of a token-layout batch, at the batch's full width.
fn rows_of(batch: &Batch, range: std::ops::Range<usize>) -> Batch {
    let t = batch.t;
    let cells = range.start * t..range.end * t;
    Batch {
        inputs: batch.inputs[cells.clone()].to_vec(),
        targets: batch.targets[cells.clone()].to_vec(),
        weights: batch.weights.as_ref().map(|w| w[cells].to_vec()),
        b: range.len(),
        t,
        aux: crate::batch::Aux {
            lengths: batch.aux.lengths[range].to_vec(),
            ..Default::default()
        },
    }
}
