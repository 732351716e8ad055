//! Fused CPU kernels with their own backward passes, plugged into burn through its backend
//! extension API. Composed burn ops allocate and traverse a tensor per step (log-softmax over
//! the vocabulary, the attention score matrix, SwiGLU's three products); these do each in one
//! or two parallel passes over plain slices.
//!
//! Each kernel has a plain reference made of ordinary tensor ops beside it (`*_reference`), and
//! the tests hold the two equal in value and gradient.

mod ce;
mod util;

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{Int, Tensor};

pub use ce::cross_entropy_rows_reference;

#[backend_extension(Flex, Autodiff)]
pub trait Kernels: Backend {
    /// Negative log-likelihood of `targets` under `logits`, per row.
    fn cross_entropy_rows(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self>;
}

/// Per-row cross-entropy: `logsumexp(logits[i]) - logits[i, targets[i]]`.
///
/// # Shapes
/// `logits`: `(N, V)`, `targets`: `(N,)` -> `(N,)`
pub fn cross_entropy_rows(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as Kernels>::cross_entropy_rows(
        logits.into_dispatch(),
        targets.into_dispatch(),
    ))
}

impl Kernels for Flex {
    fn cross_entropy_rows(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        ce::forward(&logits, &targets).0
    }
}
