//! Inference on a GGUF file's own weights: q8_0 and q4_0 matrices are never dequantized —
//! repacked at load into a copy of the same size for the SIMD kernels ([`crate::packed`], the
//! mapped pages handed back) or read in place from the memory-mapped file on other CPUs — so
//! resident memory is about the file plus the KV cache. f32 matrices are repacked into panels
//! of sixteen rows ([`crate::panels`]) where those kernels run, else read in place; f16/bf16
//! ones are widened to f32 at load (and put in panels the same way). Architectures: `llama`
//! (pairwise RoPE, as llama.cpp's files store q/k) and `qwen2` (rotate-half RoPE, q/k/v
//! biases).

use crate::error::{GgufError, Result};
use crate::format::{GgufFile, Value};
use crate::kernels::{attention_scores, attention_values};
use crate::matrix::{Act, Mat, load_mat, slab_for};
use crate::quant::GgmlType;
use half::f16;
use rayon::prelude::*;
use std::sync::Arc;

/// The shape of the model, from the file's metadata.
#[derive(Debug, Clone)]
pub struct QConfig {
    pub arch: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub context: usize,
    pub eps: f32,
    pub rope_theta: f32,
    /// Positions are divided by this (linear RoPE scaling).
    pub rope_scale: f32,
    /// Interleaved pairs (2j, 2j+1) (`llama`) or halves (j, j + hd/2) (`qwen2`).
    pub rope_pairs: bool,
}

impl QConfig {
    /// The model's shape from `f`'s metadata, refusing what cria cannot run.
    fn read(f: &GgufFile) -> Result<QConfig> {
        let path = &f.path;
        let arch = f
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| GgufError::model(path, "metadata general.architecture is missing"))?
            .to_string();
        let rope_pairs = match arch.as_str() {
            "llama" => true,
            "qwen2" => false,
            other => {
                return Err(GgufError::model(
                    path,
                    format!("architecture {other:?}: cria runs llama and qwen2 GGUF files"),
                ));
            }
        };
        let k = |s: &str| format!("{arch}.{s}");
        let n_embd = meta_u(f, &k("embedding_length"))?;
        let n_head = meta_u(f, &k("attention.head_count"))?;
        let head_dim = f
            .get(&k("attention.key_length"))
            .and_then(Value::as_u64)
            .map_or(n_embd / n_head.max(1), |v| v as usize);
        let scaling = f.get(&k("rope.scaling.type")).and_then(Value::as_str);
        let rope_scale = match scaling {
            None | Some("none") => 1.0,
            Some("linear") => meta_f(f, &k("rope.scaling.factor")).unwrap_or(1.0),
            Some(other) => {
                return Err(GgufError::model(
                    path,
                    format!(
                        "{}: rope scaling {other:?} is not supported",
                        k("rope.scaling.type")
                    ),
                ));
            }
        };
        if f.tensor("rope_freqs.weight").is_some() {
            return Err(GgufError::model(
                path,
                "per-frequency RoPE factors (rope_freqs, LLaMA 3.1) are not supported yet",
            ));
        }
        let embd_t = f
            .tensor("token_embd.weight")
            .ok_or_else(|| GgufError::model(path, "tensor token_embd.weight is missing"))?;
        let vocab = embd_t.dims.get(1).copied().unwrap_or(0) as usize;
        let cfg = QConfig {
            n_layer: meta_u(f, &k("block_count"))?,
            n_ff: meta_u(f, &k("feed_forward_length"))?,
            n_kv: f
                .get(&k("attention.head_count_kv"))
                .and_then(Value::as_u64)
                .map_or(n_head, |v| v as usize),
            context: meta_u(f, &k("context_length"))?,
            eps: meta_f(f, &k("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
            rope_theta: meta_f(f, &k("rope.freq_base")).unwrap_or(10000.0),
            rope_scale,
            rope_pairs,
            arch,
            n_embd,
            n_head,
            head_dim,
            vocab,
        };
        if !head_dim.is_multiple_of(2) || !n_head.is_multiple_of(cfg.n_kv) {
            return Err(GgufError::model(
                path,
                format!(
                    "{n_head} heads of {head_dim} over {} key/value heads",
                    cfg.n_kv
                ),
            ));
        }
        Ok(cfg)
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Mat,
    wk: Mat,
    wv: Mat,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    wo: Mat,
    ffn_norm: Vec<f32>,
    gate: Mat,
    up: Mat,
    down: Mat,
}

/// A GGUF model ready to decode.
pub struct QModel {
    pub cfg: QConfig,
    pub file: Arc<GgufFile>,
    embd: Mat,
    layers: Vec<Layer>,
    out_norm: Vec<f32>,
    /// `None`: tied to the token embeddings.
    output: Option<Mat>,
    inv_freq: Vec<f32>,
}

/// Keys and values of the positions read so far, per layer, `[pos][n_kv·hd]` flattened, in
/// f16 as llama.cpp keeps them (half the memory of f32; queries meet keys in f16 too).
#[derive(Default, Clone)]
pub struct QCache {
    k: Vec<Vec<f16>>,
    v: Vec<Vec<f16>>,
    len: usize,
}

impl QCache {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// A copy holding the first `n` positions (a shared prompt prefix, to continue from).
    pub fn prefix(&self, n: usize) -> QCache {
        let n = n.min(self.len);
        let cut = |x: &Vec<f16>| x[..x.len() / self.len.max(1) * n].to_vec();
        QCache {
            k: self.k.iter().map(cut).collect(),
            v: self.v.iter().map(cut).collect(),
            len: n,
        }
    }
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|x| x.capacity() * 2).sum()
    }
}

