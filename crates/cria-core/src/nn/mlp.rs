//! The gated feed-forward block (Shazeer 2020): SwiGLU `down(silu(gate(x)) * up(x))`, or GeGLU
//! with GELU's tanh approximation in place of SiLU (Gemma).

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
    /// GELU (tanh approximation) gate instead of SiLU.
    pub gelu: bool,
}

impl Mlp {
    pub fn new(vb: &mut VarBuilder, name: &str, cfg: &ModelConfig) -> Result<Self> {
        let (d, f, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Mlp {
            gate_proj: Linear::new(vb, &join(name, "gate_proj"), d, f, b)?,
            up_proj: Linear::new(vb, &join(name, "up_proj"), d, f, b)?,
            down_proj: Linear::new(vb, &join(name, "down_proj"), f, d, b)?,
            gelu: cfg.extras.gelu_gate,
        })
    }

    /// # Shapes
    /// `(B, T, C)` -> `(B, T, C)`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (gate, up) = (self.gate_proj.forward(x.clone()), self.up_proj.forward(x));
        let h = if self.gelu {
            gelu_tanh(gate) * up
        } else {
            crate::kernels::swiglu(gate, up)
        };
        self.down_proj.forward(h)
    }
}

/// GELU's tanh approximation, as PyTorch's `gelu(approximate="tanh")`:
/// `x/2 · (1 + tanh(sqrt(2/π) · (x + 0.044715 x³)))`.
pub fn gelu_tanh(x: Tensor<3>) -> Tensor<3> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let inner = (x.clone() + x.clone().powi_scalar(3) * 0.044715) * c;
    x * (inner.tanh() + 1.0) * 0.5
}

impl Params for Mlp {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        self.gate_proj.visit(&join(prefix, "gate_proj"), f);
        self.up_proj.visit(&join(prefix, "up_proj"), f);
        self.down_proj.visit(&join(prefix, "down_proj"), f);
    }
}
