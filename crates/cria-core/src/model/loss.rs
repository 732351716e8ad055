//! The one language-model loss every stage uses: token-level cross-entropy over positions whose
//! weight is non-zero (SFT masks prompts with weight 0; pretraining weights every position 1).
//! Computed by the fused kernel in [`crate::kernels`].

use crate::kernels::cross_entropy_rows;
use burn::tensor::{Int, Tensor};

/// Log-probability of each target token.
///
/// # Shapes
/// `logits`: `(B, T, V)`, `targets`: `(B, T)` -> `(B, T)`
pub fn token_logprobs(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<2> {
    let [b, t, v] = logits.dims();
    cross_entropy_rows(logits.reshape([b * t, v]), targets.reshape([b * t]))
        .reshape([b, t])
        .neg()
}

/// Mean negative log-likelihood over positions with non-zero `weights`.
///
/// # Shapes
/// `logits`: `(B, T, V)`, `targets`: `(B, T)`, `weights`: `(B, T)` -> `(1,)`
pub fn cross_entropy(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    weights: Option<Tensor<2>>,
) -> Tensor<1> {
    let nll = token_logprobs(logits, targets).neg();
    match weights {
        None => nll.mean(),
        Some(w) => {
            let denom = w.clone().sum().clamp_min(1.0);
            (nll * w).sum() / denom
        }
    }
}
