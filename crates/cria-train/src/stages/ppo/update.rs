//! PPO's fourth step: `epochs` passes over the iteration's replies in shuffled minibatches,
//! each one step of the policy on the clipped surrogate (plus the pretraining loss with
//! PPO-ptx) and one step of the value model on the clipped value loss, both through the
//! shared parameter update.
//!
//! With several ranks each takes every n-th row of a minibatch, weighs its token-mean losses
//! and figures by its share of the minibatch's reply tokens, and the gradients and figures are
//! summed over the ranks: the step one process takes on the whole minibatch (PPO-ptx's batch
//! runs on rank 0).

use super::advantages::Buffer;
use super::checkpoint::PpoState;
use super::setup::Models;
use super::{Ctx, Live};
use crate::batch::Batch;
use crate::data::{DataSource, TokenShards};
use crate::error::Result;
use crate::losses::{ppo_policy_loss, ppo_value_loss};
use crate::method::{Trainable, every_param};
use crate::metrics::Metrics;
use crate::scoring::{lm_loss, token_logps};
use crate::update::{Grads, NonFiniteNorm, Optimizer};
use cria_core::params::to_vec;
use cria_core::{Llama, Tensor};
use cria_data::shards::Order;

/// What the epochs report: figures averaged over minibatches, the last policy gradient norm,
/// and the policy's entropy summed over the first epoch's replies.
pub(super) struct UpdateStats {
    pub metrics: Metrics,
    pub grad_norm: f64,
    pub entropy_sum: f64,
}

/// Runs the update epochs of iteration `k` at learning rate `lr`.
pub(super) fn epochs(
    ctx: &Ctx<'_>,
    live: &mut Live,
    buf: &Buffer,
    key: u64,
    lr: f64,
) -> Result<UpdateStats> {
    let Live {
        models: m,
        opts,
        st,
        ptx,
        ..
    } = live;
    let (p, train) = (&ctx.cfg.ppo, &ctx.cfg.train);
    let vlr = p.value_lr.unwrap_or(train.lr) * lr / train.lr.max(f64::MIN_POSITIVE);
    let trainable: &Trainable = ctx.setup.adapted.trainable.unwrap_or(&every_param);
    let mut stats = UpdateStats {
        metrics: Metrics::new(),
        grad_norm: 0.0,
        entropy_sum: 0.0,
    };
    let mut updates = 0usize;
    let world = crate::collective::world();
    for epoch in 0..p.epochs {
        let mut rows = Order::new(key ^ cria_core::hash::mix(epoch as u64 + 1), buf.batch.b);
        let perm: Vec<usize> = (0..buf.batch.b as u64).map(|x| rows.index(x)).collect();
        for whole in perm.chunks(p.minibatch_size) {
            let mb: Vec<usize> = whole
                .iter()
                .copied()
                .skip(world.rank())
                .step_by(world.size())
                .collect();
            let (b, cols) = slice(buf, &mb);
            let share = token_share(world, &cols[0]);
            let entropy_rows = (epoch == 0).then_some(whole.len());
            let (loss, vloss, mut figures) =
                minibatch_losses(ctx, m, &b, &cols, share, entropy_rows, ptx.as_mut(), st)?;
            let mut pg = figures["policy_loss"];
            crate::dp::reduce_figures(world, &mut pg, &mut 0, &mut figures);
            if !pg.is_finite() {
                return Err(ctx.diverged(st.iteration + 1, "policy loss", pg));
            }
            let it = st.iteration + 1;
            let g = step(&mut m.policy, &mut opts.policy, loss, trainable, lr)?;
            stats.grad_norm =
                g.map_err(|NonFiniteNorm(n)| ctx.diverged(it, "policy gradient norm", n))?;
            step(&mut m.value, &mut opts.value, vloss, &every_param, vlr)?
                .map_err(|NonFiniteNorm(n)| ctx.diverged(it, "value gradient norm", n))?;
            for (k, v) in figures {
                match k.as_str() {
                    "entropy_sum" => stats.entropy_sum += v,
                    _ => *stats.metrics.entry(k).or_default() += v,
                }
            }
            updates += 1;
        }
    }
    for v in stats.metrics.values_mut() {
        *v /= updates.max(1) as f64;
    }
    Ok(stats)
}

