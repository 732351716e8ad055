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
        let mut y = match split_columns(b * t, &x, &self.weight) {
            Some(parts) => linear_in_parts(x.clone(), &self.weight, self.bias.as_ref(), parts),
            None => {
                let y = crate::kernels::linear(x.clone(), self.weight.clone());
                match &self.bias {
                    Some(b) => y + b.clone().unsqueeze::<2>(),
                    None => y,
                }
            }
        };
        if let Some(l) = &self.lora {
            y = y + l.forward(x);
        }
        let [_, out] = y.dims();
        y.reshape([b, t, out])
    }
}

/// burn-flex runs a product below 192³ multiply-adds as one single-threaded GEMM, so decoding
/// (a few rows against each weight) left every core but one idle. For up to 64 rows outside
/// autodiff on the CPU, the output columns are cut into one block per thread, each block a
/// product of its own (the weight's column slice is a strided view, not a copy). Each output
/// is still one dot product over the same inputs; returns the number of blocks.
fn split_columns(rows: usize, x: &Tensor<2>, w: &Tensor<2>) -> Option<usize> {
    let [d_in, d_out] = w.dims();
    let threads = rayon::current_num_threads();
    let small = rows <= 64 && rows * d_in * d_out < 192 * 192 * 192;
    let parts = threads.min(d_out / 128);
    (small
        && parts > 1
        && !x.is_require_grad()
        && !w.is_require_grad()
        && crate::device::requested() == Ok("cpu"))
    .then_some(parts)
}

fn linear_in_parts(
    x: Tensor<2>,
    w: &Tensor<2>,
    bias: Option<&Tensor<1>>,
    parts: usize,
) -> Tensor<2> {
    use rayon::prelude::*;
    let [d_in, d_out] = w.dims();
    let width = d_out.div_ceil(parts);
    let blocks: Vec<Tensor<2>> = (0..parts)
        .into_par_iter()
        .map(|p| {
            let cols = p * width..((p + 1) * width).min(d_out);
            let wp = w.clone().slice([0..d_in, cols.clone()]);
            linear(x.clone(), wp, bias.map(|b| b.clone().slice([cols])))
        })
        .collect();
    Tensor::cat(blocks, 1)
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
