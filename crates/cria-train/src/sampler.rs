//! The one sampler of PPO's rollouts and of evaluation: replies drawn in left-padded batches
//! through the KV cache, each row with a seed of its own (so a reply never depends on its
//! neighbours), and the sampled estimate of KL(policy ‖ reference) =
//! E_{y~policy}[log π(y|x) - log π_ref(y|x)] summed over the reply's tokens (what InstructGPT's
//! per-token penalty adds up to).

use crate::error::Result;
use crate::scoring::reply_logps;
use cria_core::Llama;
use cria_core::generate::{Finish, GenerateOptions, generate_batch, generate_batch_scored};

/// A prompt and one reply sampled after it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub prompt: Vec<u32>,
    pub reply: Vec<u32>,
    /// The reply ended with a stop id (not at the token limit).
    pub finished: bool,
    /// Each reply token's log-probability under the sampling model at the sampling
    /// temperature ([`sample_scored`]; empty otherwise).
    #[serde(default)]
    pub logps: Vec<f32>,
}

/// Rows per generation batch when the caller does not choose.
pub const BATCH: usize = 16;

/// One reply to each prompt, prompt `i` sampled with `seeds[i]`, in batches of at most `batch`
/// rows (left-padded with `pad`, which attention masks out).
pub fn sample_seeded(
    model: &Llama,
    prompts: &[Vec<u32>],
    seeds: &[u64],
    opts: &GenerateOptions,
    pad: u32,
    batch: usize,
) -> Result<Vec<Sample>> {
    assert_eq!(prompts.len(), seeds.len(), "one seed per prompt");
    let mut out = Vec::with_capacity(prompts.len());
    for (ps, ss) in prompts.chunks(batch.max(1)).zip(seeds.chunks(batch.max(1))) {
        for (p, (reply, finish)) in ps.iter().zip(generate_batch(model, ps, opts, ss, pad)?) {
            out.push(Sample {
                prompt: p.clone(),
                reply,
                finished: finish == Finish::Stop,
                logps: vec![],
            });
        }
    }
    Ok(out)
}

/// [`sample_seeded`] in one batch, each sample with its tokens' log-probabilities as sampling
/// computed them (RL's old-policy log-probabilities; the temperature must be positive).
pub fn sample_scored(
    model: &Llama,
    prompts: &[Vec<u32>],
    seeds: &[u64],
    opts: &GenerateOptions,
    pad: u32,
) -> Result<Vec<Sample>> {
    let rows = generate_batch_scored(model, prompts, opts, seeds, pad)?;
    Ok(prompts
        .iter()
        .zip(rows)
        .map(|(p, r)| Sample {
            prompt: p.clone(),
            reply: r.ids,
            finished: r.finish == Finish::Stop,
            logps: r.logps,
        })
        .collect())
}

/// Samples `per_prompt` replies to each prompt; reply `j` of prompt `i` uses seed
/// `opts.sampling.seed + i * per_prompt + j`, so the draw is reproducible.
pub fn sample(
    model: &Llama,
    prompts: &[Vec<u32>],
    per_prompt: usize,
    opts: &GenerateOptions,
) -> Result<Vec<Sample>> {
    let rows: Vec<Vec<u32>> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), per_prompt))
        .collect();
    let seeds: Vec<u64> = (0..rows.len() as u64)
        .map(|k| opts.sampling.seed + k)
        .collect();
    sample_seeded(model, &rows, &seeds, opts, pad_of(model), BATCH)
}

/// A padding id for a model's batches: any id works where attention masks it out.
fn pad_of(model: &Llama) -> u32 {
    model.cfg.pad_token_id.unwrap_or(0)
}

/// Mean over samples (drawn from `policy`) of `log π(y|x) - log π_ref(y|x)`.
pub fn kl_estimate(policy: &Llama, reference: &Llama, samples: &[Sample], batch: usize) -> f64 {
    let pairs = || samples.iter().map(|s| (&s.prompt[..], &s.reply[..]));
    let p = reply_logps(policy, pairs(), pad_of(policy), batch);
    let r = reply_logps(reference, pairs(), pad_of(reference), batch);
    p.iter().zip(&r).map(|(a, b)| (*a - *b) as f64).sum::<f64>() / samples.len().max(1) as f64
}
