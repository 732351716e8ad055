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
/// stage that trains on tokens. When some positions carry no weight (a chat's prompt turns,
/// padding), the language-model head and the softmax run at the weighted ones only: the
/// others feed attention but need no logits.
pub fn lm_loss(model: &Llama, batch: &Batch, device: &Device) -> Tensor<1> {
    let Some((at, n)) = weighted(batch, device).filter(|(_, n)| *n > 0 && *n < batch.b * batch.t)
    else {
        let logits = model.forward(batch.input_ids(device), None);
        return cross_entropy(
            logits,
            batch.target_ids(device),
            batch.weight_tensor(device),
        );
    };
    let logits = logits_at(model, batch, device, at.clone(), n);
    let targets = batch
        .target_ids(device)
        .reshape([batch.b * batch.t])
        .select(0, at.clone())
        .reshape([1, n]);
    let weights = batch
        .weight_tensor(device)
        .expect("weighted positions")
        .reshape([batch.b * batch.t])
        .select(0, at)
        .reshape([1, n]);
    cross_entropy(logits, targets, Some(weights))
}

/// The row-major positions of a batch's weighted targets and their count (`None` without
/// weights).
fn weighted(batch: &Batch, device: &Device) -> Option<(Tensor<1, Int>, usize)> {
    let weights = batch.weights.as_ref()?;
    let at: Vec<i64> = (0..weights.len())
        .filter(|&i| weights[i] > 0.0)
        .map(|i| i as i64)
        .collect();
    let n = at.len();
    Some((Tensor::from_data(TensorData::new(at, [n]), device), n))
}

