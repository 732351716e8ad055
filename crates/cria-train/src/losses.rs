//! The preference losses, as functions of tensors (held against PyTorch in
//! `tests/preference_losses.rs`).

use crate::trainer::Metrics;
use burn::tensor::activation::log_sigmoid;
use cria_core::{Int, Tensor, TensorData};

fn values(t: &Tensor<1>) -> Vec<f32> {
    t.clone()
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 tensor")
}

fn index(v: Vec<i64>, device: &cria_core::Device) -> Tensor<1, Int> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

/// InstructGPT's reward-model loss: for each group (one prompt's K responses, best first),
/// `-1/C(K,2) * Σ_{better, worse} log σ(r_better - r_worse)` over all C(K,2) ordered pairs,
/// averaged over groups. Pairs are the K = 2 case. Also returns the fraction of pairs ranked
/// correctly (`accuracy`) and the mean reward margin.
///
/// # Shapes
/// `rewards`: `(Σ K,)`, rows grouped as `groups` says -> `(1,)`
pub fn ranking_loss(rewards: Tensor<1>, groups: &[usize]) -> (Tensor<1>, Metrics) {
    let (mut better, mut worse, mut weight) = (vec![], vec![], vec![]);
    let mut start = 0;
    for &k in groups {
        let pairs = (k * (k - 1) / 2) as f32;
        for i in 0..k {
            for j in i + 1..k {
                better.push((start + i) as i64);
                worse.push((start + j) as i64);
                weight.push(1.0 / (pairs * groups.len() as f32));
            }
        }
        start += k;
    }
    assert_eq!(start, rewards.dims()[0], "groups cover every reward");
    let device = rewards.device();
    let r = values(&rewards);
    let n = better.len();
    let (mut right, mut margin) = (0usize, 0.0f64);
    for (b, w) in better.iter().zip(&worse) {
        let d = (r[*b as usize] - r[*w as usize]) as f64;
        right += usize::from(d > 0.0);
        margin += d;
    }
    let diff = rewards.clone().select(0, index(better, &device))
        - rewards.select(0, index(worse, &device));
    let w = Tensor::<1>::from_data(TensorData::new(weight, [n]), &device);
    let loss = (log_sigmoid(diff) * w).sum().neg();
    let metrics = Metrics::from([
        ("accuracy".to_string(), right as f64 / n as f64),
        ("margin".to_string(), margin / n as f64),
    ]);
    (loss, metrics)
}

/// DPO's sigmoid loss (Rafailov et al. 2023): with implicit rewards
/// `r = β (log π(y|x) - log π_ref(y|x))`, `-mean log σ(r_chosen - r_rejected)`. Rows alternate
/// chosen, rejected. Logs the mean implicit rewards, their margin and how often chosen wins.
///
/// # Shapes
/// `policy_logps`: `(2P,)`, `ref_logps`: `2P` values -> `(1,)`
pub fn dpo_loss(policy_logps: Tensor<1>, ref_logps: &[f32], beta: f64) -> (Tensor<1>, Metrics) {
    let n = policy_logps.dims()[0];
    assert!(
        n.is_multiple_of(2) && ref_logps.len() == n,
        "chosen/rejected rows in pairs"
    );
    let device = policy_logps.device();
    let reference = Tensor::<1>::from_data(TensorData::new(ref_logps.to_vec(), [n]), &device);
    let rewards = (policy_logps - reference) * beta;
    let chosen = rewards
        .clone()
        .select(0, index((0..n as i64).step_by(2).collect(), &device));
    let rejected = rewards.select(0, index((1..n as i64).step_by(2).collect(), &device));
    let (c, r) = (values(&chosen), values(&rejected));
    let p = (n / 2) as f64;
    let mean = |v: &[f32]| v.iter().map(|x| *x as f64).sum::<f64>() / p;
    let metrics = Metrics::from([
        ("reward_chosen".to_string(), mean(&c)),
        ("reward_rejected".to_string(), mean(&r)),
        ("reward_margin".to_string(), mean(&c) - mean(&r)),
        (
            "reward_accuracy".to_string(),
            c.iter().zip(&r).filter(|(a, b)| a > b).count() as f64 / p,
        ),
    ]);
    let loss = log_sigmoid(chosen - rejected).mean().neg();
    (loss, metrics)
}

/// Sum of each row's log-probabilities over its weighted target positions.
///
/// # Shapes
/// `logits`: `(B, T, V)`, `targets`, `weights`: `(B, T)` -> `(B,)`
pub fn sequence_logps(logits: Tensor<3>, targets: Tensor<2, Int>, weights: Tensor<2>) -> Tensor<1> {
    let lp = cria_core::model::token_logprobs(logits, targets) * weights;
    let b = lp.dims()[0];
    lp.sum_dim(1).reshape([b])
}
