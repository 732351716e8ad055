//! Multi-head attention with grouped-query heads (Ainslie et al. 2023), rotate-half RoPE,
//! optional q/k/v bias (Qwen2), an optional RMSNorm of each head's queries and keys before
//! RoPE (Qwen3) and an optional sliding window (Mistral, Phi-3).

use crate::config::ModelConfig;
use crate::error::Result;
use crate::kernels;
use crate::nn::{Linear, RmsNorm, Rope};
use crate::params::{ParamMut, Params, join};
use crate::weights::VarBuilder;
use burn::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// Qwen3's per-head RMSNorms of queries and keys (over `head_dim`), before RoPE.
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub window: Option<usize>,
    /// Queries are multiplied by this before the kernel's `head_dim^-1/2` (Gemma's
    /// `query_pre_attn_scalar`: the scores then scale by `query_pre_attn_scalar^-1/2`).
    pub query_scale: Option<f64>,
    /// A LLaMA-Adapter prompt with its gate, on the layers it adapts.
    pub prefix: Option<crate::nn::prefix::PrefixAdapter>,
}

/// Keys and values of earlier positions for one layer, `(B, S, n_kv, hs)`.
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    pub kv: Option<(Tensor<4>, Tensor<4>)>,
    /// Left-padded batches (batched generation): row `b`'s real tokens start at
    /// `starts[b]`, and no query looks at the padding before it.
    pub starts: Option<Vec<usize>>,
}

