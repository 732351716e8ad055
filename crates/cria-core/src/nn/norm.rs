//! RMSNorm (Zhang & Sennrich 2019) as LLaMA uses it: `x / sqrt(mean(x^2) + eps) * weight`,
//! or as Gemma does, with the weight stored as an offset from one: `… * (1 + weight)`.

use crate::error::Result;
use crate::params::{ParamMut, Params, join};
use crate::weights::VarBuilder;
use burn::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub weight: Tensor<1>,
    pub eps: f64,
    /// The scale is `1 + weight` (Gemma), the weight starting at zero.
    pub plus_one: bool,
}

impl RmsNorm {
    pub fn new(vb: &mut VarBuilder, name: &str, d: usize, eps: f64) -> Result<Self> {
        Self::with(vb, name, d, eps, false)
    }

    /// A norm of the model's kind (its eps, and Gemma's `1 + weight` when the config says so).
    pub fn of(vb: &mut VarBuilder, name: &str, d: usize, cfg: &crate::ModelConfig) -> Result<Self> {
        Self::with(vb, name, d, cfg.rms_norm_eps, cfg.extras.norm_plus_one)
    }

    fn with(vb: &mut VarBuilder, name: &str, d: usize, eps: f64, plus_one: bool) -> Result<Self> {
        let fill = if plus_one { 0.0 } else { 1.0 };
        Ok(RmsNorm {
            weight: vb.vector(&join(name, "weight"), d, fill)?,
            eps,
            plus_one,
        })
    }

    /// # Shapes
    /// `(B, T, C)` -> `(B, T, C)`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let w = if self.plus_one {
            self.weight.clone() + 1.0
        } else {
            self.weight.clone()
        };
        crate::kernels::rms_norm(x, w, self.eps)
    }
}

impl Params for RmsNorm {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        f(&join(prefix, "weight"), ParamMut::Vector(&mut self.weight));
    }
}
