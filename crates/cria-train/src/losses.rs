//! The preference losses, as functions of tensors (held against PyTorch in
//! `tests/preference_losses.rs`).

use crate::metrics::Metrics;
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
/// averaged over groups. Pairs are the K = 2 case. Responses a labeller tied (equal `tiers`)
/// make no pair, and a group's pairs are then averaged over those it has. Also returns the
/// fraction of pairs ranked correctly (`accuracy`) and the mean reward margin.
///
/// # Shapes
/// `rewards`: `(Σ K,)`, rows grouped as `groups` says, `tiers` one per row -> `(1,)`
pub fn ranking_loss(rewards: Tensor<1>, groups: &[usize], tiers: &[usize]) -> (Tensor<1>, Metrics) {
    let (mut better, mut worse, mut weight) = (vec![], vec![], vec![]);
    let mut start = 0;
    for &k in groups {
        let tier = &tiers[start..start + k];
        let ordered: Vec<(usize, usize)> = (0..k)
            .flat_map(|i| (i + 1..k).map(move |j| (i, j)))
            .filter(|&(i, j)| tier[i] < tier[j])
            .collect();
        for &(i, j) in &ordered {
            better.push((start + i) as i64);
            worse.push((start + j) as i64);
            weight.push(1.0 / (ordered.len() * groups.len()) as f32);
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

/// The chosen responses' negative log-likelihood per token, for rows in (chosen, rejected)
/// pairs: `-Σ_chosen log p / chosen tokens`, with `chosen_tokens` the response tokens of the
/// even rows (TRL's `sft` loss type, added to DPO's in the RPO loss of Pang et al. 2024).
pub fn chosen_nll(policy_logps: Tensor<1>, chosen_tokens: f32) -> Tensor<1> {
    let n = policy_logps.dims()[0];
    let device = policy_logps.device();
    let chosen = policy_logps.select(0, index((0..n as i64).step_by(2).collect(), &device));
    chosen.sum().neg() / chosen_tokens.max(1.0)
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

/// Generalized advantage estimation (Schulman et al. 2016) over one reply's tokens: with
/// `δ_t = r_t + γ V_{t+1} - V_t` (`V` after the last token is 0), `A_t = δ_t + γλ A_{t+1}`;
/// returns the advantages and the value targets `A_t + V_t`.
pub fn gae(rewards: &[f32], values: &[f32], gamma: f64, lam: f64) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(rewards.len(), values.len());
    let n = rewards.len();
    let mut adv = vec![0f32; n];
    let mut next_adv = 0f64;
    for t in (0..n).rev() {
        let next_v = if t + 1 < n { values[t + 1] as f64 } else { 0.0 };
        let delta = rewards[t] as f64 + gamma * next_v - values[t] as f64;
        next_adv = delta + gamma * lam * next_adv;
        adv[t] = next_adv as f32;
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, ret)
}

/// InstructGPT's per-token reward: `-β (log π(y_t) - log π_sft(y_t))` at every reply token,
/// plus the reward model's `score` at the last one.
pub fn kl_penalised_rewards(logp: &[f32], ref_logp: &[f32], score: f32, beta: f64) -> Vec<f32> {
    let mut r: Vec<f32> = logp
        .iter()
        .zip(ref_logp)
        .map(|(a, b)| (-beta * (*a - *b) as f64) as f32)
        .collect();
    if let Some(last) = r.last_mut() {
        *last += score;
    }
    r
}

/// Shifts and scales the values where `mask` is set to mean 0 and (unbiased) variance 1;
/// with `shift_mean` false the mean is put back (reward whitening keeps the sign of rewards).
pub fn whiten(x: &mut [f32], mask: &[bool], shift_mean: bool) {
    let n = mask.iter().filter(|m| **m).count();
    if n < 2 {
        return;
    }
    let mean = x
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(v, _)| *v as f64)
        .sum::<f64>()
        / n as f64;
    let var = x
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(v, _)| (*v as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1) as f64;
    let inv = 1.0 / (var + 1e-8).sqrt();
    for (v, m) in x.iter_mut().zip(mask) {
        if *m {
            let w = (*v as f64 - mean) * inv;
            *v = (if shift_mean { w } else { w + mean }) as f32;
        }
    }
}

fn tensor2(v: &[f32], like: &Tensor<2>) -> Tensor<2> {
    Tensor::<2>::from_data(TensorData::new(v.to_vec(), like.dims()), &like.device())
}

/// PPO's clipped surrogate (Schulman et al. 2017), a masked mean over reply tokens:
/// `max(-A r, -A clip(r, 1-ε, 1+ε))` with `r = exp(log π - log π_old)`. Also returns the
/// fraction of tokens where the clipped term was taken and the approximate KL to the old
/// policy, `mean((r - 1) - log r)`.
///
/// # Shapes
/// `logp`: `(B, T)`; `old_logp`, `adv`, `mask`: `B*T` values -> `(1,)`
pub fn ppo_policy_loss(
    logp: Tensor<2>,
    old_logp: &[f32],
    adv: &[f32],
    mask: &[f32],
    clip: f64,
) -> (Tensor<1>, Metrics) {
    let n = mask.iter().sum::<f32>().max(1.0) as f64;
    let (old, a, m) = (
        tensor2(old_logp, &logp),
        tensor2(adv, &logp),
        tensor2(mask, &logp),
    );
    let log_ratio = logp - old;
    let ratio = log_ratio.clone().exp();
    let unclipped = ratio.clone().neg() * a.clone();
    let clipped = ratio.clone().clamp(1.0 - clip, 1.0 + clip).neg() * a;
    let loss = (unclipped.clone().max_pair(clipped.clone()) * m.clone()).sum() / n;
    let taken: Vec<f32> = clipped
        .greater(unclipped)
        .float()
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    let r: Vec<f32> = ratio.into_data().try_to_vec::<f32>().expect("f32");
    let (mut clip_frac, mut approx_kl) = (0.0f64, 0.0f64);
    for ((t, r), w) in taken.iter().zip(&r).zip(mask) {
        if *w > 0.0 {
            clip_frac += *t as f64;
            approx_kl += (*r as f64 - 1.0) - (*r as f64).ln();
        }
    }
    let metrics = Metrics::from([
        ("clip_frac".to_string(), clip_frac / n),
        ("approx_kl".to_string(), approx_kl / n),
    ]);
    (loss, metrics)
}

/// PPO's clipped value loss, a masked mean over reply tokens:
/// `½ max((V - R)², (V_old + clip(V - V_old, ±ε) - R)²)`. Also returns the fraction clipped.
///
/// # Shapes
/// `values`: `(B, T)`; `old_values`, `returns`, `mask`: `B*T` values -> `(1,)`
pub fn ppo_value_loss(
    values: Tensor<2>,
    old_values: &[f32],
    returns: &[f32],
    mask: &[f32],
    clip: f64,
) -> (Tensor<1>, Metrics) {
    let n = mask.iter().sum::<f32>().max(1.0) as f64;
    let (old, ret, m) = (
        tensor2(old_values, &values),
        tensor2(returns, &values),
        tensor2(mask, &values),
    );
    let clipped = old.clone() + (values.clone() - old).clamp(-clip, clip);
    let a = (values - ret.clone()).powi_scalar(2);
    let b = (clipped - ret).powi_scalar(2);
    let taken: Vec<f32> = b
        .clone()
        .greater(a.clone())
        .float()
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    let loss = (a.max_pair(b) * m).sum() * (0.5 / n);
    let frac = taken
        .iter()
        .zip(mask)
        .filter(|(t, w)| **w > 0.0 && **t > 0.0)
        .count() as f64
        / n;
    (loss, Metrics::from([("value_clip_frac".to_string(), frac)]))
}

/// Each reply's sampled KL to the reference, `Σ_t (log π - log π_ref)` over its masked
/// tokens, in nats; the arrays are row-major `[B, t]`.
pub fn reply_kl(logp: &[f32], ref_logp: &[f32], mask: &[f32], t: usize) -> Vec<f64> {
    logp.chunks(t)
        .zip(ref_logp.chunks(t))
        .zip(mask.chunks(t))
        .map(|((a, b), m)| {
            a.iter()
                .zip(b)
                .zip(m)
                .filter(|(_, m)| **m > 0.0)
                .map(|((a, b), _)| (*a - *b) as f64)
                .sum()
        })
        .collect()
}

/// RLOO's reward (Ahmadian et al. 2024): the reply's score minus `β` times its KL to the
/// reference ([`reply_kl`]), the penalty counted once per reply rather than per token.
pub fn kl_penalised_scores(scores: &[f32], kl: &[f64], beta: f64) -> Vec<f32> {
    scores
        .iter()
        .zip(kl)
        .map(|(s, kl)| (*s as f64 - beta * kl) as f32)
        .collect()
}

/// `rewards` as its groups of `k` consecutive replies to one prompt (at least two each).
fn groups(rewards: &[f32], k: usize) -> std::slice::Chunks<'_, f32> {
    assert!(
        k >= 2 && rewards.len().is_multiple_of(k),
        "groups of k >= 2"
    );
    rewards.chunks(k)
}

/// RLOO's advantages (Ahmadian et al. 2024): each reply's reward minus the mean reward of the
/// other replies to its prompt. `rewards` holds groups of `k` consecutive replies to one prompt.
pub fn rloo_advantages(rewards: &[f32], k: usize) -> Vec<f32> {
    groups(rewards, k)
        .flat_map(|g| {
            let sum: f64 = g.iter().map(|r| *r as f64).sum();
            g.iter()
                .map(move |r| (*r as f64 - (sum - *r as f64) / (k - 1) as f64) as f32)
        })
        .collect()
}

/// GRPO's advantages (Shao et al. 2024): each reply's reward minus its group's mean, divided
/// by the group's (unbiased) standard deviation plus 1e-4 when `scale` is set (Dr. GRPO leaves
/// it out). `rewards` holds groups of `k` consecutive replies to one prompt.
pub fn grpo_advantages(rewards: &[f32], k: usize, scale: bool) -> Vec<f32> {
    groups(rewards, k)
        .flat_map(|g| {
            let mean = g.iter().map(|r| *r as f64).sum::<f64>() / k as f64;
            let var = g.iter().map(|r| (*r as f64 - mean).powi(2)).sum::<f64>() / (k - 1) as f64;
            let div = if scale { var.sqrt() + 1e-4 } else { 1.0 };
            g.iter().map(move |r| ((*r as f64 - mean) / div) as f32)
        })
        .collect()
}

/// RLOO's clipped surrogate at the level of whole replies: with the reply's ratio
/// `ρ = exp(Σ_t (log π - log π_old))` over its masked tokens, the mean over rows of
/// `max(-A ρ, -A clip(ρ, 1-ε, 1+ε))`. Also returns the fraction of rows where the clipped term
/// was taken and the approximate KL to the old policy, `mean((ρ - 1) - log ρ)` over rows.
///
/// # Shapes
/// `logp`: `(B, T)`; `old_logp`, `mask`: `B*T` values; `adv`: `B` values -> `(1,)`
pub fn sequence_policy_loss(
    logp: Tensor<2>,
    old_logp: &[f32],
    adv: &[f32],
    mask: &[f32],
    clip: f64,
) -> (Tensor<1>, Metrics) {
    let [b, _] = logp.dims();
    assert_eq!(adv.len(), b, "one advantage per row");
    let (old, m) = (tensor2(old_logp, &logp), tensor2(mask, &logp));
    let log_ratio = ((logp - old) * m).sum_dim(1).reshape([b]);
    let a = Tensor::<1>::from_data(TensorData::new(adv.to_vec(), [b]), &log_ratio.device());
    let ratio = log_ratio.exp();
    let unclipped = ratio.clone().neg() * a.clone();
    let clipped = ratio.clone().clamp(1.0 - clip, 1.0 + clip).neg() * a;
    let taken = values(&clipped.clone().greater(unclipped.clone()).float());
    let loss = unclipped.max_pair(clipped).mean();
    let r = values(&ratio);
    let n = b.max(1) as f64;
    let metrics = Metrics::from([
        (
            "clip_frac".to_string(),
            taken.iter().map(|t| *t as f64).sum::<f64>() / n,
        ),
        (
            "approx_kl".to_string(),
            r.iter()
                .map(|r| (*r as f64 - 1.0) - (*r as f64).ln())
                .sum::<f64>()
                / n,
        ),
    ]);
    (loss, metrics)
}

/// GRPO's KL term: the masked token mean of Schulman's unbiased, never-negative estimator of
/// KL(π ‖ π_ref), `exp(log π_ref - log π) - (log π_ref - log π) - 1`.
///
/// # Shapes
/// `logp`: `(B, T)`; `ref_logp`, `mask`: `B*T` values -> `(1,)`
pub fn k3_kl(logp: Tensor<2>, ref_logp: &[f32], mask: &[f32]) -> Tensor<1> {
    let n = mask.iter().sum::<f32>().max(1.0) as f64;
    let (rf, m) = (tensor2(ref_logp, &logp), tensor2(mask, &logp));
    let d = rf - logp;
    ((d.clone().exp() - d - 1.0) * m).sum() / n
}
