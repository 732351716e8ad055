//! PPO's fourth step: `epochs` passes over the iteration's replies in shuffled minibatches,
//! each one step of the policy on its algorithm's clipped surrogate (plus the pretraining loss
//! with PPO-ptx) and, for PPO, one step of the value model on the clipped value loss, both
//! through the shared parameter update. PPO's and GRPO's losses are means over reply tokens
//! (GRPO's with its KL term); RLOO's a mean over replies of a reply-level ratio.
//!
//! With several ranks each takes every n-th row of a minibatch, weighs its losses and figures
//! by its share of the minibatch's reply tokens (replies for RLOO), and the gradients and
//! figures are summed over the ranks: the step one process takes on the whole minibatch
//! (PPO-ptx's batch runs on rank 0).

use super::advantages::Buffer;
use super::checkpoint::PpoState;
use super::config::Algorithm;
use super::{Ctx, Live};
use crate::batch::Batch;
use crate::data::{DataSource, TokenShards};
use crate::error::Result;
use crate::losses::{k3_kl, ppo_policy_loss, ppo_value_loss, sequence_policy_loss};
use crate::method::{Trainable, every_param};
use crate::metrics::Metrics;
use crate::scoring::{lm_loss, token_logps};
use crate::update::{Grads, NonFiniteNorm, Optimizer};
use cria_core::params::to_vec;
use cria_core::{Int, Llama, Tensor, TensorData};
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
            // The values of this minibatch's rows from the rollout's own tracked pass (one
            // update of all rows: `advantages::single_update`).
            let tracked = buf.values.as_ref().map(|v| tracked_rows(v, &mb, &b));
            let share = Share {
                tokens: token_share(world, &cols.mask),
                rows: mb.len() as f64 / whole.len() as f64,
            };
            let entropy_rows = (epoch == 0).then_some(whole.len());
            let (pgrads, vgrads, mut figures) = minibatch_grads(
                ctx,
                (&m.policy, m.value.as_ref()),
                (&b, &cols, tracked),
                share,
                entropy_rows,
                ptx.as_mut(),
                st,
            )?;
            let mut pg = figures["policy_loss"];
            crate::dp::reduce_figures(world, &mut pg, &mut 0, &mut figures);
            if !pg.is_finite() {
                return Err(ctx.diverged(st.iteration + 1, "policy loss", pg));
            }
            let it = st.iteration + 1;
            let g = apply(&mut m.policy, &mut opts.policy, pgrads, lr);
            stats.grad_norm =
                g.map_err(|NonFiniteNorm(n)| ctx.diverged(it, "policy gradient norm", n))?;
            if let (Some(value), Some(opt), Some(g)) = (&mut m.value, &mut opts.value, vgrads) {
                apply(value, opt, g, vlr)
                    .map_err(|NonFiniteNorm(n)| ctx.diverged(it, "value gradient norm", n))?;
            }
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

/// The gradients of a minibatch's policy loss and (PPO) value loss, and their figures. The two
/// models' losses and backward passes share nothing: side by side, one's single-threaded
/// stretches leave the other the second core.
fn minibatch_grads(
    ctx: &Ctx<'_>,
    (policy, value): (&Llama, Option<&Llama>),
    (b, cols, tracked): (&Batch, &Cols, Option<Tensor<2>>),
    share: Share,
    entropy_rows: Option<usize>,
    ptx: Option<&mut TokenShards>,
    st: &mut PpoState,
) -> Result<(Grads, Option<Grads>, Metrics)> {
    let trainable: &Trainable = ctx.setup.adapted.trainable.unwrap_or(&every_param);
    let (pol, val) = rayon::join(
        || {
            let (loss, figures) = policy_loss(ctx, policy, b, cols, share, entropy_rows, ptx, st)?;
            Ok::<_, crate::error::TrainError>((grads_of(policy, loss, trainable)?, figures))
        },
        || {
            value.map(|v| {
                let (loss, figures) = value_loss(ctx, v, b, cols, share, tracked);
                Ok::<_, crate::error::TrainError>((grads_of(v, loss, &every_param)?, figures))
            })
        },
    );
    let (pgrads, mut figures) = pol?;
    let vgrads = match val {
        Some(v) => {
            let (g, vf) = v?;
            figures.extend(vf);
            Some(g)
        }
        None => None,
    };
    Ok((pgrads, vgrads, figures))
}

/// This rank's share of a minibatch: of its reply tokens and of its replies.
#[derive(Clone, Copy)]
struct Share {
    tokens: f64,
    rows: f64,
}

