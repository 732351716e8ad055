//! Fused CPU kernels with their own backward passes, plugged into burn through its backend
//! extension API. Composed burn ops allocate and traverse a tensor per step (log-softmax over
//! the vocabulary, the attention score matrix, SwiGLU's three products); these do each in one
//! or two parallel passes over plain slices.
//!
//! Each kernel has a plain reference made of ordinary tensor ops beside it (`*_reference`), and
//! the tests hold the two equal in value and gradient. On any other backend (a GPU build's
//! device) the wrappers run those references: the kernels are CPU code.

mod attention;
mod ce;
pub mod gemm;
mod linear;
mod norm;
mod rope;
mod simd;
mod swiglu;
mod util;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{Int, Tensor};

pub use ce::cross_entropy_rows_reference;
/// The vectorised `exp` over a row (softmax outside burn: GGUF inference).
pub use simd::exp_shifted;

#[backend_extension(Flex, Autodiff)]
pub trait Kernels: Backend {
    /// Negative log-likelihood of `targets` under `logits`, per row.
    fn cross_entropy_rows(logits: FloatTensor<Self>, targets: IntTensor<Self>)
    -> FloatTensor<Self>;
    /// Causal attention in `(B, T, H, D)` layout; see [`attention`].
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        offset: usize,
        window: usize,
    ) -> FloatTensor<Self>;
    /// `silu(g) * u`, elementwise.
    fn swiglu(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self>;
    /// RMSNorm over the last dimension with weight `w`.
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;
    /// `x · w` for 2-D `x (N, in)` and `w (in, out)`.
    fn linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Rotate-half RoPE of `x (B, T, H, D)` at positions `offset..` by `(max_len, D)` tables.
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        offset: usize,
    ) -> FloatTensor<Self>;
}

/// Whether `device` is burn-flex's (with or without autodiff), where the fused kernels run.
fn on_flex(device: burn::tensor::Device) -> bool {
    device.inner() == burn::tensor::Device::flex()
}

/// The SwiGLU gate `silu(g) * u`.
pub fn swiglu<const D: usize>(g: Tensor<D>, u: Tensor<D>) -> Tensor<D> {
    if !on_flex(g.device()) {
        return swiglu_reference(g, u);
    }
    Tensor::from_dispatch(<Dispatch as Kernels>::swiglu(
        g.into_dispatch(),
        u.into_dispatch(),
    ))
}

/// The same gate from composed burn ops, for tests.
pub fn swiglu_reference<const D: usize>(g: Tensor<D>, u: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::silu(g) * u
}

/// The product `x · w` of a linear layer (no bias), with a backward that computes the input's
/// and the weight's gradients side by side.
///
/// # Shapes
/// `x`: `(N, in)`, `w`: `(in, out)` -> `(N, out)`
pub fn linear(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    if !on_flex(x.device()) {
        return linear_reference(x, w);
    }
    Tensor::from_dispatch(<Dispatch as Kernels>::linear(
        x.into_dispatch(),
        w.into_dispatch(),
    ))
}

/// The same product as burn's matmul, for tests.
pub fn linear_reference(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    x.matmul(w)
}

/// Rotary position embedding in the rotate-half layout (Hugging Face LLaMA's): `x` at
/// positions `offset..offset + T`, by `(max_len, D)` cos and sin tables whose two halves are
/// equal.
///
/// # Shapes
/// `x`: `(B, T, H, D)` -> `(B, T, H, D)`
pub fn rope(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>, offset: usize) -> Tensor<4> {
    if !on_flex(x.device()) || cos.dims()[1] != x.dims()[3] {
        return rope_reference(x, cos, sin, offset);
    }
    Tensor::from_dispatch(<Dispatch as Kernels>::rope(
        x.into_dispatch(),
        cos.clone().into_dispatch(),
        sin.clone().into_dispatch(),
        offset,
    ))
}

