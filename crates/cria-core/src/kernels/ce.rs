//! Fused softmax cross-entropy. Forward: one pass per row computes the log-sum-exp and the
//! target's negative log-likelihood. Backward: `softmax(row) - onehot(target)` scaled by the
//! row's incoming gradient, in one more pass; the `(N, V)` log-softmax is never stored.

use super::util::{f32s, filled, indices, shape, tensor};
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, AutodiffBackend, Flex};
use burn::tensor::{Int, Tensor, activation::log_softmax};
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// Returns per-row `(nll, logsumexp)`.
pub fn forward(logits: &FlexTensor, targets: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let dims = shape(logits);
    let (n, v) = (dims[0], dims[1]);
    let x = f32s(logits);
    let t = indices(targets);
    assert_eq!(t.len(), n, "one target per row");
    let (nll, lse): (Vec<f32>, Vec<f32>) = x
        .par_chunks(v)
        .zip(t.par_iter())
        .map(|(row, &target)| {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a));
            let sum = super::simd::sum_exp(row, max);
            let lse = max + sum.ln();
            (lse - row[target], lse)
        })
        .unzip();
    (tensor(nll, &[n]), tensor(lse, &[n]))
}

fn backward(
    logits: &FlexTensor,
    targets: &FlexTensor,
    lse: &FlexTensor,
    grad: &FlexTensor,
) -> FlexTensor {
    let dims = shape(logits);
    let v = dims[1];
    let x = f32s(logits);
    let (t, lse, g) = (indices(targets), f32s(lse), f32s(grad));
    // SAFETY: exp_scaled writes every element of its row, the target's included.
    let out = unsafe {
        filled(x.len(), v, |i, o| {
            let (l, gi, row) = (lse[i], g[i], &x[i * v..(i + 1) * v]);
            super::simd::exp_scaled(o, row, l, gi);
            o[t[i]].write(super::simd::exp(row[t[i]] - l) * gi - gi);
        })
    };
    tensor(out, &dims)
}

#[derive(Debug)]
struct CrossEntropyRows;

impl Backward<Flex, 1> for CrossEntropyRows {
    type State = (FlexTensor, FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, targets, lse) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            backward(&logits, &targets, &lse, &grad)
        });
    }
}

/// The autodiff entry point: the loss, with a backward that needs no `(N, V)` intermediate.
pub fn run_autodiff<C: CheckpointStrategy>(
    logits: FloatTensor<Autodiff<Flex, C>>,
    targets: IntTensor<Autodiff<Flex, C>>,
) -> FloatTensor<Autodiff<Flex, C>> {
    let node = logits.node();
    let x = <Autodiff<Flex, C> as AutodiffBackend>::inner(logits);
    let (nll, lse) = forward(&x, &targets);
    match CrossEntropyRows
        .prepare::<C>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((x, targets, lse), nll),
        OpsKind::UnTracked(prep) => prep.finish(nll),
    }
}

/// The same loss from composed burn ops, for tests.
pub fn cross_entropy_rows_reference(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    log_softmax(logits, 1)
        .gather(1, targets.reshape([n, 1]))
        .reshape([n])
        .neg()
}
