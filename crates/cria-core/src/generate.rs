//! Autoregressive generation with a KV cache: token ids in, token ids out. Tokenization and
//! stop strings live with the caller.

use crate::error::{CoreError, Result};
use crate::model::Llama;
use crate::params::to_vec;
use crate::sampling::{Sampler, SamplingParams};
use burn::tensor::{Int, Tensor, TensorData};
use rayon::prelude::*;

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

/// A causal language model that gives the next token's logits, one step at a time, with a
/// cache of what it has read: cria's burn model, or a quantized GGUF model.
pub trait NextLogits {
    type Cache;
    fn new_cache(&self) -> Self::Cache;
    /// Longest sequence (prompt plus generated tokens) the model takes.
    fn max_len(&self) -> usize;
    /// Reads `input` after what `cache` holds and returns the logits after its last token.
    fn next_logits(&self, input: &[u32], cache: &mut Self::Cache) -> Vec<f32>;
}

impl NextLogits for Llama {
    type Cache = crate::model::KvCache;
    fn new_cache(&self) -> Self::Cache {
        Llama::new_cache(self)
    }
    fn max_len(&self) -> usize {
        Llama::max_len(self)
    }
    fn next_logits(&self, input: &[u32], cache: &mut Self::Cache) -> Vec<f32> {
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(
                input.iter().map(|&x| x as i64).collect::<Vec<_>>(),
                [1, input.len()],
            ),
            &self.device(),
        );
        let h = self.hidden(ids, Some(cache));
        let [_, t, c] = h.dims();
        let last = h.narrow(1, t - 1, 1).reshape([1, 1, c]);
        to_vec(self.logits(last))
    }
}

/// Generates after `prompt`, calling `on_token` with each new id; it returns `false` to stop.
pub fn generate<M: NextLogits>(
    model: &M,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<(Vec<u32>, Finish)> {
    generate_with_logits(model, prompt, opts, |id, _| on_token(id))
}

/// As [`generate`], the callback also seeing the logits each id was sampled from.
pub fn generate_with_logits<M: NextLogits>(
    model: &M,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32, &[f32]) -> bool,
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
    let mut cache = model.new_cache();
    let mut sampler = Sampler::new(opts.sampling.clone());
    let mut out = Vec::new();
    let mut input: Vec<u32> = prompt.to_vec();
    let budget = opts.max_new_tokens.min(limit - prompt.len());
    for _ in 0..budget {
        let logits = model.next_logits(&input, &mut cache);
        let next = sampler.sample(&logits);
        out.push(next);
        if !on_token(next, &logits) {
            return Ok((out, Finish::Callback));
        }
        if opts.stop_ids.contains(&next) {
            return Ok((out, Finish::Stop));
        }
        input = vec![next];
    }
    Ok((out, Finish::Length))
}

/// Generates after each prompt in one left-padded batch with a shared KV cache (row `i` samples
/// with seed `seeds[i]`); rows that stop early are carried along until every row is done.
/// Returns each row's new ids and why it ended.
pub fn generate_batch(
    model: &Llama,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    seeds: &[u64],
    pad: u32,
) -> Result<Vec<(Vec<u32>, Finish)>> {
    let rows = batch(model, prompts, opts, seeds, pad, false)?;
    Ok(rows.into_iter().map(|r| (r.ids, r.finish)).collect())
}

/// One row of [`generate_batch_scored`].
#[derive(Debug, Clone)]
pub struct Scored {
    pub ids: Vec<u32>,
    pub finish: Finish,
    /// The log-probability of each new id under the model's full distribution at the sampling
    /// temperature (before `top_k`, `top_p` and the other filters), as the step that sampled it
    /// computed it: what RL's old-policy log-probabilities are, without another forward pass.
    pub logps: Vec<f32>,
}

/// [`generate_batch`], also giving each sampled id's log-probability (the temperature must be
/// positive).
pub fn generate_batch_scored(
    model: &Llama,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    seeds: &[u64],
    pad: u32,
) -> Result<Vec<Scored>> {
    if opts.sampling.temperature <= 0.0 {
        return Err(CoreError::Invalid(
            "log-probabilities of sampled ids need a positive temperature".into(),
        ));
    }
    batch(model, prompts, opts, seeds, pad, true)
}

/// The next id of each live row (`live` ascending, `logits` theirs row by row) and, with a
/// `temperature`, its log-probability at it (else 0). The rows draw side by side: each has its
/// own sampler and seed, so the draws do not depend on the order; a draw sorts the vocabulary.
fn draw(
    samplers: &mut [Sampler],
    live: &[usize],
    logits: &[f32],
    temperature: Option<f64>,
) -> Vec<(u32, f32)> {
    let v = logits.len() / live.len().max(1);
    let mut drawing: Vec<&mut Sampler> = samplers
        .iter_mut()
        .enumerate()
        .filter(|(r, _)| live.binary_search(r).is_ok())
        .map(|(_, s)| s)
        .collect();
    drawing
        .par_iter_mut()
        .enumerate()
        .map(|(i, sampler)| {
            let row = &logits[i * v..(i + 1) * v];
            let next = sampler.sample(row);
            (
                next,
                temperature.map_or(0.0, |t| tempered_logp(row, next, t)),
            )
        })
        .collect()
}