/// The same rotation from composed burn ops, for tests.
pub fn rope_reference(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>, offset: usize) -> Tensor<4> {
    let [_, t, _, hs] = x.dims();
    let angles = |table: &Tensor<2>| {
        table
            .clone()
            .narrow(0, offset, t)
            .unsqueeze_dim::<3>(1)
            .unsqueeze::<4>()
    };
    let half = hs / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * angles(cos) + rotated * angles(sin)
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) * w`.
pub fn rms_norm<const D: usize>(x: Tensor<D>, w: Tensor<1>, eps: f64) -> Tensor<D> {
    if !on_flex(x.device()) {
        return rms_norm_reference(x, w, eps);
    }
    Tensor::from_dispatch(<Dispatch as Kernels>::rms_norm(
        x.into_dispatch(),
        w.into_dispatch(),
        eps,
    ))
}

/// The same norm from composed burn ops, for tests.
pub fn rms_norm_reference<const D: usize>(x: Tensor<D>, w: Tensor<1>, eps: f64) -> Tensor<D> {
    let rms = (x.clone().square().mean_dim(D - 1) + eps).sqrt();
    (x / rms) * w.unsqueeze::<D>()
}

/// Causal scaled dot-product attention with grouped-query heads: query `i` (at absolute
/// position `offset + i`) sees keys `0..=offset + i`, and only the last `window` of them when
/// `window` is set.
///
/// # Shapes
/// `q`: `(B, T, H, D)`, `k`, `v`: `(B, offset + T, KV, D)` -> `(B, T, H, D)`
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    offset: usize,
    window: Option<usize>,
) -> Tensor<4> {
    if !on_flex(q.device()) {
        return attention_reference(q, k, v, offset, window);
    }
    Tensor::from_dispatch(<Dispatch as Kernels>::attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        offset,
        window.unwrap_or(0),
    ))
}

/// Causal attention over left-padded rows (batched generation): as [`attention`], and row `b`'s
/// queries also ignore keys before `starts[b]`, its padding. A padding query sees only itself
/// (its output is never used, but stays finite). RoPE scores depend on position differences
/// only, so a padded row attends exactly as it would alone. Composed from burn ops: used for
/// inference, where the rows are few and short.
///
/// # Shapes
/// `q`: `(B, T, H, D)`, `k`, `v`: `(B, offset + T, KV, D)` -> `(B, T, H, D)`
pub fn attention_padded(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    offset: usize,
    window: Option<usize>,
    starts: &[usize],
) -> Tensor<4> {
    let [b, t, _, _] = q.dims();
    let s = k.dims()[1];
    assert_eq!(starts.len(), b, "one start per row");
    let mut m = vec![0f32; b * t * s];
    for (r, &start) in starts.iter().enumerate() {
        for i in 0..t {
            let qpos = offset + i;
            for j in 0..s {
                let future = j > qpos;
                let outside = window.is_some_and(|w| qpos >= w && j <= qpos - w);
                let padding = j < start && j != qpos;
                if future || outside || padding {
                    m[(r * t + i) * s + j] = f32::NEG_INFINITY;
                }
            }
        }
    }
    let mask = Tensor::<3>::from_data(burn::tensor::TensorData::new(m, [b, t, s]), &q.device())
        .unsqueeze_dim::<4>(1);
    composed_attention(q, k, v, mask)
}

/// Softmax attention from composed burn ops with an additive mask that broadcasts over
/// `(B, H, T, S)`; key/value heads are repeated for their query groups.
fn composed_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4>) -> Tensor<4> {
    let [b, _, h, d] = q.dims();
    let [_, s, kv, _] = k.dims();
    let rep = h / kv;
    let expand = |x: Tensor<4>| {
        x.swap_dims(1, 2)
            .unsqueeze_dim::<5>(2)
            .expand([b, kv, rep, s, d])
            .reshape([b, h, s, d])
    };
    let scores = q.swap_dims(1, 2).matmul(expand(k).swap_dims(2, 3)) * (d as f64).powf(-0.5) + mask;
    burn::tensor::activation::softmax(scores, 3)
        .matmul(expand(v))
        .swap_dims(1, 2)
}

/// The additive mask `(T, S)` the composed reference attention uses, for queries at
/// `offset..offset+T` over keys `0..offset+T`: 0 where a query may look, -inf elsewhere (the future, and beyond the sliding window).
pub fn attention_mask(
    t: usize,
    offset: usize,
    window: Option<usize>,
    device: &burn::tensor::Device,
) -> Tensor<2> {
    let s = offset + t;
    let mut m = vec![0f32; t * s];
    for i in 0..t {
        let q = offset + i;
        for (j, v) in m[i * s..(i + 1) * s].iter_mut().enumerate() {
            let future = j > q;
            let outside = window.is_some_and(|w| q >= w && j <= q - w);
            if future || outside {
                *v = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_data(burn::tensor::TensorData::new(m, [t, s]), device)
}

/// The same attention from composed burn ops, for tests.
pub fn attention_reference(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    offset: usize,
    window: Option<usize>,
) -> Tensor<4> {
    let t = q.dims()[1];
    let mask = attention_mask(t, offset, window, &q.device());
    composed_attention(q, k, v, mask.unsqueeze::<4>())
}

/// Per-row cross-entropy: `logsumexp(logits[i]) - logits[i, targets[i]]`.
///
/// # Shapes
/// `logits`: `(N, V)`, `targets`: `(N,)` -> `(N,)`
pub fn cross_entropy_rows(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    if !on_flex(logits.device()) {
        return cross_entropy_rows_reference(logits, targets);
    }
    Tensor::from_dispatch(<Dispatch as Kernels>::cross_entropy_rows(
        logits.into_dispatch(),
        targets.into_dispatch(),
    ))
}

impl Kernels for Flex {
    fn cross_entropy_rows(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        ce::forward(&logits, &targets).0
    }
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        offset: usize,
        window: usize,
    ) -> FloatTensor<Self> {
        attention::run(q, k, v, offset, window)
    }
    fn swiglu(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        swiglu::forward(&g, &u)
    }
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        norm::forward(&x, &w, eps).0
    }
    fn linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        linear::forward(&x, &w)
    }
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        offset: usize,
    ) -> FloatTensor<Self> {
        rope::forward(&x, &cos, &sin, offset)
    }
}

impl<C: CheckpointStrategy> Kernels for Autodiff<Flex, C> {
    fn cross_entropy_rows(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        ce::run_autodiff::<C>(logits, targets)
    }
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        offset: usize,
        window: usize,
    ) -> FloatTensor<Self> {
        attention::run_autodiff::<C>(q, k, v, offset, window)
    }
    fn swiglu(g: FloatTensor<Self>, u: FloatTensor<Self>) -> FloatTensor<Self> {
        swiglu::run_autodiff::<C>(g, u)
    }
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        norm::run_autodiff::<C>(x, w, eps)
    }
    fn linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        linear::run_autodiff::<C>(x, w)
    }
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        offset: usize,
    ) -> FloatTensor<Self> {
        rope::run_autodiff::<C>(x, cos, sin, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::on_flex;

    #[test]
    fn the_cpu_devices_take_the_fused_kernels() {
        // Inference and training devices alike: a miss would fall back to the compositions,
        // equal in value and silently slower.
        assert!(on_flex(crate::device::inference_device()));
        assert!(on_flex(crate::device::training_device()));
    }
}
