//! PPO's pieces against PyTorch on fixed tensors (scripts/ref/ppo_fixtures.py): GAE, the
//! KL-penalised per-token rewards, masked whitening, and the clipped policy and value losses
//! with their gradients (all within 1e-5).

use cria_core::params::to_vec;
use cria_core::{Tensor, TensorData, device};
use cria_train::losses::{gae, kl_penalised_rewards, ppo_policy_loss, ppo_value_loss, whiten};
use serde_json::Value;

fn fixture() -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ppo_ref.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn all_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * y.abs().max(1.0),
            "{what}[{i}]: {x} vs PyTorch {y}"
        );
    }
}

fn leaf(v: Vec<f32>) -> Tensor<2> {
    Tensor::<2>::from_data(TensorData::new(v, [2, 5]), &device::training_device()).require_grad()
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
    all_close(&adv, &floats(&g["advantages"]), "advantages");
    all_close(&ret, &floats(&g["returns"]), "returns");

    let k = &f["kl_rewards"];
    let r = kl_penalised_rewards(
        &floats(&k["logp"]),
        &floats(&k["ref"]),
        k["score"].as_f64().unwrap() as f32,
        k["beta"].as_f64().unwrap(),
    );
    all_close(&r, &floats(&k["rewards"]), "KL-penalised rewards");

    let w = &f["whiten"];
    let mask: Vec<bool> = floats(&w["mask"]).iter().map(|m| *m > 0.0).collect();
    for (shift, key) in [(true, "shifted"), (false, "kept_mean")] {
        let mut x = floats(&w["x"]);
        whiten(&mut x, &mask, shift);
        all_close(&x, &floats(&w[key]), key);
    }
}

#[test]
fn clipped_policy_and_value_losses() {
    let f = fixture();
    let p = &f["policy"];
    let logp = leaf(floats(&p["logp"]));
    let (loss, m) = ppo_policy_loss(
        logp.clone(),
        &floats(&p["old_logp"]),
        &floats(&p["adv"]),
        &floats(&p["mask"]),
        p["clip"].as_f64().unwrap(),
    );
    all_close(
        &[loss.clone().into_scalar::<f32>()],
        &[p["loss"].as_f64().unwrap() as f32],
        "policy loss",
    );
    all_close(
        &to_vec(logp.grad(&loss.backward()).unwrap()),
        &floats(&p["grad"]),
        "policy gradient",
    );
    assert!((m["clip_frac"] - p["clip_frac"].as_f64().unwrap()).abs() < 1e-6);

    let v = &f["value"];
    let values = leaf(floats(&v["values"]));
    let (loss, _) = ppo_value_loss(
        values.clone(),
        &floats(&v["old_values"]),
        &floats(&v["returns"]),
        &floats(&v["mask"]),
        v["clip"].as_f64().unwrap(),
    );
    all_close(
        &[loss.clone().into_scalar::<f32>()],
        &[v["loss"].as_f64().unwrap() as f32],
        "value loss",
    );
    all_close(
        &to_vec(values.grad(&loss.backward()).unwrap()),
        &floats(&v["grad"]),
        "value gradient",
    );
}
