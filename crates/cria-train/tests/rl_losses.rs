//! RLOO's and GRPO's pieces against PyTorch on fixed tensors (scripts/ref/rl_fixtures.py, with
//! the definitions of TRL 1.16's RLOOTrainer and GRPOTrainer): the KL-penalised reply rewards
//! and leave-one-out advantages, the group-normalised advantages (scaled and not), RLOO's
//! reply-level clipped loss and GRPO's token-level clipped loss with its k3 KL term, each with
//! its gradient (all within 1e-5; the fixture is float64, cria float32).

use cria_core::params::to_vec;
use cria_testkit::{assert_close_rel, floats, leaf, read_json};
use cria_train::losses::{
    grpo_advantages, k3_kl, kl_penalised_scores, ppo_policy_loss, reply_kl, rloo_advantages,
    sequence_policy_loss,
};
use serde_json::Value;

fn fixture() -> Value {
    read_json(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rl_ref.json"))
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

#[test]
fn group_advantages_match_pytorch() {
    let f = fixture();
    let k = f["k"].as_u64().unwrap() as usize;
    let (scores, mask) = (floats(&f["scores"]), floats(&f["mask"]));
    let t = mask.len() / scores.len();
    let kl = reply_kl(&floats(&f["old_logp"]), &floats(&f["ref_logp"]), &mask, t);
    let rewards = kl_penalised_scores(&scores, &kl, num(&f["beta"]));
    let rloo = rloo_advantages(&rewards, k);
    assert_close_rel(
        &rloo,
        &floats(&f["rloo_advantages"]),
        1e-5,
        "RLOO advantages",
    );
    // The leave-one-out baseline makes each group's advantages sum to zero.
    for g in rloo.chunks(k) {
        assert!(g.iter().sum::<f32>().abs() < 1e-5, "{g:?}");
    }
    let grpo = grpo_advantages(&scores, k, true);
    assert_close_rel(
        &grpo,
        &floats(&f["grpo_advantages"]),
        1e-5,
        "GRPO advantages",
    );
    // The group whose replies all scored the same teaches nothing.
    assert_eq!(&grpo[3..6], &[0.0, 0.0, 0.0]);
    let unscaled = grpo_advantages(&scores, k, false);
    assert_close_rel(
        &unscaled,
        &floats(&f["grpo_advantages_unscaled"]),
        1e-5,
        "Dr. GRPO advantages",
    );
}

#[test]
fn rloo_reply_level_loss_and_gradient_match_pytorch() {
    let f = fixture();
    let mask = floats(&f["mask"]);
    let b = floats(&f["scores"]).len();
    let logp = leaf(floats(&f["logp"]), [b, mask.len() / b]);
    let (loss, m) = sequence_policy_loss(
        logp.clone(),
        &floats(&f["old_logp"]),
        &floats(&f["row_adv"]),
        &mask,
        num(&f["clip"]),
    );
    let got = loss.clone().into_scalar::<f32>();
    assert_close_rel(&[got], &[num(&f["rloo_loss"]) as f32], 1e-5, "RLOO loss");
    let grad = to_vec(logp.grad(&loss.backward()).unwrap());
    assert_close_rel(&grad, &floats(&f["rloo_grad"]), 1e-5, "RLOO gradient");
    assert!((m["clip_frac"] - num(&f["rloo_clip_frac"])).abs() < 1e-9);
    // Masked positions get no gradient.
    for (g, w) in grad.iter().zip(&mask) {
        if *w == 0.0 {
            assert_eq!(*g, 0.0);
        }
    }
}

#[test]
fn grpo_token_level_loss_with_kl_matches_pytorch() {
    let f = fixture();
    let mask = floats(&f["mask"]);
    let b = floats(&f["scores"]).len();
    let t = mask.len() / b;
    let logp = leaf(floats(&f["logp"]), [b, t]);
    let row_adv = floats(&f["row_adv"]);
    let adv: Vec<f32> = (0..mask.len()).map(|i| row_adv[i / t] * mask[i]).collect();
    let (clipped, _) = ppo_policy_loss(
        logp.clone(),
        &floats(&f["old_logp"]),
        &adv,
        &mask,
        num(&f["clip"]),
    );
    let kl = k3_kl(logp.clone(), &floats(&f["ref_logp"]), &mask);
    let k3 = kl.clone().into_scalar::<f32>();
    assert_close_rel(&[k3], &[num(&f["grpo_k3"]) as f32], 1e-5, "k3 KL");
    assert!(k3 >= 0.0, "the k3 estimate is never negative");
    let loss = clipped + kl * num(&f["beta"]);
    let got = loss.clone().into_scalar::<f32>();
    assert_close_rel(&[got], &[num(&f["grpo_loss"]) as f32], 1e-5, "GRPO loss");
    let grad = to_vec(logp.grad(&loss.backward()).unwrap());
    assert_close_rel(&grad, &floats(&f["grpo_grad"]), 1e-5, "GRPO gradient");
}
