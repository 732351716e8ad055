//! Rotary position embedding in the rotate-half layout, one pass forward and one backward.
//! Composed from tensor ops it was two narrows, a negation, a concatenation, two products and
//! a sum over every query and key tensor, each a pass of its own with its own backward, on
//! the thread that drives the graph.
//!
//! Row `(b, i, h)` at position `p = offset + i`, halves `x₁ x₂`, angles `c = cos[p]`,
//! `s = sin[p]` (the tables' halves are equal): `y₁ = x₁c − x₂s`, `y₂ = x₂c + x₁s`. The
//! rotation is orthogonal, so the backward is the rotation by `−p`: `dx₁ = dy₁c + dy₂s`,
//! `dx₂ = dy₂c − dy₁s`.

use super::util::{f32s, filled, shape, tensor};
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Flex};
use burn_flex::FlexTensor;

/// Rotates `x (B, T, H, D)` for positions `offset..offset + T` by the `(max_len, D)` tables;
/// `sign` -1 rotates back (the backward).
fn rotate(
    x: &FlexTensor,
    cos: &FlexTensor,
    sin: &FlexTensor,
    offset: usize,
    sign: f32,
) -> FlexTensor {
    let dims = shape(x);
    assert_eq!(dims.len(), 4, "x is (B, T, H, D)");
    let (t, h, d) = (dims[1], dims[2], dims[3]);
    let table = shape(cos);
    assert_eq!(table[1], d, "the tables are as wide as a head");
    assert_eq!(d % 2, 0, "a head splits into two halves");
    assert!(offset + t <= table[0], "positions within the tables");
    let (xs, cs, ss) = (f32s(x), f32s(cos), f32s(sin));
    let half = d / 2;
    // One task per (b, i): its H heads share the position's angles.
    // SAFETY: each row writes all h·d elements of its chunk.
    let out = unsafe {
        filled(xs.len(), h * d, |row, o| {
            let p = offset + row % t;
            let (c, s) = (&cs[p * d..p * d + half], &ss[p * d..p * d + half]);
            for head in 0..h {
                let at = head * d;
                let x = &xs[row * h * d + at..row * h * d + at + d];
                let (x1, x2) = x.split_at(half);
                let (o1, o2) = o[at..at + d].split_at_mut(half);
                for j in 0..half {
                    let sj = sign * s[j];
                    o1[j].write(x1[j] * c[j] - x2[j] * sj);
                    o2[j].write(x2[j] * c[j] + x1[j] * sj);
                }
            }
        })
    };
    tensor(out, &dims)
}

pub fn forward(x: &FlexTensor, cos: &FlexTensor, sin: &FlexTensor, offset: usize) -> FlexTensor {
    rotate(x, cos, sin, offset, 1.0)
}

#[derive(Debug)]
struct Rope;

impl Backward<Flex, 1> for Rope {
    type State = (FlexTensor, FlexTensor, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (cos, sin, offset) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
            rotate(&dy, &cos, &sin, offset, -1.0)
        });
    }
}

pub fn run_autodiff<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    cos: FloatTensor<Autodiff<Flex, C>>,
    sin: FloatTensor<Autodiff<Flex, C>>,
    offset: usize,
) -> FloatTensor<Autodiff<Flex, C>> {
    let node = x.node();
    let x = <Autodiff<Flex, C> as AutodiffBackend>::inner(x);
    let cos = <Autodiff<Flex, C> as AutodiffBackend>::inner(cos);
    let sin = <Autodiff<Flex, C> as AutodiffBackend>::inner(sin);
    let y = forward(&x, &cos, &sin, offset);
    match Rope.prepare::<C>([node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((cos, sin, offset), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}