fn meta_u(f: &GgufFile, key: &str) -> Result<usize> {
    f.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| {
            GgufError::model(
                &f.path,
                format!("metadata {key} is missing or not an integer"),
            )
        })
}

fn meta_f(f: &GgufFile, key: &str) -> Option<f32> {
    f.get(key).and_then(Value::as_f64).map(|v| v as f32)
}

impl QModel {
    /// Maps `path` and checks every tensor the architecture needs is there, with its shape.
    pub fn open(path: &std::path::Path) -> Result<QModel> {
        let f = Arc::new(GgufFile::open(path)?);
        let cfg = QConfig::read(&f)?;
        let (d, hd) = (cfg.n_embd, cfg.head_dim);
        let slab = slab_for(&f);
        let mat = |name: &str, rows: usize, cols: usize| -> Result<Mat> {
            load_mat(&f, name, rows, cols, Some(&slab))
        };
        let vec = |name: &str, n: usize| -> Result<Vec<f32>> {
            let m = load_mat(&f, name, 1, n, None)?;
            Ok(m.row(&f, 0))
        };
        let opt_vec = |name: &str, n: usize| -> Result<Option<Vec<f32>>> {
            if f.tensor(name).is_some() {
                vec(name, n).map(Some)
            } else {
                Ok(None)
            }
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let b = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: vec(&b("attn_norm.weight"), d)?,
                wq: mat(&b("attn_q.weight"), cfg.n_head * hd, d)?,
                wk: mat(&b("attn_k.weight"), cfg.n_kv * hd, d)?,
                wv: mat(&b("attn_v.weight"), cfg.n_kv * hd, d)?,
                bq: opt_vec(&b("attn_q.bias"), cfg.n_head * hd)?,
                bk: opt_vec(&b("attn_k.bias"), cfg.n_kv * hd)?,
                bv: opt_vec(&b("attn_v.bias"), cfg.n_kv * hd)?,
                wo: mat(&b("attn_output.weight"), d, cfg.n_head * hd)?,
                ffn_norm: vec(&b("ffn_norm.weight"), d)?,
                gate: mat(&b("ffn_gate.weight"), cfg.n_ff, d)?,
                up: mat(&b("ffn_up.weight"), cfg.n_ff, d)?,
                down: mat(&b("ffn_down.weight"), d, cfg.n_ff)?,
            });
        }
        // The embeddings are read a row at a time, from the file; packed only as the tied head.
        let tied = f.tensor("output.weight").is_none();
        let embd = load_mat(&f, "token_embd.weight", cfg.vocab, d, tied.then_some(&slab))?;
        let output = if !tied {
            Some(mat("output.weight", cfg.vocab, d)?)
        } else {
            None
        };
        let out_norm = vec("output_norm.weight", d)?;
        let inv_freq = (0..hd / 2)
            .map(|j| 1.0 / (cfg.rope_theta as f64).powf(2.0 * j as f64 / hd as f64) as f32)
            .collect();
        Ok(QModel {
            cfg,
            file: f,
            embd,
            layers,
            out_norm,
            output,
            inv_freq,
        })
    }

    /// The file's GGUF type of its largest matrices, for messages.
    pub fn weight_type(&self) -> GgmlType {
        self.layers.first().map_or(self.embd.ty(), |l| l.gate.ty())
    }

    pub fn new_cache(&self) -> QCache {
        QCache {
            k: vec![Vec::new(); self.cfg.n_layer],
            v: vec![Vec::new(); self.cfg.n_layer],
            len: 0,
        }
    }

    /// Reads `ids` after the cache and returns the logits after the last one.
    pub fn forward(&self, ids: &[u32], cache: &mut QCache) -> Vec<f32> {
        self.forward_rows(&mut [(ids, cache)], false)
            .pop()
            .expect("one sequence")
    }

    /// One pass over several sequences at once (continuous batching): each `(ids, cache)`
    /// reads its ids after its own cache, at its own positions. Every projection runs once
    /// for all their rows, so the weights stream from memory once per pass; attention reads
    /// each row's own cache. Returns the logits after each sequence's last id or, with `all`,
    /// after every id (sequence by sequence). A row's logits do not depend on the others in
    /// the pass: every kernel adds a row's products in the same order.
    pub fn forward_rows(&self, seqs: &mut [(&[u32], &mut QCache)], all: bool) -> Vec<Vec<f32>> {
        assert!(
            seqs.iter().all(|(ids, _)| !ids.is_empty()),
            "every sequence in a pass reads at least one id"
        );
        let c = &self.cfg;
        // Row r is position pos[r] of sequence seq[r].
        let (mut seq, mut pos) = (vec![], vec![]);
        for (si, (ids, cache)) in seqs.iter().enumerate() {
            seq.extend(std::iter::repeat_n(si, ids.len()));
            pos.extend(cache.len..cache.len + ids.len());
        }
        let t = seq.len();
        let mut x: Vec<Vec<f32>> = seqs
            .iter()
            .flat_map(|(ids, _)| ids.iter())
            .map(|&id| self.embd.row(&self.file, id as usize))
            .collect();
        // Each row's RoPE rotation, once for every layer and head.
        let rot: Vec<Vec<(f32, f32)>> = pos
            .iter()
            .map(|&p| {
                let p = p as f32 / c.rope_scale;
                self.inv_freq.iter().map(|&f| (p * f).sin_cos()).collect()
            })
            .collect();
        for (li, l) in self.layers.iter().enumerate() {
            let o = self.attention(li, l, &x, seqs, &seq, &pos, &rot);
            add_rows(&mut x, &o);
            let f = self.ffn(l, &x);
            add_rows(&mut x, &f);
        }
        for (ids, cache) in seqs.iter_mut() {
            cache.len += ids.len();
        }
        // The rows whose logits are asked for: every row, or each sequence's last.
        let out: Vec<Vec<f32>> = (0..t)
            .filter(|&i| all || i + 1 == t || seq[i + 1] != seq[i])
            .map(|i| rms_norm(&x[i], &self.out_norm, c.eps))
            .collect();
        let head = self.output.as_ref().unwrap_or(&self.embd);
        head.matmul(&self.file, &Act::new(&out, &[head]))
    }

    /// Layer `li`'s attention for rows `x` (row `i` is position `pos[i]` of sequence
    /// `seq[i]`, rotated by `rot[i]`): their keys and values appended to their sequences'
    /// caches, then each row's heads against its own cache, through the output projection.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        li: usize,
        l: &Layer,
        x: &[Vec<f32>],
        seqs: &mut [(&[u32], &mut QCache)],
        seq: &[usize],
        pos: &[usize],
        rot: &[Vec<(f32, f32)>],
    ) -> Vec<Vec<f32>> {
        let c = &self.cfg;
        let hd = c.head_dim;
        let xn = norm_rows(x, &l.attn_norm, c.eps);
        let a = Act::new(&xn, &[&l.wq, &l.wk, &l.wv]);
        let mut q = l.wq.matmul(&self.file, &a);
        let mut k = l.wk.matmul(&self.file, &a);
        let mut v = l.wv.matmul(&self.file, &a);
        let each = |((q, k), (v, r)): RowQkv<'_>| {
            add_bias(q, &l.bq);
            add_bias(k, &l.bk);
            add_bias(v, &l.bv);
            self.rope(q, r);
            self.rope(k, r);
            // As llama.cpp: keys and values cached in f16, queries meeting them in f16.
            to_f16(q);
        };
        if x.len() > 1 {
            (q.par_iter_mut().zip(k.par_iter_mut()))
                .zip(v.par_iter_mut().zip(rot))
                .for_each(each);
        } else {
            (q.iter_mut().zip(k.iter_mut()))
                .zip(v.iter_mut().zip(rot))
                .for_each(each);
        }
        for i in 0..x.len() {
            let cache = &mut seqs[seq[i]].1;
            cache.k[li].extend(k[i].iter().map(|&x| f16::from_f32(x)));
            cache.v[li].extend(v[i].iter().map(|&x| f16::from_f32(x)));
        }
        let kv: Vec<(&[f16], &[f16])> = seqs
            .iter()
            .map(|(_, cache)| (&cache.k[li][..], &cache.v[li][..]))
            .collect();
        let group = c.n_head / c.n_kv;
        let scale = 1.0 / (hd as f32).sqrt();
        // One task per (row, key/value head): its group of query heads.
        let parts: Vec<Vec<f32>> = (0..x.len() * c.n_kv)
            .into_par_iter()
            .map(|job| {
                let (i, kvh) = (job / c.n_kv, job % c.n_kv);
                let n = pos[i] + 1;
                let mut out = vec![0.0f32; group * hd];
                let mut s = vec![0.0f32; n * group];
                let qg = &q[i][kvh * group * hd..(kvh + 1) * group * hd];
                let stride = c.n_kv * hd;
                let (kc, vc) = kv[seq[i]];
                let (kh, vh) = (&kc[kvh * hd..], &vc[kvh * hd..]);
                attention_scores(qg, kh, stride, n, hd, scale, &mut s);
                for g in 0..group {
                    softmax(&mut s[g * n..(g + 1) * n]);
                }
                attention_values(&s, vh, stride, n, hd, &mut out);
                out
            })
            .collect();
        let attn: Vec<Vec<f32>> = parts.chunks(c.n_kv).map(|heads| heads.concat()).collect();
        l.wo.matmul(&self.file, &Act::new(&attn, &[&l.wo]))
    }

    /// The SwiGLU feed-forward of rows `x`.
    fn ffn(&self, l: &Layer, x: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let xn = norm_rows(x, &l.ffn_norm, self.cfg.eps);
        let a = Act::new(&xn, &[&l.gate, &l.up]);
        let g = l.gate.matmul(&self.file, &a);
        let u = l.up.matmul(&self.file, &a);
        // SiLU(g)·u, with the vectorised exp (e^-g, shifted by 0).
        let hmid: Vec<Vec<f32>> = g
            .into_par_iter()
            .zip(&u)
            .map(|(g, u)| {
                let mut e: Vec<f32> = g.iter().map(|v| -v).collect();
                cria_core::kernels::exp_shifted(&mut e, 0.0);
                g.iter()
                    .zip(e)
                    .zip(u)
                    .map(|((&g, e), &u)| g / (1.0 + e) * u)
                    .collect()
            })
            .collect();
        l.down.matmul(&self.file, &Act::new(&hmid, &[&l.down]))
    }

    /// Rotates every head of `x` by `rot` (each frequency's sine and cosine at the row's
    /// position).
    fn rope(&self, x: &mut [f32], rot: &[(f32, f32)]) {
        let hd = self.cfg.head_dim;
        for head in x.chunks_exact_mut(hd) {
            for (j, &(s, c)) in rot.iter().enumerate() {
                let (a, b) = if self.cfg.rope_pairs {
                    (2 * j, 2 * j + 1)
                } else {
                    (j, j + hd / 2)
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c - x1 * s;
                head[b] = x0 * s + x1 * c;
            }
        }
    }
}