/// `log softmax(logits / temperature)[id]`, summed in f64.
fn tempered_logp(logits: &[f32], id: u32, temperature: f64) -> f32 {
    let inv = 1.0 / temperature;
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x)) as f64;
    let sum: f64 = logits.iter().map(|x| ((*x as f64 - max) * inv).exp()).sum();
    ((logits[id as usize] as f64 - max) * inv - sum.ln()) as f32
}

/// The longest prompt's length; an empty prompt, or one that fills the model's context, is
/// refused.
fn longest_prompt(model: &Llama, prompts: &[Vec<u32>]) -> Result<usize> {
    if prompts.iter().any(Vec::is_empty) {
        return Err(CoreError::Invalid("a prompt encodes to no tokens".into()));
    }
    let limit = model.max_len();
    let p = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if p >= limit {
        return Err(CoreError::Invalid(format!(
            "a prompt has {p} tokens; this model's context holds {limit}"
        )));
    }
    Ok(p)
}

/// The prompts, left-padded to `p` tokens, in one forward pass: the next-token logits of each
/// (row-major) and each row's cache, cut from the padded one. A prompt that appears several
/// times (the k replies to one prompt of RLOO and GRPO, several samples of one request) runs
/// once and its rows share the result.
fn prefill(
    model: &Llama,
    prompts: &[Vec<u32>],
    p: usize,
    pad: u32,
) -> (Vec<f32>, Vec<crate::model::ragged::RowCache>) {
    let mut seen = std::collections::HashMap::new();
    let mut unique: Vec<Vec<u32>> = vec![];
    let of: Vec<usize> = prompts
        .iter()
        .map(|x| {
            *seen.entry(x.as_slice()).or_insert_with(|| {
                unique.push(x.clone());
                unique.len() - 1
            })
        })
        .collect();
    if unique.len() == prompts.len() {
        return prefill_distinct(model, prompts, p, pad);
    }
    let (logits, rows) = prefill_distinct(model, &unique, p, pad);
    let v = logits.len() / unique.len();
    let logits = of
        .iter()
        .flat_map(|&u| logits[u * v..(u + 1) * v].iter().copied())
        .collect();
    (logits, of.iter().map(|&u| rows[u].clone()).collect())
}

/// [`prefill`] of prompts run as given.
fn prefill_distinct(
    model: &Llama,
    prompts: &[Vec<u32>],
    p: usize,
    pad: u32,
) -> (Vec<f32>, Vec<crate::model::ragged::RowCache>) {
    let b = prompts.len();
    let starts: Vec<usize> = prompts.iter().map(|x| p - x.len()).collect();
    let mut cache = crate::model::KvCache::padded(model.layers.len(), starts.clone());
    let mut input: Vec<i64> = Vec::with_capacity(b * p);
    for (x, &st) in prompts.iter().zip(&starts) {
        input.extend(std::iter::repeat_n(pad as i64, st));
        input.extend(x.iter().map(|&t| t as i64));
    }
    let ids = Tensor::<2, Int>::from_data(TensorData::new(input, [b, p]), &model.device());
    let h = model.hidden(ids, Some(&mut cache));
    let c = h.dims()[2];
    let logits = to_vec(model.logits(h.narrow(1, p - 1, 1).reshape([b, 1, c])));
    let rows = crate::model::ragged::RowCache::split_padded(&cache, &starts);
    (logits, rows)
}

fn batch(
    model: &Llama,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    seeds: &[u64],
    pad: u32,
    score: bool,
) -> Result<Vec<Scored>> {
    assert_eq!(prompts.len(), seeds.len(), "one seed per prompt");
    let (p, limit) = (longest_prompt(model, prompts)?, model.max_len());
    let b = prompts.len();
    if b == 0 {
        return Ok(vec![]);
    }
    let mut samplers: Vec<Sampler> = seeds
        .iter()
        .map(|&seed| {
            Sampler::new(SamplingParams {
                seed,
                ..opts.sampling.clone()
            })
        })
        .collect();
    let mut out: Vec<Scored> = vec![
        Scored {
            ids: vec![],
            finish: Finish::Length,
            logps: vec![],
        };
        b
    ];
    let budget = opts.max_new_tokens.min(limit - p);
    if budget == 0 {
        return Ok(out);
    }
    // Each row decodes from a cache of its own (`Llama::decode_rows`: one matmul per
    // projection for the rows still going, attention at each row's length), so finished rows
    // cost nothing and no padding is attended.
    let (mut logits, mut rows) = prefill(model, prompts, p, pad);
    let mut live: Vec<usize> = (0..b).collect();
    for step in 0..budget {
        let mut tokens = Vec::with_capacity(live.len());
        let mut going = Vec::with_capacity(live.len());
        let temperature = score.then_some(opts.sampling.temperature);
        let drawn = draw(&mut samplers, &live, &logits, temperature);
        for (&r, &(next, lp)) in live.iter().zip(&drawn) {
            out[r].ids.push(next);
            if score {
                out[r].logps.push(lp);
            }
            if opts.stop_ids.contains(&next) {
                out[r].finish = Finish::Stop;
            } else {
                tokens.push(next);
                going.push(r);
            }
        }
        live = going;
        if live.is_empty() || step + 1 == budget {
            break;
        }
        let mut caches: Vec<&mut crate::model::ragged::RowCache> = rows
            .iter_mut()
            .enumerate()
            .filter(|(r, _)| live.binary_search(r).is_ok())
            .map(|(_, c)| c)
            .collect();
        logits = to_vec(model.decode_rows(&tokens, &mut caches));
    }
    Ok(out)
}