/// This rank's part of one minibatch's objectives: the policy loss (PPO-ptx's term added) and
/// the value loss, each weighted by the rank's token `share`, and their figures likewise; with
/// `entropy_rows` (the first epoch) also the entropy summed over the minibatch's replies.
#[allow(clippy::too_many_arguments)]
fn minibatch_losses(
    ctx: &Ctx<'_>,
    m: &Models,
    b: &Batch,
    cols: &[Vec<f32>; 5],
    share: f64,
    entropy_rows: Option<usize>,
    ptx: Option<&mut TokenShards>,
    st: &mut PpoState,
) -> Result<(Tensor<1>, Tensor<1>, Metrics)> {
    let p = &ctx.cfg.ppo;
    let temperature = ctx.cfg.rollout.temperature;
    let (logp, logits) = token_logps(&m.policy, b, &ctx.train_dev, temperature);
    let mut figures = Metrics::new();
    if let Some(rows) = entropy_rows {
        // The minibatch's token-mean entropy (shares summed over ranks) per reply.
        let h = entropy(logits, &cols[0]) * share * rows as f64;
        figures.insert("entropy_sum".into(), h);
    }
    let (loss, pm) = ppo_policy_loss(logp, &cols[1], &cols[3], &cols[0], p.clip_range);
    let loss = loss * share;
    figures.insert("policy_loss".into(), scalar(&loss));
    let loss = with_ptx(ctx, &m.policy, loss, ptx, st, &mut figures)?;
    let values = m.value.scores(b.input_ids(&ctx.train_dev));
    let (vloss, vm) = ppo_value_loss(values, &cols[2], &cols[4], &cols[0], p.value_clip_range);
    let vloss = vloss * share;
    figures.insert("value_loss".into(), scalar(&vloss));
    for (k, v) in pm.into_iter().chain(vm) {
        figures.insert(k, v * share);
    }
    Ok((loss, vloss, figures))
}

/// This rank's share of a minibatch's reply tokens (`mask` its rows' mask): its token-mean
/// losses times the share sum over the ranks to the whole minibatch's token mean.
fn token_share(world: &dyn crate::collective::Collective, mask: &[f32]) -> f64 {
    let mine = mask.iter().map(|x| *x as f64).sum::<f64>();
    if world.size() == 1 {
        return 1.0;
    }
    let mut all = [mine];
    world.all_reduce_f64(&mut all);
    // The losses divide by at least one token, as here.
    mine.max(1.0) / all[0].max(1.0)
}

/// PPO-ptx: the policy loss plus `ptx_coef` times the pretraining loss on the next batch
/// (on rank 0 alone when there are several; every rank moves the cursor).
fn with_ptx(
    ctx: &Ctx<'_>,
    policy: &Llama,
    loss: Tensor<1>,
    ptx: Option<&mut TokenShards>,
    st: &mut PpoState,
    metrics: &mut Metrics,
) -> Result<Tensor<1>> {
    let Some(data) = ptx else {
        return Ok(loss);
    };
    let cursor = st.ptx_cursor;
    st.ptx_cursor += 1;
    if crate::collective::world().rank() != 0 {
        metrics.insert("ptx_loss".into(), 0.0);
        return Ok(loss);
    }
    let pb = data.train_batch(cursor)?;
    let l = lm_loss(policy, &pb, &ctx.train_dev);
    metrics.insert("ptx_loss".into(), scalar(&l));
    Ok(loss + l * ctx.cfg.ppo.ptx_coef)
}

/// One backward pass of `loss` and a step of the parameters `trainable` accepts; returns the
/// gradient norm before clipping, or the non-finite norm (nothing changed then).
fn step(
    model: &mut Llama,
    opt: &mut Optimizer,
    loss: Tensor<1>,
    trainable: &Trainable,
    lr: f64,
) -> Result<std::result::Result<f64, NonFiniteNorm>> {
    let mut grads = Grads::default();
    grads.add(model, &loss.backward(), trainable)?;
    grads.all_reduce(crate::collective::world());
    Ok(opt.step(model, grads, lr))
}

fn scalar(t: &Tensor<1>) -> f64 {
    t.clone().into_scalar::<f32>() as f64
}

/// Mean entropy (nats) of the next-token distributions at masked positions (no gradient).
fn entropy(logits: Tensor<3>, mask: &[f32]) -> f64 {
    let lp = burn::tensor::activation::log_softmax(logits.detach(), 2);
    let h = (lp.clone().exp() * lp).sum_dim(2).neg();
    let h = to_vec(h);
    let n = mask.iter().sum::<f32>().max(1.0) as f64;
    h.iter()
        .zip(mask)
        .map(|(a, m)| (*a * *m) as f64)
        .sum::<f64>()
        / n
}

/// Rows `idx` of a buffer as a batch (trimmed to their longest row) and their token
/// quantities: mask, old log-probs, old values, advantages, returns.
fn slice(buf: &Buffer, idx: &[usize]) -> (Batch, [Vec<f32>; 5]) {
    let t = buf.batch.t;
    let len = |r: usize| buf.batch.aux.lengths[r];
    let w = idx.iter().map(|&r| len(r)).max().unwrap_or(1).max(1);
    let mut b = Batch {
        b: idx.len(),
        t: w,
        ..Default::default()
    };
    let mut cols: [Vec<f32>; 5] = Default::default();
    for &r in idx {
        let range = r * t..r * t + w;
        b.inputs.extend_from_slice(&buf.batch.inputs[range.clone()]);
        b.targets
            .extend_from_slice(&buf.batch.targets[range.clone()]);
        b.aux.lengths.push(len(r));
        for (c, src) in cols.iter_mut().zip([
            &buf.mask,
            &buf.old_logp,
            &buf.old_values,
            &buf.adv,
            &buf.returns,
        ]) {
            c.extend_from_slice(&src[range.clone()]);
        }
    }
    (b, cols)
}
