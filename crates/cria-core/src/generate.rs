//! Autoregressive generation with a KV cache: token ids in, token ids out. Tokenization and
//! stop strings live with the caller.

use crate::error::{CoreError, Result};
use crate::model::Llama;
use crate::params::to_vec;
use crate::sampling::{Sampler, SamplingParams};
use burn::tensor::{Int, Tensor, TensorData};

pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends after any of these ids (the id is included in the output).
    pub stop_ids: Vec<u32>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    /// The callback asked to stop (e.g. a stop string matched).
    Callback,
}

/// Generates after `prompt`, calling `on_token` with each new id; it returns `false` to stop.
pub fn generate(
    model: &Llama,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<(Vec<u32>, Finish)> {
    if prompt.is_empty() {
        return Err(CoreError::Invalid("the prompt encodes to no tokens".into()));
    }
    let limit = model.max_len();
    if prompt.len() >= limit {
        return Err(CoreError::Invalid(format!(
            "the prompt has {} tokens; this model's context holds {limit}",
            prompt.len()
        )));
    }
    let device = model.device();
    let mut cache = model.new_cache();
    let mut sampler = Sampler::new(opts.sampling.clone());
    let mut out = Vec::new();
    let mut input: Vec<u32> = prompt.to_vec();
    let budget = opts.max_new_tokens.min(limit - prompt.len());
    for _ in 0..budget {
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(
                input.iter().map(|&x| x as i64).collect::<Vec<_>>(),
                [1, input.len()],
            ),
            &device,
        );
        let h = model.hidden(ids, Some(&mut cache));
        let [_, t, c] = h.dims();
        let last = h.narrow(1, t - 1, 1).reshape([1, 1, c]);
        let logits = to_vec(model.logits(last));
        let next = sampler.sample(&logits);
        out.push(next);
        if !on_token(next) {
            return Ok((out, Finish::Callback));
        }
        if opts.stop_ids.contains(&next) {
            return Ok((out, Finish::Stop));
        }
        input = vec![next];
    }
    Ok((out, Finish::Length))
}