/// The logits at row-major positions `at` (`n` of them) of the batch: the head runs there only.
///
/// # Shapes
/// -> `(1, N, V)`
fn logits_at(
    model: &Llama,
    batch: &Batch,
    device: &Device,
    at: Tensor<1, Int>,
    n: usize,
) -> Tensor<3> {
    let h = model.hidden(batch.input_ids(device), None);
    let c = h.dims()[2];
    model.logits(
        h.reshape([batch.b * batch.t, c])
            .select(0, at)
            .reshape([1, n, c]),
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
    let (at, n) = weighted(batch, device).expect("a token-layout batch");
    let mut logits = logits_at(model, batch, device, at.clone(), n);
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

/// Sum of log-probabilities of each row's response tokens (a [`Layout::Tokens`] batch, its
/// weights 0 or 1), the head at the response positions only.
///
/// # Shapes
/// -> `(B,)`
pub fn batch_logps(model: &Llama, batch: &Batch, device: &Device) -> Tensor<1> {
    token_logps(model, batch, device, 1.0)
        .0
        .sum_dim(1)
        .reshape([batch.b])
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::batch::{Layout, Row, make_batch};
    use cria_core::config::{Arch, Head, ModelConfig};
    use cria_core::params::{ParamMut, Params, to_vec};
    use cria_core::weights::VarBuilder;

    /// A two-layer model of 16 wide (GQA, untied head) on the training device, every
    /// parameter tracked.
    pub(crate) fn tiny_model(head: Head) -> Llama {
        let cfg = ModelConfig {
            arch: Arch::Llama,
            head,
            reward_offset: 0.0,
            vocab_size: 40,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 8,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            max_position_embeddings: 64,
            tie_word_embeddings: false,
            qkv_bias: false,
            qk_norm: false,
            o_bias: false,
            mlp_bias: false,
            sliding_window: vec![None; 2],
            initializer_range: 0.2,
            bos_token_id: None,
            eos_token_id: vec![],
            pad_token_id: None,
            extras: Default::default(),
        };
        let dev = cria_core::device::training_device();
        let mut vb = VarBuilder::init(3, cfg.initializer_range, &dev);
        Llama::new(&cfg, &mut vb).unwrap().require_grad()
    }

    /// Every parameter's gradient under `a` and `b`, compared to `tol` of the largest.
    pub(crate) fn same_gradients(
        model: &Llama,
        a: &burn::tensor::Gradients,
        b: &burn::tensor::Gradients,
        tol: f32,
    ) {
        let mut compared = 0;
        model.clone().visit("", &mut |name, p| {
            let (x, y) = match p {
                ParamMut::Vector(t) => (t.grad(a).map(to_vec), t.grad(b).map(to_vec)),
                ParamMut::Matrix { t, .. } => (t.grad(a).map(to_vec), t.grad(b).map(to_vec)),
            };
            let (x, y) = (x.expect(name), y.expect(name));
            let scale = y.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() <= tol * scale, "{name}: gradient {p} vs {q}");
            }
            compared += 1;
        });
        assert!(compared > 10, "every parameter compared ({compared})");
    }

    /// A reward model's last block at the read positions only gives the full pass's rewards
    /// and gradients (positions at the first, a middle and the last place of a row).
    #[test]
    fn rewards_from_the_last_blocks_read_positions_equal_the_full_pass() {
        let model = tiny_model(Head::Score);
        let dev = cria_core::device::training_device();
        let (b, t) = (3, 7);
        let ids: Vec<i64> = (0..b * t).map(|i| (i * 7 % 37 + 1) as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), &dev);
        let at = [6, 0, 3];
        let cut = model.rewards(ids.clone(), &at);
        let full = model.scores(ids).reshape([b * t]).select(
            0,
            Tensor::<1, Int>::from_data(TensorData::new(vec![6i64, 7, 17], [3]), &dev),
        );
        let (x, y) = (to_vec(cut.clone()), to_vec(full.clone()));
        for (a, c) in x.iter().zip(&y) {
            assert!((a - c).abs() < 1e-5 * c.abs().max(1.0), "reward {a} vs {c}");
        }
        let w = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, -2.0, 0.5], [3]), &dev);
        same_gradients(
            &model,
            &(cut * w.clone()).sum().backward(),
            &(full * w).sum().backward(),
            1e-5,
        );
    }

    /// The loss of a chat batch (prompt positions and padding unweighted) with the head at the
    /// weighted positions only equals the full computation in value and in every gradient.
    #[test]
    fn lm_loss_at_weighted_positions_equals_the_full_head() {
        let model = tiny_model(Head::Lm);
        let rows = [
            Row::reply(&[1, 2, 3, 4], &[5, 6, 7]),
            Row::reply(&[8, 9], &[10, 11, 12, 13, 14, 15]),
            Row::reply(&[16, 17, 18], &[19]),
        ];
        let groups: Vec<Vec<Row>> = rows.iter().map(|r| vec![r.clone()]).collect();
        let batch = make_batch(groups.iter(), 0, Layout::Tokens);
        let dev = cria_core::device::training_device();
        let w = batch.weights.as_ref().unwrap();
        let on = w.iter().filter(|x| **x > 0.0).count();
        assert!(on > 0 && on < w.len(), "some positions unweighted");
        let cut = lm_loss(&model, &batch, &dev);
        let full = cross_entropy(
            model.forward(batch.input_ids(&dev), None),
            batch.target_ids(&dev),
            batch.weight_tensor(&dev),
        );
        let (x, y) = (to_vec(cut.clone())[0], to_vec(full.clone())[0]);
        assert!((x - y).abs() < 1e-6 * y.abs().max(1.0), "loss {x} vs {y}");
        same_gradients(&model, &cut.backward(), &full.backward(), 1e-5);

        // Each row's response log-probability likewise (DPO's policy pass).
        let cut = batch_logps(&model, &batch, &dev);
        let full = crate::losses::sequence_logps(
            model.forward(batch.input_ids(&dev), None),
            batch.target_ids(&dev),
            batch.weight_tensor(&dev).unwrap(),
        );
        let (x, y) = (to_vec(cut.clone()), to_vec(full.clone()));
        for (a, b) in x.iter().zip(&y) {
            assert!(
                (a - b).abs() < 1e-5 * b.abs().max(1.0),
                "row log-prob {a} vs {b}"
            );
        }
        same_gradients(&model, &cut.sum().backward(), &full.sum().backward(), 1e-5);
    }
}