impl LayerCache {
    pub fn len(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, _)| k.dims()[1])
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Attention {
    pub fn new(
        vb: &mut VarBuilder,
        name: &str,
        cfg: &ModelConfig,
        window: Option<usize>,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        let (nh, nkv, hs) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let qk_norm = |vb: &mut VarBuilder, n: &str| -> Result<Option<RmsNorm>> {
            cfg.qk_norm
                .then(|| RmsNorm::of(vb, &join(name, n), hs, cfg))
                .transpose()
        };
        Ok(Attention {
            q_norm: qk_norm(vb, "q_norm")?,
            k_norm: qk_norm(vb, "k_norm")?,
            q_proj: Linear::new(vb, &join(name, "q_proj"), d, nh * hs, cfg.qkv_bias)?,
            k_proj: Linear::new(vb, &join(name, "k_proj"), d, nkv * hs, cfg.qkv_bias)?,
            v_proj: Linear::new(vb, &join(name, "v_proj"), d, nkv * hs, cfg.qkv_bias)?,
            o_proj: Linear::new(vb, &join(name, "o_proj"), nh * hs, d, cfg.o_bias)?,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hs,
            window,
            query_scale: cfg
                .extras
                .query_pre_attn_scalar
                .map(|s| (hs as f64 / s).sqrt()),
            prefix: None,
        })
    }

    /// Splits `(B, T, n*hs)` into heads `(B, T, n, hs)` (a view, no copy), each normalised
    /// by `norm` when the model has one.
    fn heads(&self, x: Tensor<3>, n: usize, norm: Option<&RmsNorm>) -> Tensor<4> {
        let [b, t, _] = x.dims();
        match norm {
            Some(norm) => {
                norm.forward(x.reshape([b, t * n, self.head_dim]))
                    .reshape([b, t, n, self.head_dim])
            }
            None => x.reshape([b, t, n, self.head_dim]),
        }
    }

    /// Queries, keys and values of `x` by head, normalised where the model does (before RoPE).
    ///
    /// # Shapes
    /// `x`: `(B, T, C)` -> `(B, T, H, D)`, `(B, T, KV, D)`, `(B, T, KV, D)`
    fn project(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let q = self.queries(x.clone());
        let (k, v) = self.keys_values(x);
        (q, k, v)
    }

    /// # Shapes
    /// `x`: `(B, T, C)` -> `(B, T, H, D)`
    fn queries(&self, x: Tensor<3>) -> Tensor<4> {
        self.heads(self.q_proj.forward(x), self.n_heads, self.q_norm.as_ref())
    }

    /// # Shapes
    /// `x`: `(B, T, C)` -> `(B, T, KV, D)`, `(B, T, KV, D)`
    fn keys_values(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        let k = self.heads(
            self.k_proj.forward(x.clone()),
            self.n_kv_heads,
            self.k_norm.as_ref(),
        );
        let v = self.heads(self.v_proj.forward(x), self.n_kv_heads, None);
        (k, v)
    }

    /// Queries and keys rotated for positions `offset..` (sliding-window layers take the local
    /// RoPE base when the model has one, as Gemma 3), the queries scaled where the model says.
    fn rotate(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        rope: &Rope,
        offset: usize,
    ) -> (Tensor<4>, Tensor<4>) {
        let local = self.window.is_some();
        let mut q = rope.apply_to(q, offset, local);
        if let Some(s) = self.query_scale {
            q = q * s;
        }
        (q, rope.apply_to(k, offset, local))
    }

    /// Appends `k`, `v` to `cache` (when given); returns the keys and values attended over.
    fn extend(
        cache: Option<&mut LayerCache>,
        mut k: Tensor<4>,
        mut v: Tensor<4>,
    ) -> (Tensor<4>, Tensor<4>) {
        if let Some(cache) = cache {
            if let Some((pk, pv)) = cache.kv.take() {
                k = Tensor::cat(vec![pk, k], 1);
                v = Tensor::cat(vec![pv, v], 1);
            }
            cache.kv = Some((k.clone(), v.clone()));
        }
        (k, v)
    }

    /// The attention output `(B, T, H, D)` through `o_proj`, plus the LLaMA-Adapter prompt's.
    fn output(&self, mut y: Tensor<4>, q: Tensor<4>) -> Tensor<3> {
        let [b, t, _, _] = y.dims();
        if let Some(p) = &self.prefix {
            y = y + p.forward(q, &self.k_proj, &self.v_proj, self.n_kv_heads);
        }
        self.o_proj
            .forward(y.reshape([b, t, self.n_heads * self.head_dim]))
    }

    /// Causal self-attention over this call's positions and, when given, the cache's earlier
    /// ones; the cache is extended with this call's keys and values.
    ///
    /// # Shapes
    /// `x`: `(B, T, C)` -> `(B, T, C)`
    pub fn forward(&self, x: Tensor<3>, rope: &Rope, cache: Option<&mut LayerCache>) -> Tensor<3> {
        let offset = cache.as_ref().map_or(0, |c| c.len());
        let (q, k, v) = self.project(x);
        let (q, k) = self.rotate(q, k, rope, offset);
        let starts = cache.as_ref().and_then(|c| c.starts.clone());
        let (k, v) = Self::extend(cache, k, v);
        let y = match starts {
            Some(st) => kernels::attention_padded(q.clone(), k, v, offset, self.window, &st),
            None => kernels::attention(q.clone(), k, v, offset, self.window),
        };
        self.output(y, q)
    }

    /// Causal self-attention whose output is wanted at one position per row only (a reward
    /// model's last token): keys and values from every position, queries from `at[r]` of row
    /// `r` alone, each attending over its row's positions `0..=at[r]` (what the full pass gives
    /// there, without the other positions' queries, output projection and what follows).
    ///
    /// # Shapes
    /// `x`: `(B, T, C)` -> `(B, 1, C)`
    pub fn forward_at(&self, x: Tensor<3>, rope: &Rope, at: &[usize]) -> Tensor<3> {
        let [b, _, _] = x.dims();
        let local = self.window.is_some();
        let q = self.queries(rows_at(x.clone(), at));
        let (k, v) = self.keys_values(x);
        let k = rope.apply_to(k, 0, local);
        let (mut qs, mut ys) = (Vec::with_capacity(b), Vec::with_capacity(b));
        for (r, &p) in at.iter().enumerate() {
            let mut qr = rope.apply_to(q.clone().narrow(0, r, 1), p, local);
            if let Some(s) = self.query_scale {
                qr = qr * s;
            }
            let (kr, vr) = (
                k.clone().narrow(0, r, 1).narrow(1, 0, p + 1),
                v.clone().narrow(0, r, 1).narrow(1, 0, p + 1),
            );
            ys.push(kernels::attention(qr.clone(), kr, vr, p, self.window));
            qs.push(qr);
        }
        self.output(Tensor::cat(ys, 0), Tensor::cat(qs, 0))
    }

    /// One step of `n` independent sequences at once (continuous batching): row `r` of `x`
    /// is the next token of the sequence whose keys and values for this layer are
    /// `caches[r]`, at that sequence's own position. Projections and RoPE run batched; the
    /// attention reads each row's own cache ([`crate::model::ragged::attend`]), so no row is
    /// padded to another's length and appending a token costs O(1), not a copy of the cache.
    ///
    /// # Shapes
    /// `x`: `(n, 1, C)` -> `(n, 1, C)`
    pub fn forward_ragged(
        &self,
        x: Tensor<3>,
        angles: &crate::nn::rope::RowAngles,
        caches: &mut [&mut crate::model::ragged::RowLayer],
    ) -> Tensor<3> {
        let (q, k, v) = self.project(x);
        let local = self.window.is_some();
        let mut q = angles.apply(q, local);
        if let Some(s) = self.query_scale {
            q = q * s;
        }
        let k = angles.apply(k, local);
        let device = q.device();
        let dims = q.dims();
        let y = crate::model::ragged::attend(
            &crate::params::to_vec(q.clone()),
            &crate::params::to_vec(k),
            &crate::params::to_vec(v),
            caches,
            crate::model::ragged::Heads {
                q: self.n_heads,
                kv: self.n_kv_heads,
                dim: self.head_dim,
            },
            self.window,
        );
        let y = Tensor::<4>::from_data(burn::tensor::TensorData::new(y, dims), &device);
        self.output(y, q)
    }
}

impl Params for Attention {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        self.q_proj.visit(&join(prefix, "q_proj"), f);
        self.k_proj.visit(&join(prefix, "k_proj"), f);
        self.v_proj.visit(&join(prefix, "v_proj"), f);
        self.o_proj.visit(&join(prefix, "o_proj"), f);
        if let Some(n) = &mut self.q_norm {
            n.visit(&join(prefix, "q_norm"), f);
        }
        if let Some(n) = &mut self.k_norm {
            n.visit(&join(prefix, "k_norm"), f);
        }
        if let Some(p) = &mut self.prefix {
            p.visit(prefix, f);
        }
    }
}

/// Row `r`'s position `at[r]` of `x`, for every row.
///
/// # Shapes
/// `x`: `(B, T, C)` -> `(B, 1, C)`
pub fn rows_at(x: Tensor<3>, at: &[usize]) -> Tensor<3> {
    let [b, t, c] = x.dims();
    assert_eq!(at.len(), b, "one position per row");
    let idx: Vec<i64> = at
        .iter()
        .enumerate()
        .map(|(r, &p)| (r * t + p) as i64)
        .collect();
    let idx = Tensor::<1, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(idx, [b]),
        &x.device(),
    );
    x.reshape([b * t, c]).select(0, idx).reshape([b, 1, c])
}