/// Softmax in place (the vectorised `exp`, as ggml's softmax is).
fn softmax(s: &mut [f32]) {
    let m = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let z = cria_core::kernels::exp_shifted(s, m);
    s.iter_mut().for_each(|sp| *sp /= z);
}

/// One row's query, key and value, and its rotation.
type RowQkv<'a> = (
    (&'a mut Vec<f32>, &'a mut Vec<f32>),
    (&'a mut Vec<f32>, &'a Vec<(f32, f32)>),
);

/// [`rms_norm`] of every row, side by side when there are several.
fn norm_rows(x: &[Vec<f32>], w: &[f32], eps: f32) -> Vec<Vec<f32>> {
    if x.len() > 1 {
        x.par_iter().map(|r| rms_norm(r, w, eps)).collect()
    } else {
        x.iter().map(|r| rms_norm(r, w, eps)).collect()
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, w)| v * r * w).collect()
}

/// Rounds to the nearest f16 value (kept in f32).
fn to_f16(x: &mut [f32]) {
    x.iter_mut()
        .for_each(|v| *v = half::f16::from_f32(*v).to_f32());
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

fn add_rows(x: &mut [Vec<f32>], y: &[Vec<f32>]) {
    for (xi, yi) in x.iter_mut().zip(y) {
        add(xi, yi);
    }
}

fn add_bias(x: &mut [f32], b: &Option<Vec<f32>>) {
    if let Some(b) = b {
        add(x, b);
    }
}

impl cria_core::generate::NextLogits for QModel {
    type Cache = QCache;
    fn new_cache(&self) -> QCache {
        QModel::new_cache(self)
    }
    fn max_len(&self) -> usize {
        self.cfg.context
    }
    fn next_logits(&self, input: &[u32], cache: &mut QCache) -> Vec<f32> {
        self.forward(input, cache)
    }
}

/// Perplexity on `ids` in windows of `seq_len + 1` tokens (each window read from an empty
/// cache), as `cria eval --corpus` computes it for checkpoints; `None` when `ids` holds less
/// than one window.
pub fn perplexity(m: &QModel, ids: &[u32], seq_len: usize) -> Option<f64> {
    let windows: Vec<&[u32]> = ids.chunks_exact(seq_len + 1).collect();
    if windows.is_empty() {
        return None;
    }
    let mut nll = 0.0f64;
    for w in &windows {
        let mut cache = m.new_cache();
        for j in 0..seq_len {
            let logits = m.forward(&w[j..j + 1], &mut cache);
            let mx = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let lse = mx as f64
                + logits
                    .iter()
                    .map(|&x| ((x - mx) as f64).exp())
                    .sum::<f64>()
                    .ln();
            nll += lse - logits[w[j + 1] as usize] as f64;
        }
    }
    Some((nll / (windows.len() * seq_len) as f64).exp())
}
