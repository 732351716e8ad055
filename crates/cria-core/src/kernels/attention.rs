//! Fused causal attention (with optional sliding window and grouped-query heads), in the
//! `(B, T, H, D)` layout the projections produce, so no transposes are materialised.
//!
//! Forward per (batch, head): `S = QKᵀ·scale`, masked softmax saving only the row
//! log-sum-exp, `O = PV`. Backward per (batch, key/value head), recomputing `P` from the
//! log-sum-exp as FlashAttention does (Dao et al. 2022): `dV = PᵀdO`, `dP = dO Vᵀ`,
//! `dS = P∘(dP − rowsum(P∘dP))`, `dQ = dS K·scale`, `dK = dSᵀQ·scale`.
//! Memory: the `(T, S)` probabilities exist only per head while it is computed.

use super::gemm::{Mat, Shared, matmul, matmul_shared};
use super::util::{f32s, register, shape, tensor};
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Flex};
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// Sizes and masking of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub s: usize,
    pub h: usize,
    pub kv: usize,
    pub d: usize,
    /// Absolute position of query 0 (keys are at 0..s).
    pub offset: usize,
    /// Keys more than `window - 1` positions back are hidden (0: no window).
    pub window: usize,
}

impl Dims {
    fn of(q: &FlexTensor, k: &FlexTensor, offset: usize, window: usize) -> Dims {
        let (qs, ks) = (shape(q), shape(k));
        assert_eq!(qs.len(), 4, "q is (B, T, H, D)");
        assert_eq!(ks.len(), 4, "k is (B, S, KV, D)");
        assert!(
            qs[2] % ks[2] == 0,
            "query heads divide into key/value heads"
        );
        assert_eq!(offset + qs[1], ks[1], "queries end at the last key");
        Dims {
            b: qs[0],
            t: qs[1],
            h: qs[2],
            s: ks[1],
            kv: ks[2],
            d: qs[3],
            offset,
            window,
        }
    }
    fn scale(&self) -> f32 {
        (self.d as f32).powf(-0.5)
    }
    /// Visible keys of query row `i`: `lo..=hi`.
    fn visible(&self, i: usize) -> (usize, usize) {
        let q = self.offset + i;
        let lo = if self.window > 0 {
            (q + 1).saturating_sub(self.window)
        } else {
            0
        };
        (lo, q)
    }
    fn q_view<'a>(&self, x: &'a [f32], b: usize, h: usize) -> Mat<'a> {
        let start = b * self.t * self.h * self.d + h * self.d;
        Mat::new(&x[start..], self.t, self.d, self.h * self.d, 1)
    }
    fn kv_view<'a>(&self, x: &'a [f32], b: usize, g: usize) -> Mat<'a> {
        let start = b * self.s * self.kv * self.d + g * self.d;
        Mat::new(&x[start..], self.s, self.d, self.kv * self.d, 1)
    }
}

/// Scores of one head, masked and turned into probabilities in place; returns row log-sum-exps.
fn probabilities(dm: &Dims, q: Mat<'_>, k: Mat<'_>, p: &mut [f32]) -> Vec<f32> {
    matmul(p, dm.s, false, q, k.t(), dm.scale());
    (0..dm.t)
        .map(|i| {
            let (lo, hi) = dm.visible(i);
            let row = &mut p[i * dm.s..(i + 1) * dm.s];
            let max = row[lo..=hi]
                .iter()
                .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let sum = super::simd::exp_shifted(&mut row[lo..=hi], max);
            row[..lo].fill(0.0);
            row[hi + 1..].fill(0.0);
            let inv = 1.0 / sum;
            row[lo..=hi].iter_mut().for_each(|x| *x *= inv);
            max + sum.ln()
        })
        .collect()
}

/// Returns the output `(B, T, H, D)` and the log-sum-exps `(B, H, T)`.
pub fn forward(dm: &Dims, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let rep = dm.h / dm.kv;
    let mut out = vec![0f32; dm.b * dm.t * dm.h * dm.d];
    let shared = Shared::new(&mut out);
    let lse: Vec<Vec<f32>> = (0..dm.b * dm.h)
        .into_par_iter()
        .map(|bh| {
            let (b, h) = (bh / dm.h, bh % dm.h);
            let mut p = vec![0f32; dm.t * dm.s];
            let lse = probabilities(dm, dm.q_view(q, b, h), dm.kv_view(k, b, h / rep), &mut p);
            // SAFETY: head (b, h) writes only its own d columns of rows b·T..(b+1)·T.
            unsafe {
                matmul_shared(
                    shared,
                    (b * dm.t * dm.h + h) * dm.d,
                    dm.h * dm.d,
                    false,
                    Mat::dense(&p, dm.t, dm.s),
                    dm.kv_view(v, b, h / rep),
                    1.0,
                )
            };
            lse
        })
        .collect();
    (out, lse.concat())
}

