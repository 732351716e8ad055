//! Sampling replies from a policy and scoring them: the log-probability a model gives a reply,
//! and the sampled estimate of KL(policy ‖ reference) = E_{y~policy}[log π(y|x) - log π_ref(y|x)]
//! summed over the reply's tokens (what InstructGPT's per-token penalty adds up to).

use crate::dpo::batch_logps;
use crate::error::Result;
use crate::prefs::{Layout, Row, make_batch};
use cria_core::Llama;
use cria_core::generate::{Finish, GenerateOptions, generate};

/// A prompt and one reply sampled after it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub prompt: Vec<u32>,
    pub reply: Vec<u32>,
    /// The reply ended with a stop id (not at the token limit).
    pub finished: bool,
}

/// Samples `per_prompt` replies to each prompt; reply `j` of prompt `i` uses seed
/// `seed + i * per_prompt + j`, so the draw is reproducible.
pub fn sample(
    model: &Llama,
    prompts: &[Vec<u32>],
    per_prompt: usize,
    opts: &GenerateOptions,
) -> Result<Vec<Sample>> {
    let mut out = Vec::with_capacity(prompts.len() * per_prompt);
    for (i, p) in prompts.iter().enumerate() {
        for j in 0..per_prompt {
            let mut o = GenerateOptions {
                max_new_tokens: opts.max_new_tokens,
                sampling: opts.sampling.clone(),
                stop_ids: opts.stop_ids.clone(),
            };
            o.sampling.seed = opts.sampling.seed + (i * per_prompt + j) as u64;
            let (reply, finish) = generate(model, p, &o, |_| true)?;
            out.push(Sample {
                prompt: p.clone(),
                reply,
                finished: finish == Finish::Stop,
            });
        }
    }
    Ok(out)
}

/// Each sample's reply log-probability under `model`, `batch` samples at a time.
pub fn reply_logps(model: &Llama, samples: &[Sample], batch: usize) -> Vec<f32> {
    let device = model.device();
    let groups: Vec<Vec<Row>> = samples
        .iter()
        .map(|s| {
            let ids: Vec<u32> = s.prompt.iter().chain(&s.reply).copied().collect();
            let response = (0..ids.len()).map(|k| k >= s.prompt.len()).collect();
            vec![Row {
                ids,
                response,
                ref_logp: 0.0,
            }]
        })
        .collect();
    let mut out = Vec::with_capacity(samples.len());
    for chunk in groups.chunks(batch.max(1)) {
        let b = make_batch(chunk.iter(), 0, Layout::Tokens);
        out.extend(
            batch_logps(model, &b, &device)
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32"),
        );
    }
    out
}

/// Mean over samples (drawn from `policy`) of `log π(y|x) - log π_ref(y|x)`.
pub fn kl_estimate(policy: &Llama, reference: &Llama, samples: &[Sample], batch: usize) -> f64 {
    let p = reply_logps(policy, samples, batch);
    let r = reply_logps(reference, samples, batch);
    p.iter().zip(&r).map(|(a, b)| (*a - *b) as f64).sum::<f64>() / samples.len().max(1) as f64
}
