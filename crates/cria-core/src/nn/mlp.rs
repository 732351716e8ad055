//! The SwiGLU feed-forward block (Shazeer 2020): `down(silu(gate(x)) * up(x))`.

use crate::config::ModelConfig;
use crate::error::Result;
use crate::nn::Linear;
use crate::params::{ParamMut, Params, join};
use crate::weights::VarBuilder;
use burn::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    pub fn new(vb: &mut VarBuilder, name: &str, cfg: &ModelConfig) -> Result<Self> {
        let (d, f, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Mlp {
            gate_proj: Linear::new(vb, &join(name, "gate_proj"), d, f, b)?,
            up_proj: Linear::new(vb, &join(name, "up_proj"), d, f, b)?,
            down_proj: Linear::new(vb, &join(name, "down_proj"), f, d, b)?,
        })
    }

    /// # Shapes
    /// `(B, T, C)` -> `(B, T, C)`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = crate::kernels::swiglu(self.gate_proj.forward(x.clone()), self.up_proj.forward(x));
        self.down_proj.forward(h)
    }
}

impl Params for Mlp {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        self.gate_proj.visit(&join(prefix, "gate_proj"), f);
        self.up_proj.visit(&join(prefix, "up_proj"), f);
        self.down_proj.visit(&join(prefix, "down_proj"), f);
    }
}