/// Gradients `(dq, dk, dv)` in the layouts of `q`, `k`, `v`. Each (batch, key/value group)
/// task writes its heads' rows of `dq` and its own rows of `dk` and `dv` in place.
pub fn backward(
    dm: &Dims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lse: &[f32],
    dout: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rep = dm.h / dm.kv;
    let (t, s, d) = (dm.t, dm.s, dm.d);
    let scale = dm.scale();
    let mut dq = vec![0f32; q.len()];
    let mut dk = vec![0f32; k.len()];
    let mut dv = vec![0f32; v.len()];
    let (dq_out, dk_out, dv_out) = (
        Shared::new(&mut dq),
        Shared::new(&mut dk),
        Shared::new(&mut dv),
    );
    (0..dm.b * dm.kv).into_par_iter().for_each(|bg| {
        let (b, g) = (bg / dm.kv, bg % dm.kv);
        let (kg, vg) = (dm.kv_view(k, b, g), dm.kv_view(v, b, g));
        let kv_start = (b * s * dm.kv + g) * d;
        let mut p = vec![0f32; t * s];
        let mut dp = vec![0f32; t * s];
        for h in g * rep..(g + 1) * rep {
            let first = h == g * rep;
            let qh = dm.q_view(q, b, h);
            let doh = dm.q_view(dout, b, h);
            let l = &lse[(b * dm.h + h) * t..(b * dm.h + h + 1) * t];
            matmul(&mut p, s, false, qh, kg.t(), scale);
            for i in 0..t {
                let (lo, hi) = dm.visible(i);
                let row = &mut p[i * s..(i + 1) * s];
                row[..lo].fill(0.0);
                row[hi + 1..].fill(0.0);
                super::simd::exp_shifted(&mut row[lo..=hi], l[i]);
            }
            // SAFETY (each write below): this task alone owns head h's columns of dq in batch
            // b, and group g's columns of dk and dv in batch b.
            unsafe {
                let pt = Mat::dense(&p, t, s).t();
                matmul_shared(dv_out, kv_start, dm.kv * d, !first, pt, doh, 1.0)
            };
            matmul(&mut dp, s, false, doh, vg.t(), 1.0);
            for i in 0..t {
                let (pr, dr) = (&p[i * s..(i + 1) * s], &mut dp[i * s..(i + 1) * s]);
                let di: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                dr.iter_mut().zip(pr).for_each(|(x, p)| *x = p * (*x - di));
            }
            let ds = Mat::dense(&dp, t, s);
            let q_start = (b * t * dm.h + h) * d;
            unsafe {
                matmul_shared(dq_out, q_start, dm.h * d, false, ds, kg, scale);
                matmul_shared(dk_out, kv_start, dm.kv * d, !first, ds.t(), qh, scale);
            }
        }
    });
    (dq, dk, dv)
}

/// The Flex (no autodiff) entry point.
pub fn run(
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    offset: usize,
    window: usize,
) -> FlexTensor {
    let dm = Dims::of(&q, &k, offset, window);
    let (o, _) = forward(&dm, &f32s(&q), &f32s(&k), &f32s(&v));
    tensor(o, &shape(&q))
}

#[derive(Debug)]
struct FusedAttention;

impl Backward<Flex, 3> for FusedAttention {
    type State = (FlexTensor, FlexTensor, FlexTensor, Vec<f32>, Dims);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (q, k, v, lse, dm) = ops.state;
        let grad = grads.consume::<Flex>(&ops.node);
        let (dq, dk, dv) = backward(&dm, &f32s(&q), &f32s(&k), &f32s(&v), &lse, &f32s(&grad));
        let grads_qkv = [
            tensor(dq, &shape(&q)),
            tensor(dk, &shape(&k)),
            tensor(dv, &shape(&v)),
        ];
        register(grads, ops.parents.map(|p| p.map(|n| n.id)), grads_qkv);
    }
}

pub fn run_autodiff<C: CheckpointStrategy>(
    q: FloatTensor<Autodiff<Flex, C>>,
    k: FloatTensor<Autodiff<Flex, C>>,
    v: FloatTensor<Autodiff<Flex, C>>,
    offset: usize,
    window: usize,
) -> FloatTensor<Autodiff<Flex, C>> {
    let nodes = [q.node(), k.node(), v.node()];
    let q = <Autodiff<Flex, C> as AutodiffBackend>::inner(q).to_contiguous();
    let k = <Autodiff<Flex, C> as AutodiffBackend>::inner(k).to_contiguous();
    let v = <Autodiff<Flex, C> as AutodiffBackend>::inner(v).to_contiguous();
    let dm = Dims::of(&q, &k, offset, window);
    let (o, lse) = forward(&dm, &f32s(&q), &f32s(&k), &f32s(&v));
    let out = tensor(o, &shape(&q));
    match FusedAttention
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((q, k, v, lse, dm), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
