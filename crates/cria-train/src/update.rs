//! The one parameter update of every stage: gradients collected from backward passes (summed
//! over micro-batches), clipped to a global norm as `torch.nn.utils.clip_grad_norm_` does, and
//! applied by AdamW. The training loop and PPO (policy and value model) both step through
//! [`Optimizer::step`].

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::method::Trainable;
use crate::optim::{AdamW, AdamWParams, clip_factor, global_norm};
use burn::tensor::Gradients;
use cria_core::params::{ParamMut, Params, to_vec};
use cria_core::{Device, Llama, Tensor, TensorData};
use std::collections::BTreeMap;

/// Gradients by parameter name (trainable parameters only), summed over backward passes.
#[derive(Debug, Default)]
pub struct Grads(BTreeMap<String, Vec<f32>>);

impl Grads {
    /// Adds the gradient of every parameter of `model` that `trainable` accepts; a trainable
    /// parameter that received none is an error (it would silently never train). Each
    /// gradient is moved out of `grads`, so its buffer becomes the vector without a copy.
    pub fn add(
        &mut self,
        model: &Llama,
        mut grads: Gradients,
        trainable: &Trainable,
    ) -> Result<()> {
        let mut missing = None;
        let mut m = model.clone();
        m.visit("", &mut |name, p| {
            if !trainable(name) {
                return;
            }
            let grad = match &p {
                ParamMut::Vector(t) => t.grad_remove(&mut grads).map(to_vec),
                ParamMut::Matrix { t, .. } => t.grad_remove(&mut grads).map(to_vec),
            };
            match grad {
                Some(v) => match self.0.get_mut(name) {
                    Some(acc) => acc.iter_mut().zip(&v).for_each(|(a, b)| *a += b),
                    None => {
                        self.0.insert(name.to_string(), v);
                    }
                },
                None => missing = Some(name.to_string()),
            }
        });
        match missing {
            Some(name) => Err(TrainError::Invalid(format!(
                "parameter `{name}` received no gradient"
            ))),
            None => Ok(()),
        }
    }

    /// Sums the gradients over every rank of `world` (one message for all parameters: many
    /// small ones would pay the latency once per tensor).
    pub fn all_reduce(&mut self, world: &dyn crate::collective::Collective) {
        if world.size() == 1 {
            return;
        }
        let mut flat: Vec<f32> = self.0.values().flatten().copied().collect();
        world.all_reduce_f32(&mut flat);
        let mut at = 0;
        for g in self.0.values_mut() {
            let n = g.len();
            g.copy_from_slice(&flat[at..at + n]);
            at += n;
        }
    }

    /// The global L2 norm of all gradients.
    pub fn norm(&self) -> f64 {
        global_norm(&self.0.values().map(|g| g.as_slice()).collect::<Vec<_>>())
    }
}

/// The gradient norm was not finite; nothing was changed.
#[derive(Debug, Clone, Copy)]
pub struct NonFiniteNorm(pub f64);

/// AdamW with its hyper-parameters and the clipping bound.
pub struct Optimizer {
    pub adamw: AdamW,
    hp: AdamWParams,
    clip: Option<f64>,
}

impl Optimizer {
    /// The optimizer `cfg` describes, continuing from `adamw`'s state (fresh or resumed).
    pub fn new(cfg: &TrainConfig, adamw: AdamW) -> Self {
        Optimizer {
            adamw,
            hp: AdamWParams {
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: cfg.eps,
                weight_decay: cfg.weight_decay,
            },
            clip: cfg.grad_clip,
        }
    }

    /// Clips `grads` to the global norm and takes one AdamW step at `lr` (matrices decay,
    /// vectors do not); returns the norm before clipping. Each parameter becomes a fresh leaf
    /// that requires gradients.
    pub fn step(
        &mut self,
        model: &mut Llama,
        mut grads: Grads,
        lr: f64,
    ) -> std::result::Result<f64, NonFiniteNorm> {
        let norm = grads.norm();
        if !norm.is_finite() {
            return Err(NonFiniteNorm(norm));
        }
        let factor = clip_factor(norm, self.clip) as f32;
        let device = model.device();
        let (opt, hp) = (&mut self.adamw, &self.hp);
        opt.begin_step();
        model.visit("", &mut |name, p| {
            let Some(g) = grads.0.get_mut(name) else {
                return; // frozen
            };
            if factor != 1.0 {
                g.iter_mut().for_each(|x| *x *= factor);
            }
            // The values are moved out of the model and back (no copy either way when nothing
            // else holds the tensor, as in a training step: the graph is gone after backward).
            match p {
                ParamMut::Vector(t) => {
                    let mut values = to_vec(std::mem::replace(t, Tensor::zeros([0], &device)));
                    opt.update(name, &mut values, g, lr, hp, false);
                    let n = values.len();
                    *t = Tensor::from_data(TensorData::new(values, [n]), &device).require_grad();
                }
                ParamMut::Matrix { t, .. } => {
                    let dims = t.dims();
                    let mut values = to_vec(std::mem::replace(t, Tensor::zeros([0, 0], &device)));
                    opt.update(name, &mut values, g, lr, hp, true);
                    *t = Tensor::from_data(TensorData::new(values, dims), &device).require_grad();
                }
            }
        });
        Ok(norm)
    }
}

/// Replaces a parameter with new values (no gradient tracking).
pub fn set_values(p: ParamMut<'_>, values: Vec<f32>, device: &Device) {
    match p {
        ParamMut::Vector(t) => {
            let n = values.len();
            *t = Tensor::from_data(TensorData::new(values, [n]), device);
        }
        ParamMut::Matrix { t, .. } => {
            let dims = t.dims();
            *t = Tensor::from_data(TensorData::new(values, dims), device);
        }
    }
}
