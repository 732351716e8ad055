//! PPO's third step: per-token quantities of the sampled replies under the old policy, the
//! frozen reference and the value model; InstructGPT's KL-penalised reward
//! `-β (log π - log π_sft)` at every reply token plus the score at the last; and advantages by
//! GAE (Schulman et al. 2016), whitened over the batch.

use super::Ctx;
use crate::batch::{Batch, Layout, Row, make_batch};
use crate::losses::{gae, kl_penalised_rewards, whiten};
use crate::sampler::Sample;
use crate::scoring::token_logps;
use cria_core::Llama;
use cria_core::params::to_vec;

/// One iteration's replies and the per-token quantities PPO needs, `B*T` each (row-major over
/// the right-padded batch of prompt + reply).
pub(super) struct Buffer {
    pub batch: Batch,
    pub mask: Vec<f32>,
    pub old_logp: Vec<f32>,
    pub old_values: Vec<f32>,
    pub adv: Vec<f32>,
    pub returns: Vec<f32>,
    /// Sampled KL to the reference, nats per reply.
    pub kl: f64,
    pub reply_tokens: usize,
}

/// The buffer of `samples` (sampled by `policy`, on the inference device), with `scores` the
/// shaped reward of each reply and `beta` the KL coefficient.
pub(super) fn advantages(
    ctx: &Ctx<'_>,
    policy: &Llama,
    reference: &Llama,
    value: &Llama,
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
    let gather = |v: Vec<f32>| crate::dp::gather_rows(world, batch.b, batch.t, &v);
    let old_logp = gather(to_vec(token_logps(policy, &part, inf, temp).0));
    let ref_logp = gather(to_vec(token_logps(reference, &part, inf, temp).0));
    let old_values = gather(to_vec(
        value.clone().to_device(inf).scores(part.input_ids(inf)),
    ));
    let p = &ctx.cfg.ppo;
    let t = batch.t;
    let (mut adv, mut returns) = (vec![0f32; mask.len()], vec![0f32; mask.len()]);
    let (mut kl_sum, mut reply_tokens) = (0.0f64, 0usize);
    for (r, &score) in scores.iter().enumerate() {
        let pos: Vec<usize> = (r * t..(r + 1) * t).filter(|&i| mask[i] > 0.0).collect();
        if pos.is_empty() {
            continue;
        }
        let pick = |v: &[f32]| pos.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        let (lp, rl, vals) = (pick(&old_logp), pick(&ref_logp), pick(&old_values));
        kl_sum += lp
            .iter()
            .zip(&rl)
            .map(|(a, b)| (*a - *b) as f64)
            .sum::<f64>();
        reply_tokens += pos.len();
        let rewards = kl_penalised_rewards(&lp, &rl, score, beta);
        let (a, ret) = gae(&rewards, &vals, p.gamma, p.lam);
        for ((&i, a), ret) in pos.iter().zip(a).zip(ret) {
            adv[i] = a;
            returns[i] = ret;
        }
    }
    let maskb: Vec<bool> = mask.iter().map(|x| *x > 0.0).collect();
    whiten(&mut adv, &maskb, true);
    let kl = kl_sum / batch.b as f64;
    Buffer {
        batch,
        mask,
        old_logp,
        old_values,
        adv,
        returns,
        kl,
        reply_tokens,
    }
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
