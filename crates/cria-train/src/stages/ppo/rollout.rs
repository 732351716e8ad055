//! PPO's first two steps of an iteration: sample one reply to each of a batch of prompts with
//! the current policy, and score each reply as the reward model reads a conversation. With
//! several ranks each samples and scores a share of the rows and every rank gets them all.

use super::Ctx;
use super::config::PpoParams;
use crate::error::Result;
use crate::losses::whiten;
use crate::sampler::{Sample, sample_scored};
use crate::scoring::score_conversations;
use cria_core::Llama;
use cria_data::chat::{Message, Role};
use cria_data::shards::Order;

/// One iteration's replies and the prompt (an index into the prompt set) each answers; the
/// replies to one prompt are consecutive.
pub(super) struct Rollout {
    pub chosen: Vec<usize>,
    pub samples: Vec<Sample>,
    /// The key every random draw of this iteration derives from.
    pub key: u64,
}

/// Samples replies to iteration `k`'s prompts: `rollout.batch_size` of them in the seeded
/// prompt order, `samples_per_prompt` replies to each, reply `j` with seed `key + j`, all in one
/// left-padded batch.
pub(super) fn rollout(ctx: &Ctx<'_>, policy: &Llama, order: &mut Order, k: u64) -> Result<Rollout> {
    let bs = ctx.cfg.rollout.batch_size as u64;
    let group = ctx.cfg.samples_per_prompt();
    let chosen: Vec<usize> = (0..bs)
        .flat_map(|j| std::iter::repeat_n(order.index(k * bs + j), group))
        .collect();
    let key = cria_core::hash::key(ctx.cfg.train.seed, k);
    let seeds: Vec<u64> = (0..chosen.len() as u64)
        .map(|j| key.wrapping_add(j))
        .collect();
    let prompts: Vec<Vec<u32>> = chosen
        .iter()
        .map(|&i| ctx.setup.prompts[i].1.clone())
        .collect();
    let s = &ctx.setup;
    // With ranks, each samples its share of the rows (same seeds) and all get every reply.
    let world = crate::collective::world();
    let mine = crate::dp::my_rows(world, prompts.len());
    let (p, sd) = (&prompts[mine.clone()], &seeds[mine]);
    // Each reply comes with its old-policy log-probabilities, as sampling computed them.
    let samples = sample_scored(policy, p, sd, &s.gen_opts, s.pad)?;
    let samples = crate::dp::gather_json(world, samples);
    Ok(Rollout {
        chosen,
        samples,
        key,
    })
}

/// The reward model's scores: `raw` as it gives them (what is logged), `shaped` as PPO uses
/// them (optionally whitened, clipped, and lowered for replies that never ended).
pub(super) struct Scores {
    pub raw: Vec<f32>,
    pub shaped: Vec<f32>,
}

/// Scores each reply after its prompt's messages, as the reward model reads a conversation.
pub(super) fn score(ctx: &Ctx<'_>, reward: &Llama, r: &Rollout) -> Result<Scores> {
    let s = &ctx.setup;
    let mut convs = Vec::with_capacity(r.chosen.len());
    for (&i, sample) in r.chosen.iter().zip(&r.samples) {
        let text = s.tok.decode(&sample.reply, true)?;
        let mut c = s.prompts[i].0.clone();
        c.push(Message::new(Role::Assistant, text.trim()));
        convs.push(c);
    }
    let world = crate::collective::world();
    let mine = crate::dp::my_rows(world, convs.len());
    let part = score_conversations(reward, &s.rm_fmt, &s.tok, &convs[mine], 16)?;
    let raw = crate::dp::gather_rows(world, convs.len(), 1, &part);
    let shaped = shape(&raw, &r.samples, &ctx.cfg.ppo);
    Ok(Scores { raw, shaped })
}

/// Whitening (keeping the mean), clipping to ±`reward_clip`, and the missing-EOS penalty.
fn shape(raw: &[f32], samples: &[Sample], p: &PpoParams) -> Vec<f32> {
    let mut scores = raw.to_vec();
    if p.whiten_rewards {
        let mask = vec![true; scores.len()];
        whiten(&mut scores, &mask, false);
    }
    for (s, sample) in scores.iter_mut().zip(samples) {
        *s = s.clamp(-p.reward_clip as f32, p.reward_clip as f32);
        if !sample.finished {
            *s -= p.missing_eos_penalty as f32;
        }
    }
    scores
}
