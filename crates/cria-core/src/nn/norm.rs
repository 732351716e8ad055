//! RMSNorm (Zhang & Sennrich 2019) as LLaMA uses it: `x / sqrt(mean(x^2) + eps) * weight`.

use crate::error::Result;
use crate::params::{ParamMut, Params, join};
use crate::weights::VarBuilder;
use burn::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub weight: Tensor<1>,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(vb: &mut VarBuilder, name: &str, d: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: vb.vector(&join(name, "weight"), d, 1.0)?,
            eps,
        })
    }

    /// # Shapes
    /// `(B, T, C)` -> `(B, T, C)`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        crate::kernels::rms_norm(x, self.weight.clone(), self.eps)
    }
}

impl Params for RmsNorm {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        f(&join(prefix, "weight"), ParamMut::Vector(&mut self.weight));
    }
}
