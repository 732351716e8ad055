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
    pub max_len: usize,
}

/// The inverse frequencies, after scaling, as transformers computes them.
pub fn inv_freq(cfg: &ModelConfig) -> Vec<f64> {
    let dim = cfg.head_dim;
    let base: Vec<f64> = (0..dim / 2)
        .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / dim as f64))
        .collect();
    match &cfg.rope_scaling {
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

impl Rope {
    pub fn new(cfg: &ModelConfig, max_len: usize, device: &Device) -> Self {
        let inv = inv_freq(cfg);
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
        Rope {
            cos: Tensor::from_data(TensorData::new(cos, [max_len, dim]), device),
            sin: Tensor::from_data(TensorData::new(sin, [max_len, dim]), device),
            max_len,
        }
    }

    /// Rotates `x` for positions `offset..offset+T`.
    ///
    /// # Shapes
    /// `(B, T, nh, hs)` -> `(B, T, nh, hs)`
    pub fn apply(&self, x: Tensor<4>, offset: usize) -> Tensor<4> {
        let [_, t, _, hs] = x.dims();
        let cos = self
            .cos
            .clone()
            .narrow(0, offset, t)
            .unsqueeze_dim::<3>(1)
            .unsqueeze::<4>();
        let sin = self
            .sin
            .clone()
            .narrow(0, offset, t)
            .unsqueeze_dim::<3>(1)
            .unsqueeze::<4>();
        let half = hs / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos + rotated * sin
    }
}
