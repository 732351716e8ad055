//! Fused SwiGLU gate, `silu(g) * u` (Shazeer 2020): one pass forward, one pass backward,
//! instead of sigmoid, two products and their saved intermediates.

use super::util::{f32s, register, shape, tensor};
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Flex};
use burn_flex::FlexTensor;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub fn forward(g: &FlexTensor, u: &FlexTensor) -> FlexTensor {
    assert_eq!(shape(g), shape(u), "gate and up projections have one shape");
    let (gs, us) = (f32s(g), f32s(u));
    let mut out = vec![0f32; gs.len()];
    out.par_chunks_mut(CHUNK)
        .zip(gs.par_chunks(CHUNK).zip(us.par_chunks(CHUNK)))
        .for_each(|(o, (g, u))| {
            for i in 0..o.len() {
                o[i] = g[i] * sigmoid(g[i]) * u[i];
            }
        });
    tensor(out, &shape(g))
}

fn backward(g: &FlexTensor, u: &FlexTensor, dy: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let (gs, us, dys) = (f32s(g), f32s(u), f32s(dy));
    let mut dg = vec![0f32; gs.len()];
    let mut du = vec![0f32; gs.len()];
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(
            gs.par_chunks(CHUNK)
                .zip(us.par_chunks(CHUNK))
                .zip(dys.par_chunks(CHUNK)),
        )
        .for_each(|((dg, du), ((g, u), dy))| {
            for i in 0..dg.len() {
                let s = sigmoid(g[i]);
                du[i] = dy[i] * g[i] * s;
                dg[i] = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
            }
        });
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
