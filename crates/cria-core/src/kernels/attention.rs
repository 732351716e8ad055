//! Fused causal attention (with optional sliding window and grouped-query heads), in the
//! `(B, T, H, D)` layout the projections produce, so no transposes are materialised.
//!
//! Forward per (batch, head): `S = QKᵀ·scale`, masked softmax saving only the row
//! log-sum-exp, `O = PV`. Backward per (batch, key/value head), recomputing `P` from the
//! log-sum-exp as FlashAttention does (Dao et al. 2022): `dV = PᵀdO`, `dP = dO Vᵀ`,
//! `dS = P∘(dP − rowsum(P∘dP))`, `dQ = dS K·scale`, `dK = dSᵀQ·scale`.
//! Query rows go in blocks of 64, each block's products over only the keys its rows see, so
//! the causal mask's hidden half of the score matrix is never computed.
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

/// Query rows per block: each block's products span only the keys its rows can see (causal
/// attention leaves the rest of the score matrix, about half of it, uncomputed).
const BLOCK: usize = 64;

/// The query blocks: `(first row, rows, first key, keys)`, the keys those rows see between them.
fn blocks(dm: &Dims) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
    (0..dm.t).step_by(BLOCK).map(|i0| {
        let rows = BLOCK.min(dm.t - i0);
        let (klo, _) = dm.visible(i0);
        let (_, khi) = dm.visible(i0 + rows - 1);
        (i0, rows, klo, khi + 1 - klo)
    })
}

/// Row `i` of a `(T, S)` buffer over a block's keys `klo..klo + width`, with the row's own
/// visible range inside it as `lo..=hi` relative to `klo`.
fn block_row<'a>(
    dm: &Dims,
    buf: &'a mut [f32],
    i: usize,
    klo: usize,
    width: usize,
) -> (&'a mut [f32], usize, usize) {
    let (lo, hi) = dm.visible(i);
    let row = &mut buf[i * dm.s + klo..i * dm.s + klo + width];
    (row, lo - klo, hi - klo)
}

/// Returns the output `(B, T, H, D)` and the log-sum-exps `(B, H, T)`.
pub fn forward(dm: &Dims, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let rep = dm.h / dm.kv;
    let s = dm.s;
    let mut out = vec![0f32; dm.b * dm.t * dm.h * dm.d];
    let shared = Shared::new(&mut out);
    let lse: Vec<Vec<f32>> = (0..dm.b * dm.h)
        .into_par_iter()
        .map(|bh| {
            let (b, h) = (bh / dm.h, bh % dm.h);
            let (qh, kg, vg) = (
                dm.q_view(q, b, h),
                dm.kv_view(k, b, h / rep),
                dm.kv_view(v, b, h / rep),
            );
            let mut p = vec![0f32; dm.t * s];
            let mut lse = vec![0f32; dm.t];
            for (i0, rows, klo, width) in blocks(dm) {
                let keys = kg.rows(klo, width);
                matmul(
                    &mut p[i0 * s + klo..],
                    s,
                    false,
                    qh.rows(i0, rows),
                    keys.t(),
                    dm.scale(),
                );
                for (i, lse) in lse.iter_mut().enumerate().skip(i0).take(rows) {
                    let (row, lo, hi) = block_row(dm, &mut p, i, klo, width);
                    let max = row[lo..=hi]
                        .iter()
                        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                    let sum = super::simd::exp_shifted(&mut row[lo..=hi], max);
                    row[..lo].fill(0.0);
                    row[hi + 1..].fill(0.0);
                    let inv = 1.0 / sum;
                    row[lo..=hi].iter_mut().for_each(|x| *x *= inv);
                    *lse = max + sum.ln();
                }
                let pb = Mat::new(&p[i0 * s + klo..], rows, width, s, 1);
                // SAFETY: head (b, h) writes only its own d columns of its batch's rows.
                unsafe {
                    let start = ((b * dm.t + i0) * dm.h + h) * dm.d;
                    matmul_shared(
                        shared,
                        start,
                        dm.h * dm.d,
                        false,
                        pb,
                        vg.rows(klo, width),
                        1.0,
                    )
                };
            }
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
            let qh = dm.q_view(q, b, h);
            let doh = dm.q_view(dout, b, h);
            let l = &lse[(b * dm.h + h) * t..(b * dm.h + h + 1) * t];
            for (i0, rows, klo, width) in blocks(dm) {
                let (qb, dob) = (qh.rows(i0, rows), doh.rows(i0, rows));
                let (keys, values) = (kg.rows(klo, width), vg.rows(klo, width));
                let at = i0 * s + klo;
                matmul(&mut p[at..], s, false, qb, keys.t(), scale);
                for (i, &li) in l.iter().enumerate().skip(i0).take(rows) {
                    let (row, lo, hi) = block_row(dm, &mut p, i, klo, width);
                    row[..lo].fill(0.0);
                    row[hi + 1..].fill(0.0);
                    super::simd::exp_shifted(&mut row[lo..=hi], li);
                }
                let pb = Mat::new(&p[at..], rows, width, s, 1);
                let kv_at = kv_start + klo * dm.kv * d;
                // SAFETY (each write below): this task alone owns head h's columns of dq in
                // batch b, and group g's columns of dk and dv in batch b (zeroed above, so
                // every block adds to them).
                unsafe { matmul_shared(dv_out, kv_at, dm.kv * d, true, pb.t(), dob, 1.0) };
                matmul(&mut dp[at..], s, false, dob, values.t(), 1.0);
                for i in i0..i0 + rows {
                    let pr = &p[i * s + klo..i * s + klo + width];
                    let (dr, _, _) = block_row(dm, &mut dp, i, klo, width);
                    let di: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                    dr.iter_mut().zip(pr).for_each(|(x, p)| *x = p * (*x - di));
                }
                let ds = Mat::new(&dp[at..], rows, width, s, 1);
                let q_at = ((b * t + i0) * dm.h + h) * d;
                unsafe {
                    matmul_shared(dq_out, q_at, dm.h * d, false, ds, keys, scale);
                    matmul_shared(dk_out, kv_at, dm.kv * d, true, ds.t(), qb, scale);
                }
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