/// This rank's part of one minibatch's policy objective (PPO-ptx's term added), weighted by
/// the rank's share, and its figures likewise; with `entropy_rows` (the first epoch) also the
/// entropy summed over the minibatch's replies.
#[allow(clippy::too_many_arguments)]
fn policy_loss(
    ctx: &Ctx<'_>,
    policy: &Llama,
    b: &Batch,
    cols: &Cols,
    share: Share,
    entropy_rows: Option<usize>,
    ptx: Option<&mut TokenShards>,
    st: &mut PpoState,
) -> Result<(Tensor<1>, Metrics)> {
    let p = &ctx.cfg.ppo;
    let temperature = ctx.cfg.rollout.temperature;
    let (logp, logits) = token_logps(policy, b, &ctx.train_dev, temperature);
    let mut figures = Metrics::new();
    if let Some(rows) = entropy_rows {
        // The minibatch's token-mean entropy (shares summed over ranks) per reply.
        let h = entropy(logits) * share.tokens * rows as f64;
        figures.insert("entropy_sum".into(), h);
    }
    let (loss, pm, w) = match p.algorithm {
        Algorithm::Ppo => {
            let (l, pm) =
                ppo_policy_loss(logp, &cols.old_logp, &cols.adv, &cols.mask, p.clip_range);
            (l, pm, share.tokens)
        }
        Algorithm::Rloo => {
            let (l, pm) = sequence_policy_loss(
                logp,
                &cols.old_logp,
                &cols.row_adv,
                &cols.mask,
                p.clip_range,
            );
            (l, pm, share.rows)
        }
        Algorithm::Grpo => {
            let (l, mut pm) = ppo_policy_loss(
                logp.clone(),
                &cols.old_logp,
                &cols.adv,
                &cols.mask,
                p.clip_range,
            );
            let kl = k3_kl(logp, &cols.ref_logp, &cols.mask);
            pm.insert("kl_k3".into(), scalar(&kl));
            (l + kl * st.beta, pm, share.tokens)
        }
    };
    let loss = loss * w;
    figures.insert("policy_loss".into(), scalar(&loss));
    for (k, v) in pm {
        figures.insert(k, v * w);
    }
    let loss = with_ptx(ctx, policy, loss, ptx, st, &mut figures)?;
    Ok((loss, figures))
}

/// This rank's part of one minibatch's clipped value loss (PPO), weighted by its token share,
/// and its figures likewise; from `tracked`, the minibatch's values already computed with
/// their graph, when given.
fn value_loss(
    ctx: &Ctx<'_>,
    value: &Llama,
    b: &Batch,
    cols: &Cols,
    share: Share,
    tracked: Option<Tensor<2>>,
) -> (Tensor<1>, Metrics) {
    let values = tracked.unwrap_or_else(|| value.scores(b.input_ids(&ctx.train_dev)));
    let (vloss, vm) = ppo_value_loss(
        values,
        &cols.old_values,
        &cols.returns,
        &cols.mask,
        ctx.cfg.ppo.value_clip_range,
    );
    let vloss = vloss * share.tokens;
    let mut figures = Metrics::new();
    figures.insert("value_loss".into(), scalar(&vloss));
    for (k, v) in vm {
        figures.insert(k, v * share.tokens);
    }
    (vloss, figures)
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

/// The gradients of `loss` for the parameters of `model` that `trainable` accepts (one
/// backward pass).
fn grads_of(model: &Llama, loss: Tensor<1>, trainable: &Trainable) -> Result<Grads> {
    let mut grads = Grads::default();
    grads.add(model, loss.backward(), trainable)?;
    Ok(grads)
}

/// `grads` summed over the ranks and one optimizer step with them; returns the gradient norm
/// before clipping, or the non-finite norm (nothing changed then).
fn apply(
    model: &mut Llama,
    opt: &mut Optimizer,
    mut grads: Grads,
    lr: f64,
) -> std::result::Result<f64, NonFiniteNorm> {
    grads.all_reduce(crate::collective::world());
    opt.step(model, grads, lr)
}

fn scalar(t: &Tensor<1>) -> f64 {
    t.clone().into_scalar::<f32>() as f64
}

/// Mean entropy (nats) of the next-token distributions of `logits`' rows (the reply tokens';
/// no gradient).
fn entropy(logits: Tensor<3>) -> f64 {
    let lp = burn::tensor::activation::log_softmax(logits.detach(), 2);
    let h = to_vec((lp.clone().exp() * lp).sum_dim(2).neg());
    h.iter().map(|x| *x as f64).sum::<f64>() / h.len().max(1) as f64
}

/// Rows `idx` of the `(B, T)` values `v` (graph kept), cut to the width of their minibatch
/// batch `b` (as [`slice`] cuts the buffer).
fn tracked_rows(v: &Tensor<2>, idx: &[usize], b: &Batch) -> Tensor<2> {
    let rows: Vec<i64> = idx.iter().map(|&r| r as i64).collect();
    let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [idx.len()]), &v.device());
    v.clone().select(0, rows).narrow(1, 0, b.t)
}

