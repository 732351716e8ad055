//! PPO's pieces against PyTorch on fixed tensors (scripts/ref/ppo_fixtures.py): GAE, the
//! KL-penalised per-token rewards, masked whitening, and the clipped policy and value losses
//! with their gradients (all within 1e-5).

use cria_core::params::to_vec;
use cria_testkit::{assert_close_rel, floats, leaf, read_json};
use cria_train::losses::{gae, kl_penalised_rewards, ppo_policy_loss, ppo_value_loss, whiten};
use serde_json::Value;

fn fixture() -> Value {
    read_json(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ppo_ref.json"))
}

#[test]
fn gae_rewards_and_whitening() {
    let f = fixture();
    let g = &f["gae"];
    let (adv, ret) = gae(
        &floats(&g["rewards"]),
        &floats(&g["values"]),
        g["gamma"].as_f64().unwrap(),
        g["lam"].as_f64().unwrap(),
    );
    assert_close_rel(&adv, &floats(&g["advantages"]), 1e-5, "advantages");
    assert_close_rel(&ret, &floats(&g["returns"]), 1e-5, "returns");

    let k = &f["kl_rewards"];
    let r = kl_penalised_rewards(
        &floats(&k["logp"]),
        &floats(&k["ref"]),
        k["score"].as_f64().unwrap() as f32,
        k["beta"].as_f64().unwrap(),
    );
    assert_close_rel(&r, &floats(&k["rewards"]), 1e-5, "KL-penalised rewards");

    let w = &f["whiten"];
    let mask: Vec<bool> = floats(&w["mask"]).iter().map(|m| *m > 0.0).collect();
    for (shift, key) in [(true, "shifted"), (false, "kept_mean")] {
        let mut x = floats(&w["x"]);
        whiten(&mut x, &mask, shift);
        assert_close_rel(&x, &floats(&w[key]), 1e-5, key);
    }
}

#[test]
fn clipped_policy_and_value_losses() {
    let f = fixture();
    let p = &f["policy"];
    let logp = leaf(floats(&p["logp"]), [2, 5]);
    let (loss, m) = ppo_policy_loss(
        logp.clone(),
        &floats(&p["old_logp"]),
        &floats(&p["adv"]),
        &floats(&p["mask"]),
        p["clip"].as_f64().unwrap(),
    );
    assert_close_rel(
        &[loss.clone().into_scalar::<f32>()],
        &[p["loss"].as_f64().unwrap() as f32],
        1e-5,
        "policy loss",
    );
    assert_close_rel(
        &to_vec(logp.grad(&loss.backward()).unwrap()),
        &floats(&p["grad"]),
        1e-5,
        "policy gradient",
    );
    assert!((m["clip_frac"] - p["clip_frac"].as_f64().unwrap()).abs() < 1e-6);

    let v = &f["value"];
    let values = leaf(floats(&v["values"]), [2, 5]);
    let (loss, _) = ppo_value_loss(
        values.clone(),
        &floats(&v["old_values"]),
        &floats(&v["returns"]),
        &floats(&v["mask"]),
        v["clip"].as_f64().unwrap(),
    );
    assert_close_rel(
        &[loss.clone().into_scalar::<f32>()],
        &[v["loss"].as_f64().unwrap() as f32],
        1e-5,
        "value loss",
    );
    assert_close_rel(
        &to_vec(values.grad(&loss.backward()).unwrap()),
        &floats(&v["grad"]),
        1e-5,
        "value gradient",
    );
}
