//! Decoding many independent sequences at once (continuous batching): each sequence keeps
//! its keys and values in plain buffers of its own ([`RowCache`]), so a step appends one
//! position per sequence instead of copying the cache, and attention reads every row at its
//! own length — no row is padded to another's. The projections of all rows still run as one
//! matmul per layer ([`Llama::decode_rows`]).

use super::{KvCache, Llama};
use crate::kernels::gemm::{Mat, matmul};
use crate::nn::attention::LayerCache;
use crate::params::to_vec;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;

/// One sequence's keys and values for one layer, `(len, kv_heads, head_dim)` row-major.
#[derive(Clone, Debug, Default)]
pub struct RowLayer {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    kv_heads: usize,
    head_dim: usize,
}

impl RowLayer {
    /// Floats per position.
    fn width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    pub fn len(&self) -> usize {
        self.k.len().checked_div(self.width()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.k.is_empty()
    }
}

/// One sequence's cache, every layer.
#[derive(Clone, Debug, Default)]
pub struct RowCache {
    pub layers: Vec<RowLayer>,
    /// The RoPE position of the first cached entry: a row cut from a left-padded batch keeps
    /// the positions its keys were rotated at (the padding before it counted), and the next
    /// token goes at `offset + len()`. Attention depends on position differences only.
    pub offset: usize,
}

impl RowCache {
    /// The cache of a one-row [`KvCache`] (after a prefill), copied out of its tensors.
    pub fn from_cache(cache: &KvCache) -> RowCache {
        let layers = cache
            .layers
            .iter()
            .map(|l| match &l.kv {
                Some((k, v)) => {
                    let [b, _, kv, d] = k.dims();
                    assert_eq!(b, 1, "one sequence per RowCache");
                    RowLayer {
                        k: to_vec(k.clone()),
                        v: to_vec(v.clone()),
                        kv_heads: kv,
                        head_dim: d,
                    }
                }
                None => RowLayer::default(),
            })
            .collect();
        RowCache { layers, offset: 0 }
    }

    /// Each row of a left-padded batch's cache (after [`KvCache::padded`] prefilled it), its
    /// real positions only: row `r`'s start at `starts[r]`.
    pub fn split_padded(cache: &KvCache, starts: &[usize]) -> Vec<RowCache> {
        let mut rows: Vec<RowCache> = starts
            .iter()
            .map(|&offset| RowCache {
                layers: Vec::with_capacity(cache.layers.len()),
                offset,
            })
            .collect();
        for l in &cache.layers {
            let Some((k, v)) = &l.kv else {
                rows.iter_mut()
                    .for_each(|r| r.layers.push(RowLayer::default()));
                continue;
            };
            let [b, t, kv, d] = k.dims();
            assert_eq!(b, starts.len(), "one start per row");
            let (k, v) = (to_vec(k.clone()), to_vec(v.clone()));
            let w = kv * d;
            for (r, row) in rows.iter_mut().enumerate() {
                let cells = (r * t + starts[r]) * w..(r + 1) * t * w;
                row.layers.push(RowLayer {
                    k: k[cells.clone()].to_vec(),
                    v: v[cells].to_vec(),
                    kv_heads: kv,
                    head_dim: d,
                });
            }
        }
        rows
    }

    /// Back to a one-row [`KvCache`], holding its first `len` positions (to continue a
    /// prefill from a shared prefix; a row starting at position 0).
    pub fn to_cache(&self, len: usize, device: &Device) -> KvCache {
        assert_eq!(self.offset, 0, "a row cut from a padded batch stays a row");
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let n = len.min(l.len());
                if n == 0 {
                    return LayerCache::default();
                }
                let t = |x: &[f32]| {
                    Tensor::<4>::from_data(
                        TensorData::new(
                            x[..n * l.width()].to_vec(),
                            [1, n, l.kv_heads, l.head_dim],
                        ),
                        device,
                    )
                };
                LayerCache {
                    kv: Some((t(&l.k), t(&l.v))),
                    starts: None,
                }
            })
            .collect();
        KvCache { layers }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, RowLayer::len)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Head counts of one attention layer.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub q: usize,
    pub kv: usize,
    pub dim: usize,
}

/// Appends row `r`'s new key and value (`k`, `v`: `(n, 1, kv, dim)` flattened) to `caches[r]`
/// and attends its query (`q`: `(n, 1, heads, dim)`) over that row's cache, the last
/// `window` positions only when given (as the fused kernel's sliding window: keys
/// `j > pos - window`). Scores scale by `dim^-1/2`, as the fused kernel's. Returns
/// `(n, 1, heads, dim)` flattened.
pub fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    caches: &mut [&mut RowLayer],
    h: Heads,
    window: Option<usize>,
) -> Vec<f32> {
    let (qw, kw) = (h.q * h.dim, h.kv * h.dim);
    for (r, c) in caches.iter_mut().enumerate() {
        (c.kv_heads, c.head_dim) = (h.kv, h.dim);
        c.k.extend_from_slice(&k[r * kw..(r + 1) * kw]);
        c.v.extend_from_slice(&v[r * kw..(r + 1) * kw]);
    }
    let scale = (h.dim as f32).powf(-0.5);
    let group = h.q / h.kv;
    let mut out = vec![0f32; q.len()];
    out.par_chunks_mut(h.dim).enumerate().for_each(|(i, o)| {
        let (r, head) = (i / h.q, i % h.q);
        let c = &caches[r];
        let len = c.len();
        let first = window.map_or(0, |w| (len - 1).saturating_sub(w - 1));
        let qh = &q[r * qw + head * h.dim..r * qw + (head + 1) * h.dim];
        let (g, n) = (head / group, len - first);
        // Head g's keys and values from position `first`: n rows of `dim`, `kw` apart.
        let from = first * kw + g * h.dim;
        let keys = Mat::new(&c.k[from..], h.dim, n, 1, kw);
        let mut p = vec![0f32; n];
        matmul(&mut p, n, false, Mat::dense(qh, 1, h.dim), keys, scale);
        let m = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut z = 0f32;
        for x in p.iter_mut() {
            *x = (*x - m).exp();
            z += *x;
        }
        let values = Mat::new(&c.v[from..], n, h.dim, kw, 1);
        matmul(o, h.dim, false, Mat::dense(&p, 1, n), values, 1.0 / z);
    });
    out
}

impl Llama {
    /// One decoding step of independent sequences: `tokens[r]` is the next token of the
    /// sequence cached in `caches[r]`, each at its own position; every projection runs once
    /// for all rows. Returns the next-token logits, row by row.
    ///
    /// # Shapes
    /// `tokens`: `n` -> `(n, 1, V)`
    pub fn decode_rows(&self, tokens: &[u32], caches: &mut [&mut RowCache]) -> Tensor<3> {
        assert_eq!(tokens.len(), caches.len(), "one cache per token");
        for c in caches.iter_mut() {
            c.layers.resize_with(self.layers.len(), RowLayer::default);
        }
        let positions: Vec<usize> = caches.iter().map(|c| c.offset + c.len()).collect();
        let angles = self.rope.rows(&positions);
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(
                tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                [tokens.len(), 1],
            ),
            &self.device(),
        );
        let mut x = self.embed(ids);
        for (i, block) in self.layers.iter().enumerate() {
            let mut layer: Vec<&mut RowLayer> =
                caches.iter_mut().map(|c| &mut c.layers[i]).collect();
            x = block.forward_ragged(x, &angles, &mut layer);
        }
        self.logits(self.norm.forward(x))
    }
}
