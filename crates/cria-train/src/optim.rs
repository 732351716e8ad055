//! AdamW (Loshchilov & Hutter 2019) with decoupled weight decay, computed the way
//! `torch.optim.AdamW` does (decay first, bias corrections folded into the step size), plus
//! global-norm gradient clipping as `torch.nn.utils.clip_grad_norm_` does it.
//!
//! The update runs on plain `f32` slices with rayon: it is a few percent of a step, and owning
//! the state as vectors makes saving and restoring it for exact resume trivial.

use rayon::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// First and second moments of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

#[derive(Debug, Clone, Default)]
pub struct AdamW {
    /// Steps taken so far (the `t` of the bias corrections).
    pub t: u64,
    /// State by parameter name; only trainable parameters have an entry.
    pub state: BTreeMap<String, Moments>,
}

impl AdamW {
    /// Updates `param` in place from `grad`; call once per parameter per step, after
    /// [`AdamW::begin_step`].
    pub fn update(
        &mut self,
        name: &str,
        param: &mut [f32],
        grad: &[f32],
        lr: f64,
        hp: &AdamWParams,
        decay: bool,
    ) {
        let st = self
            .state
            .entry(name.to_string())
            .or_insert_with(|| Moments {
                m: vec![0.0; param.len()],
                v: vec![0.0; param.len()],
            });
        let t = self.t as i32;
        let bc1 = 1.0 - hp.beta1.powi(t);
        let bc2_sqrt = (1.0 - hp.beta2.powi(t)).sqrt();
        let step_size = (lr / bc1) as f32;
        let decay_mul = if decay {
            (1.0 - lr * hp.weight_decay) as f32
        } else {
            1.0
        };
        let (b1, b2, eps) = (hp.beta1 as f32, hp.beta2 as f32, hp.eps as f32);
        let bc2_sqrt = bc2_sqrt as f32;
        param
            .par_chunks_mut(4096)
            .zip(grad.par_chunks(4096))
            .zip(st.m.par_chunks_mut(4096).zip(st.v.par_chunks_mut(4096)))
            .for_each(|((p, g), (m, v))| {
                for i in 0..p.len() {
                    p[i] *= decay_mul;
                    // torch: exp_avg.lerp_(grad, 1 - beta1) == m + (1-b1)(g - m)
                    m[i] += (1.0 - b1) * (g[i] - m[i]);
                    v[i] = v[i] * b2 + (1.0 - b2) * g[i] * g[i];
                    let denom = v[i].sqrt() / bc2_sqrt + eps;
                    p[i] -= step_size * m[i] / denom;
                }
            });
    }

    /// Advances the step counter; call once before the per-parameter updates of a step.
    pub fn begin_step(&mut self) {
        self.t += 1;
    }
}

/// The global L2 norm of all gradients. Partial sums over fixed chunks are combined in order,
/// so the result does not depend on how rayon schedules the work (exact resume needs that).
pub fn global_norm(grads: &[&[f32]]) -> f64 {
    let mut total = 0.0f64;
    for g in grads {
        let parts: Vec<f64> = g
            .par_chunks(1 << 16)
            .map(|c| c.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>())
            .collect();
        total += parts.iter().sum::<f64>();
    }
    total.sqrt()
}

/// The factor gradients are multiplied by to clip their global norm to `max_norm`.
pub fn clip_factor(norm: f64, max_norm: Option<f64>) -> f64 {
    match max_norm {
        Some(max) => (max / (norm + 1e-6)).min(1.0),
        None => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_by_lr_times_sign() {
        // With bias correction, step 1 is p -= lr * g / (|g| + eps') ~ lr * sign(g).
        let hp = AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut opt = AdamW::default();
        let mut p = vec![1.0f32, -2.0];
        opt.begin_step();
        opt.update("w", &mut p, &[0.5, -3.0], 0.1, &hp, true);
        assert!((p[0] - 0.9).abs() < 1e-6, "{p:?}");
        assert!((p[1] + 1.9).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn decoupled_decay_shrinks_without_gradient() {
        // g = 0: only decay acts, p *= 1 - lr*wd = 1 - 0.1*0.5.
        let hp = AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.5,
        };
        let mut opt = AdamW::default();
        let mut p = vec![2.0f32];
        opt.begin_step();
        opt.update("w", &mut p, &[0.0], 0.1, &hp, true);
        assert!((p[0] - 1.9).abs() < 1e-6);
    }

    #[test]
    fn clipping_matches_torch_formula() {
        // norm of [3, 4] is 5; clip to 1 gives factor 1/(5 + 1e-6).
        let n = global_norm(&[&[3.0, 4.0]]);
        assert!((n - 5.0).abs() < 1e-12);
        assert!((clip_factor(n, Some(1.0)) - 1.0 / (5.0 + 1e-6)).abs() < 1e-12);
        assert_eq!(clip_factor(n, Some(10.0)), 1.0);
        assert_eq!(clip_factor(n, None), 1.0);
    }
}
