//! Fused RMSNorm over the last dimension: `y = x · rsqrt(mean(x²) + eps) · w`.
//! Backward: `dx = r · (dy∘w − x̂ · mean(dy∘w∘x̂))`, `dw = Σ_rows dy∘x̂` with `x̂ = x·r`;
//! the weight gradient is reduced over fixed row blocks in a fixed order, so it does not depend
//! on thread scheduling (exact resume relies on that).

use super::util::{f32s, register, shape, tensor};
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Flex};
use burn_flex::FlexTensor;
use rayon::prelude::*;

const ROWS: usize = 64;

/// Returns `y` and the per-row reciprocal RMS `r`.
pub fn forward(x: &FlexTensor, w: &FlexTensor, eps: f64) -> (FlexTensor, Vec<f32>) {
    let dims = shape(x);
    let c = *dims.last().expect("rank >= 1");
    let (xs, ws) = (f32s(x), f32s(w));
    assert_eq!(ws.len(), c, "weight matches the last dimension");
    let mut y = vec![0f32; xs.len()];
    let mut r = vec![0f32; xs.len() / c];
    y.par_chunks_mut(c)
        .zip(xs.par_chunks(c))
        .zip(r.par_iter_mut())
        .for_each(|((y, x), r)| {
            let ms = x.iter().map(|v| v * v).sum::<f32>() / c as f32;
            *r = 1.0 / (ms + eps as f32).sqrt();
            for i in 0..c {
                y[i] = x[i] * *r * ws[i];
            }
        });
    (tensor(y, &dims), r)
}

fn backward(
    x: &FlexTensor,
    w: &FlexTensor,
    r: &[f32],
    dy: &FlexTensor,
) -> (FlexTensor, FlexTensor) {
    let dims = shape(x);
    let c = *dims.last().expect("rank >= 1");
    let (xs, ws, dys) = (f32s(x), f32s(w), f32s(dy));
    let mut dx = vec![0f32; xs.len()];
    let partial: Vec<Vec<f32>> = dx
        .par_chunks_mut(ROWS * c)
        .zip(xs.par_chunks(ROWS * c).zip(dys.par_chunks(ROWS * c)))
        .zip(r.par_chunks(ROWS))
        .map(|((dx, (x, dy)), r)| {
            let mut dw = vec![0f32; c];
            for (row, &ri) in r.iter().enumerate() {
                let (x, dy, dx) = (
                    &x[row * c..(row + 1) * c],
                    &dy[row * c..(row + 1) * c],
                    &mut dx[row * c..(row + 1) * c],
                );
                let mut dot = 0.0;
                for i in 0..c {
                    let xh = x[i] * ri;
                    dw[i] += dy[i] * xh;
                    dot += dy[i] * ws[i] * xh;
                }
                let mean = dot / c as f32;
                for i in 0..c {
                    dx[i] = ri * (dy[i] * ws[i] - x[i] * ri * mean);
                }
            }
            dw
        })
        .collect();
    let mut dw = vec![0f32; c];
    for p in &partial {
        dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    (tensor(dx, &dims), tensor(dw, &[c]))
}

#[derive(Debug)]
struct RmsNorm;

impl Backward<Flex, 2> for RmsNorm {
    type State = (FlexTensor, FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, r) = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        let (dx, dw) = backward(&x, &w, &r, &dy);
        register(grads, ops.parents.map(|p| p.map(|n| n.id)), [dx, dw]);
    }
}

pub fn run_autodiff<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    w: FloatTensor<Autodiff<Flex, C>>,
    eps: f64,
) -> FloatTensor<Autodiff<Flex, C>> {
    let nodes = [x.node(), w.node()];
    let x = <Autodiff<Flex, C> as AutodiffBackend>::inner(x);
    let w = <Autodiff<Flex, C> as AutodiffBackend>::inner(w);
    let (y, r) = forward(&x, &w, eps);
    match RmsNorm.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((x, w, r), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}
