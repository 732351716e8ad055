//! Fused SwiGLU gate, `silu(g) * u` (Shazeer 2020): one pass forward, one pass backward,
//! instead of sigmoid, two products and their saved intermediates.

use super::util::{f32s, filled, register, shape, tensor};
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Flex};
use burn_flex::FlexTensor;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

pub fn forward(g: &FlexTensor, u: &FlexTensor) -> FlexTensor {
    assert_eq!(shape(g), shape(u), "gate and up projections have one shape");
    let (gs, us) = (f32s(g), f32s(u));
    // SAFETY: simd::swiglu writes every element of its chunk.
    let out = unsafe {
        filled(gs.len(), CHUNK, |i, o| {
            super::simd::swiglu(o, &gs[i * CHUNK..], &us[i * CHUNK..])
        })
    };
    tensor(out, &shape(g))
}

fn backward(g: &FlexTensor, u: &FlexTensor, dy: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let (gs, us, dys) = (f32s(g), f32s(u), f32s(dy));
    let n = gs.len();
    let (mut dg, mut du) = (Vec::with_capacity(n), Vec::with_capacity(n));
    dg.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .zip(du.spare_capacity_mut()[..n].par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(i, (dg, du))| {
            let at = i * CHUNK;
            super::simd::swiglu_grad(dg, du, &gs[at..], &us[at..], &dys[at..])
        });
    // SAFETY: the chunks cover all n elements and swiglu_grad wrote every one of each.
    unsafe {
        dg.set_len(n);
        du.set_len(n);
    }
    let dims = shape(g);
    (tensor(dg, &dims), tensor(du, &dims))
}

#[derive(Debug)]
struct SwiGlu;

impl Backward<Flex, 2> for SwiGlu {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (g, u) = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        let (dg, du) = backward(&g, &u, &dy);
        register(grads, ops.parents.map(|p| p.map(|n| n.id)), [dg, du]);
    }
}

pub fn run_autodiff<C: CheckpointStrategy>(
    g: FloatTensor<Autodiff<Flex, C>>,
    u: FloatTensor<Autodiff<Flex, C>>,
) -> FloatTensor<Autodiff<Flex, C>> {
    let nodes = [g.node(), u.node()];
    let g = <Autodiff<Flex, C> as AutodiffBackend>::inner(g);
    let u = <Autodiff<Flex, C> as AutodiffBackend>::inner(u);
    let out = forward(&g, &u);
    match SwiGlu.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((g, u), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
