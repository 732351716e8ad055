//! `y = x W + b`, with W stored `[in, out]` (Hugging Face's `nn.Linear` stores `[out, in]`;
//! the transpose happens once, at load and save).

use crate::error::Result;
use crate::params::{ParamMut, Params, join};
use crate::weights::VarBuilder;
use burn::tensor::{Tensor, module::linear};

#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor<2>,
    pub bias: Option<Tensor<1>>,
    /// A LoRA update on top of the (then frozen) weight.
    pub lora: Option<crate::nn::lora::Lora>,
}

impl Linear {
    pub fn new(
        vb: &mut VarBuilder,
        name: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = vb.matrix(&join(name, "weight"), d_out, d_in, true)?;
        let bias = if bias {
            Some(vb.vector(&join(name, "bias"), d_out, 0.0)?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            lora: None,
        })
    }

    /// # Shapes
    /// `(B, T, in)` -> `(B, T, out)`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        // Folding (B, T) into rows makes forward and both backward products single 2-D GEMMs;
        // a broadcast batched matmul would compute the weight gradient per batch and sum.
        let [b, t, c] = x.dims();
        let x = x.reshape([b * t, c]);
        let mut y = linear(x.clone(), self.weight.clone(), self.bias.clone());
        if let Some(l) = &self.lora {
            y = y + l.forward(x);
        }
        let [_, out] = y.dims();
        y.reshape([b, t, out])
    }
}

impl Params for Linear {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        f(
            &join(prefix, "weight"),
            ParamMut::Matrix {
                t: &mut self.weight,
                transposed: true,
            },
        );
        if let Some(b) = &mut self.bias {
            f(&join(prefix, "bias"), ParamMut::Vector(b));
        }
        if let Some(l) = &mut self.lora {
            l.visit(prefix, f);
        }
    }
}
