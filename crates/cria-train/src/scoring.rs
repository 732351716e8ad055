//! What a model says about sequences, shared by every stage and by evaluation: the language
//! model's loss, per-token and per-sequence log-probabilities of the masked positions, and a
//! reward model's score at each row's last token.

use crate::batch::{Batch, Group, Layout, Row, make_batch};
use crate::error::Result;
use burn::tensor::IndexingUpdateOp;
use cria_core::model::{cross_entropy, token_logprobs};
use cria_core::tokenizer::Tokenizer;
use cria_core::{Device, Int, Llama, Tensor, TensorData};
use cria_data::chat::{ChatFormat, Message};

/// Next-token cross-entropy over the batch's weighted positions: the one loss path of every
/// stage that trains on tokens.
pub fn lm_loss(model: &Llama, batch: &Batch, device: &Device) -> Tensor<1> {
    let logits = model.forward(batch.input_ids(device), None);
    cross_entropy(
        logits,
        batch.target_ids(device),
        batch.weight_tensor(device),
    )
}

/// Log-probability of each weighted target token (a [`Layout::Tokens`] batch: the reply
/// tokens), with the logits divided by `temperature` (RL scores replies under the
/// distribution it sampled from), at its place in a `(B, T)` tensor that is zero elsewhere;
/// and the logits of those positions. The language-model head and the softmax run at the
/// weighted positions only: the prompt's positions feed attention but need no logits.
///
/// # Shapes
/// -> `(B, T)`, `(1, N, V)` for the batch's `N` weighted positions
pub fn token_logps(
    model: &Llama,
    batch: &Batch,
    device: &Device,
    temperature: f64,
) -> (Tensor<2>, Tensor<3>) {
    let (b, t) = (batch.b, batch.t);
    let weights = batch.weights.as_ref().expect("a token-layout batch");
    let at: Vec<i64> = (0..b * t)
        .filter(|&i| weights[i] > 0.0)
        .map(|i| i as i64)
        .collect();
    let n = at.len();
    let at = Tensor::<1, Int>::from_data(TensorData::new(at, [n]), device);
    let h = model.hidden(batch.input_ids(device), None);
    let c = h.dims()[2];
    let h = h
        .reshape([b * t, c])
        .select(0, at.clone())
        .reshape([1, n, c]);
    let mut logits = model.logits(h);
    if temperature != 1.0 {
        logits = logits / temperature;
    }
    let targets = batch
        .target_ids(device)
        .reshape([b * t])
        .select(0, at.clone());
    let lp = token_logprobs(logits.clone(), targets.reshape([1, n])).reshape([n]);
    let out = Tensor::<1>::zeros([b * t], device).select_assign(0, at, lp, IndexingUpdateOp::Add);
    (out.reshape([b, t]), logits)
}

/// Sum of log-probabilities of each row's response tokens (a [`Layout::Tokens`] batch).
///
/// # Shapes
/// -> `(B,)`
pub fn batch_logps(model: &Llama, batch: &Batch, device: &Device) -> Tensor<1> {
    let logits = model.forward(batch.input_ids(device), None);
    let weights = batch
        .weight_tensor(device)
        .expect("token layout has weights");
    crate::losses::sequence_logps(logits, batch.target_ids(device), weights)
}

/// The response log-probability of every row of `groups`, in order, `batch` groups at a time.
pub fn group_logps(model: &Llama, groups: &[Group], pad: u32, batch: usize) -> Vec<f32> {
    let device = model.device();
    let mut out = Vec::new();
    for chunk in groups.chunks(batch.max(1)) {
        let b = make_batch(chunk.iter(), pad, Layout::Tokens);
        out.extend(values(batch_logps(model, &b, &device)));
    }
    out
}

/// The log-probability of each reply after its prompt, `batch` at a time.
pub fn reply_logps<'a>(
    model: &Llama,
    pairs: impl Iterator<Item = (&'a [u32], &'a [u32])>,
    pad: u32,
    batch: usize,
) -> Vec<f32> {
    let groups: Vec<Group> = pairs.map(|(p, r)| vec![Row::reply(p, r)]).collect();
    group_logps(model, &groups, pad, batch)
}

/// A reward model's score of each row (read at its last token).
///
/// # Shapes
/// -> `(B,)`
pub fn rewards(model: &Llama, batch: &Batch, device: &Device) -> Tensor<1> {
    let at = model.reward_positions(&batch.inputs, batch.t, &batch.aux.lengths);
    model.rewards(batch.input_ids(device), &at)
}

/// The id a reward model's batches are padded with: its `pad_token_id` (what its pooling
/// skips), else the tokenizer's pad.
pub fn reward_pad(model: &Llama, tok: &Tokenizer) -> u32 {
    model.cfg.pad_token_id.unwrap_or_else(|| tok.pad_id())
}

/// Rewards of every row of `groups`, in order, computed `batch` groups at a time.
pub fn score_groups(model: &Llama, groups: &[Group], pad: u32, batch: usize) -> Vec<f32> {
    let device = model.device();
    let mut out = Vec::new();
    for chunk in groups.chunks(batch.max(1)) {
        let b = make_batch(chunk.iter(), pad, Layout::Score);
        out.extend(values(rewards(model, &b, &device)));
    }
    out
}

/// Rewards of whole conversations (each ending with the reply to score), rendered in `fmt`
/// and cut to the model's context.
pub fn score_conversations(
    model: &Llama,
    fmt: &ChatFormat,
    tok: &Tokenizer,
    convs: &[Vec<Message>],
    batch: usize,
) -> Result<Vec<f32>> {
    let groups = convs
        .iter()
        .map(|c| {
            let mut ids = fmt.encode(c, tok, false, false)?.ids;
            ids.truncate(model.max_len());
            Ok(vec![Row {
                response: vec![false; ids.len()],
                ids,
                ref_logp: 0.0,
                tier: 0,
            }])
        })
        .collect::<Result<Vec<Group>>>()?;
    Ok(score_groups(model, &groups, reward_pad(model, tok), batch))
}

fn values(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32")
}
