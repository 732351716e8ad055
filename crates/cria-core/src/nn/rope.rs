//! Rotary position embeddings (Su et al. 2021) in the rotate-half layout of Hugging Face LLaMA:
//! the first and second halves of each head are paired, not adjacent elements (burn's own
//! `RotaryEncoding` is interleaved, which would not match HF checkpoints).
//! Includes linear and LLaMA-3 frequency scaling.

use crate::config::{ModelConfig, RopeScaling};
use burn::tensor::{Device, Tensor, TensorData};

#[derive(Clone, Debug)]
pub struct Rope {
    /// `(max_len, head_dim)`: cos and sin of each position's angles, halves duplicated.
    cos: Tensor<2>,
    sin: Tensor<2>,
    /// The same for sliding-window layers with a RoPE base of their own (Gemma 3's local
    /// layers, unscaled).
    local: Option<(Tensor<2>, Tensor<2>)>,
    pub max_len: usize,
}

/// The inverse frequencies, after scaling, as transformers computes them.
pub fn inv_freq(cfg: &ModelConfig) -> Vec<f64> {
    scaled(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling.as_ref())
}

fn scaled(dim: usize, theta: f64, scaling: Option<&RopeScaling>) -> Vec<f64> {
    let base: Vec<f64> = (0..dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / dim as f64))
        .collect();
    match scaling {
        None => base,
        Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor).collect(),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            let old = *original_max_position_embeddings as f64;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            base.iter()
                .map(|&f| {
                    let wavelen = std::f64::consts::TAU / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// `(max_len, dim)` cos and sin tables of the inverse frequencies `inv`.
fn tables(inv: &[f64], max_len: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let half = inv.len();
    let dim = 2 * half;
    let mut cos = vec![0f32; max_len * dim];
    let mut sin = vec![0f32; max_len * dim];
    for p in 0..max_len {
        for (i, f) in inv.iter().enumerate() {
            // transformers multiplies in f32: position * inv_freq(f32).
            let angle = (p as f32 * (*f as f32)) as f64;
            for j in [i, i + half] {
                cos[p * dim + j] = angle.cos() as f32;
                sin[p * dim + j] = angle.sin() as f32;
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [max_len, dim]), device),
        Tensor::from_data(TensorData::new(sin, [max_len, dim]), device),
    )
}

impl Rope {
    pub fn new(cfg: &ModelConfig, max_len: usize, device: &Device) -> Self {
        let (cos, sin) = tables(&inv_freq(cfg), max_len, device);
        let local = cfg
            .extras
            .local_rope_theta
            .map(|theta| tables(&scaled(cfg.head_dim, theta, None), max_len, device));
        Rope {
            cos,
            sin,
            local,
            max_len,
        }
    }

    /// As [`Rope::apply`], with the local layers' tables when `local` and the model has them.
    pub fn apply_to(&self, x: Tensor<4>, offset: usize, local: bool) -> Tensor<4> {
        match (&self.local, local) {
            (Some((cos, sin)), true) => rotate(x, offset, cos, sin),
            _ => self.apply(x, offset),
        }
    }

    /// Rotates `x` for positions `offset..offset+T`.
    ///
    /// # Shapes
    /// `(B, T, nh, hs)` -> `(B, T, nh, hs)`
    pub fn apply(&self, x: Tensor<4>, offset: usize) -> Tensor<4> {
        rotate(x, offset, &self.cos, &self.sin)
    }
}

/// The cos and sin of one position per row (each sequence of a ragged batch at its own
/// position), for the global and, when the model has one, the local RoPE base.
pub struct RowAngles {
    global: (Tensor<4>, Tensor<4>),
    local: Option<(Tensor<4>, Tensor<4>)>,
}

impl Rope {
    /// Angles of `positions[r]` for row `r`: `(n, 1, 1, D)` each, gathered once per step and
    /// shared by every layer.
    pub fn rows(&self, positions: &[usize]) -> RowAngles {
        let n = positions.len();
        let device = self.cos.device();
        let idx = Tensor::<1, burn::tensor::Int>::from_data(
            TensorData::new(positions.iter().map(|&p| p as i64).collect::<Vec<_>>(), [n]),
            &device,
        );
        let pick = |t: &Tensor<2>| {
            let d = t.dims()[1];
            t.clone().select(0, idx.clone()).reshape([n, 1, 1, d])
        };
        RowAngles {
            global: (pick(&self.cos), pick(&self.sin)),
            local: self.local.as_ref().map(|(c, s)| (pick(c), pick(s))),
        }
    }
}

impl RowAngles {
    /// Rotates `(n, 1, heads, D)` rows, each at its own position.
    pub fn apply(&self, x: Tensor<4>, local: bool) -> Tensor<4> {
        let (cos, sin) = match (&self.local, local) {
            (Some(l), true) => l,
            _ => &self.global,
        };
        let half = x.dims()[3] / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos.clone() + rotated * sin.clone()
    }
}

fn rotate(x: Tensor<4>, offset: usize, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    crate::kernels::rope(x, cos, sin, offset)
}
