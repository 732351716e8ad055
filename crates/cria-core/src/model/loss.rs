//! The one language-model loss every stage uses: token-level cross-entropy over positions whose
//! weight is non-zero (SFT masks prompts with weight 0; pretraining weights every position 1).

use burn::tensor::{Int, Tensor, activation::log_softmax};

/// Log-probability of each target token.
///
/// # Shapes
/// `logits`: `(B, T, V)`, `targets`: `(B, T)` -> `(B, T)`
pub fn token_logprobs(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<2> {
    let [b, t, v] = logits.dims();
    let lp = log_softmax(logits.reshape([b * t, v]), 1);
    lp.gather(1, targets.reshape([b * t, 1])).reshape([b, t])
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
    let lp = token_logprobs(logits, targets);
    match weights {
        None => lp.mean().neg(),
        Some(w) => {
            let denom = w.clone().sum().clamp_min(1.0);
            (lp * w).sum().neg() / denom
        }
    }
}