/// A minibatch's per-token quantities (`B*T` each, empty where the algorithm has none) and
/// its replies' advantages.
#[derive(Default)]
struct Cols {
    mask: Vec<f32>,
    old_logp: Vec<f32>,
    ref_logp: Vec<f32>,
    old_values: Vec<f32>,
    adv: Vec<f32>,
    returns: Vec<f32>,
    row_adv: Vec<f32>,
}

/// Rows `idx` of a buffer as a batch (trimmed to their longest row) and their quantities.
fn slice(buf: &Buffer, idx: &[usize]) -> (Batch, Cols) {
    let t = buf.batch.t;
    let len = |r: usize| buf.batch.aux.lengths[r];
    let w = idx.iter().map(|&r| len(r)).max().unwrap_or(1).max(1);
    let mut b = Batch {
        b: idx.len(),
        t: w,
        ..Default::default()
    };
    let mut c = Cols::default();
    for &r in idx {
        let range = r * t..r * t + w;
        b.inputs.extend_from_slice(&buf.batch.inputs[range.clone()]);
        b.targets
            .extend_from_slice(&buf.batch.targets[range.clone()]);
        b.aux.lengths.push(len(r));
        for (dst, src) in [
            (&mut c.mask, &buf.mask),
            (&mut c.old_logp, &buf.old_logp),
            (&mut c.ref_logp, &buf.ref_logp),
            (&mut c.old_values, &buf.old_values),
            (&mut c.adv, &buf.adv),
            (&mut c.returns, &buf.returns),
        ] {
            if !src.is_empty() {
                dst.extend_from_slice(&src[range.clone()]);
            }
        }
        if !buf.row_adv.is_empty() {
            c.row_adv.push(buf.row_adv[r]);
        }
    }
    b.weights = Some(c.mask.clone());
    (b, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Layout, Row, make_batch};

    /// The single-update path: a minibatch's values cut from the whole batch's tracked pass
    /// equal, in value and in every parameter's gradient, the pass the minibatch would run
    /// itself (rows reordered, the batch narrower than the buffer's).
    #[test]
    fn tracked_rows_equal_the_minibatchs_own_pass() {
        let v = crate::scoring::tests::tiny_model(cria_core::config::Head::Score);
        let rows = [
            Row::reply(&[1, 2, 3], &[4, 5]),
            Row::reply(&[6, 7, 8, 9, 10], &[11, 12, 13]),
            Row::reply(&[14], &[15]),
        ];
        let groups: Vec<Vec<Row>> = rows.iter().map(|r| vec![r.clone()]).collect();
        let batch = make_batch(groups.iter(), 0, Layout::Tokens);
        let mask = batch.weights.clone().unwrap();
        let buf = Buffer {
            batch,
            mask,
            ..Default::default()
        };
        let dev = cria_core::device::training_device();
        let whole = v.scores(buf.batch.input_ids(&dev));
        // Rows 2 and 0: the longest row (1) is left out, so the minibatch is narrower.
        let mb = [2, 0];
        let (b, cols) = slice(&buf, &mb);
        assert!(b.t < buf.batch.t, "a narrower minibatch");
        let cut = tracked_rows(&whole, &mb, &b);
        let own = v.scores(b.input_ids(&dev));
        let (x, y) = (to_vec(cut.clone()), to_vec(own.clone()));
        assert_eq!(x.len(), y.len());
        for (a, c) in x.iter().zip(&y) {
            assert!((a - c).abs() < 1e-6, "value {a} vs {c}");
        }
        let w = Tensor::<1>::from_data(TensorData::new(cols.mask.clone(), [cols.mask.len()]), &dev)
            .reshape([b.b, b.t]);
        let (ga, gb) = (
            (cut * w.clone()).sum().backward(),
            (own * w).sum().backward(),
        );
        crate::scoring::tests::same_gradients(&v, &ga, &gb, 1e-5);
    }
}
