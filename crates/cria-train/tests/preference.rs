//! Preference learning against PyTorch (fixtures from scripts/ref/pref_fixtures.py):
//! InstructGPT's ranking loss for K = 4 and K = 2 groups and DPO's loss on fixed values (loss and
//! gradients within 1e-6), a `LlamaForSequenceClassification` reward model's rewards (1e-5) and
//! every gradient norm of its ranking loss (1e-4 relative), and DPO through a model: masked
//! sequence log-probs (1e-4), loss and every gradient norm (1e-4 relative); and RL's per-token
//! log-probs at reply positions against the same sequence log-probs and the full forward pass.

use cria_core::params::{ParamMut, Params, to_vec};
use cria_core::{Int, Llama, Tensor, TensorData, checkpoint, device};
use cria_testkit::{close, floats, leaf_vec, read_json, usizes};
use cria_train::batch::{Layout, Row, make_batch};
use cria_train::losses::{dpo_loss, ranking_loss};
use cria_train::scoring::batch_logps;
use cria_train::stages::dpo::DpoObjective;
use cria_train::stages::rm::RankingObjective;
use cria_train::trainer::Objective;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pref_ref")
}

fn json(name: &str) -> Value {
    read_json(&dir().join(name))
}

#[test]
fn ranking_and_dpo_losses_on_fixed_values() {
    let exp = json("losses.json");
    let rk = &exp["ranking"];
    let r = leaf_vec(floats(&rk["rewards"]));
    let groups = usizes(&rk["groups"]);
    let tiers: Vec<usize> = groups.iter().flat_map(|&k| 0..k).collect();
    let (loss, m) = ranking_loss(r.clone(), &groups, &tiers);
    close(
        loss.clone().into_scalar::<f32>() as f64,
        rk["loss"].as_f64().unwrap(),
        1e-6,
        "ranking loss",
    );
    let g = to_vec(r.grad(&loss.backward()).unwrap());
    for (a, b) in g.iter().zip(floats(&rk["grad"])) {
        close(*a as f64, b as f64, 1e-6, "ranking gradient");
    }
    // By hand: the K=4 group ranks 5 of its 6 pairs right (0.2 < 0.9 is wrong) and the pair
    // (0.3, 0.8) is wrong: 5 of 7.
    close(m["accuracy"], 5.0 / 7.0, 1e-12, "pair accuracy");

    let d = &exp["dpo"];
    let p = leaf_vec(floats(&d["policy"]));
    let (loss, m) = dpo_loss(
        p.clone(),
        &floats(&d["reference"]),
        d["beta"].as_f64().unwrap(),
    );
    close(
        loss.clone().into_scalar::<f32>() as f64,
        d["loss"].as_f64().unwrap(),
        1e-6,
        "DPO loss",
    );
    let g = to_vec(p.grad(&loss.backward()).unwrap());
    for (a, b) in g.iter().zip(floats(&d["grad"])) {
        close(*a as f64, b as f64, 1e-6, "DPO gradient");
    }
    for k in ["reward_chosen", "reward_rejected", "reward_accuracy"] {
        close(m[k], d[k].as_f64().unwrap(), 1e-6, k);
    }
}

#[test]
fn tied_responses_make_no_pair() {
    // Rewards 1.0, 0.0, 0.5 with the last two tied: pairs (1.0, 0.0) and (1.0, 0.5) only,
    // loss -(log σ(1.0) + log σ(0.5)) / 2 = (0.313262 + 0.474077) / 2 = 0.393669.
    let r = leaf_vec(vec![1.0, 0.0, 0.5]);
    let (loss, m) = ranking_loss(r, &[3], &[0, 1, 1]);
    close(
        loss.into_scalar::<f32>() as f64,
        0.393669,
        1e-5,
        "tied ranking loss",
    );
    close(m["accuracy"], 1.0, 1e-12, "both pairs right");
    close(m["margin"], 0.75, 1e-6, "mean margin over the two pairs");
}

/// Every parameter's gradient norm against PyTorch's, all parameters covered.
fn check_grad_norms(model: &Llama, grads: &burn::tensor::Gradients, want: &Value) {
    let want = want.as_object().unwrap();
    let mut seen = 0;
    model.clone().visit("", &mut |name, p| {
        let g = match &p {
            ParamMut::Vector(t) => t.grad(grads).map(to_vec),
            ParamMut::Matrix { t, .. } => t.grad(grads).map(to_vec),
        }
        .unwrap_or_else(|| panic!("{name} got no gradient"));
        let norm = g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let w = want[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} unknown to PyTorch"));
        assert!(
            (norm - w).abs() <= 1e-4 * w.max(1e-6),
            "{name}: grad norm {norm} vs {w}"
        );
        seen += 1;
    });
    assert_eq!(seen, want.len(), "every parameter compared");
}

#[test]
fn reward_model_matches_sequence_classification() {
    let exp = json("rm.json");
    let inf = device::inference_device();
    let model = checkpoint::load_model(&dir().join("rm"), &inf).unwrap();
    assert_eq!(model.cfg.head, cria_core::config::Head::Score);
    let ids: Vec<i64> = exp["ids"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
        .collect();
    let lengths = usizes(&exp["lengths"]);
    let (b, t) = (lengths.len(), ids.len() / lengths.len());
    let ids_t = |d: &cria_core::Device| {
        Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [b, t]), d)
    };
    let ids_u: Vec<u32> = ids.iter().map(|x| *x as u32).collect();
    let at = model.reward_positions(&ids_u, t, &lengths);
    let r = to_vec(model.rewards(ids_t(&inf), &at));
    for (a, w) in r.iter().zip(floats(&exp["rewards"])) {
        assert!((a - w).abs() < 1e-5, "reward {a} vs transformers {w}");
    }

    // The ranking loss through the model, and every parameter's gradient.
    let dev = device::training_device();
    let m = model.to_device(&dev).require_grad();
    let batch = cria_train::batch::Batch {
        inputs: ids.iter().map(|x| *x as u32).collect(),
        b,
        t,
        aux: cria_train::batch::Aux {
            lengths,
            groups: usizes(&exp["groups"]),
            tiers: usizes(&exp["groups"])
                .into_iter()
                .flat_map(|k| 0..k)
                .collect(),
            ref_logps: vec![],
        },
        ..Default::default()
    };
    let (loss, _) = RankingObjective.loss(&m, &batch, &dev).unwrap();
    close(
        loss.clone().into_scalar::<f32>() as f64,
        exp["loss"].as_f64().unwrap(),
        1e-5,
        "RM loss",
    );
    check_grad_norms(&m, &loss.backward(), &exp["grad_norms"]);

    // Saved by cria, it is still a one-label sequence classifier with `score.weight`.
    let tmp = tempfile::tempdir().unwrap();
    let mut saved = m.to_device(&inf);
    saved.cfg.reward_offset = 0.25;
    checkpoint::save(&saved, tmp.path(), Default::default()).unwrap();
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "LlamaForSequenceClassification");
    assert_eq!(cfg["id2label"].as_object().unwrap().len(), 1);
    let back = checkpoint::load_model(tmp.path(), &inf).unwrap();
    let r2 = to_vec(back.rewards(ids_t(&inf), &at));
    for (a, w) in r2.iter().zip(&r) {
        assert!((a - (w - 0.25)).abs() < 1e-6, "the offset is subtracted");
    }
    let mut st = cria_core::weights::WeightMap::default();
    cria_core::weights::WeightMap::read_file(&tmp.path().join("model.safetensors"), &mut st)
        .unwrap();
    assert_eq!(st.tensors["score.weight"].shape, vec![1, 32]);
    assert!(!st.tensors.contains_key("lm_head.weight"));
}

/// The fixture's two chosen/rejected pairs as rows (prompt tokens unweighted).
fn dpo_rows(exp: &Value) -> Vec<Row> {
    let lengths = usizes(&exp["lengths"]);
    let prompt = usizes(&exp["prompt"]);
    exp["ids"]
        .as_array()
        .unwrap()
        .iter()
        .zip(lengths.iter().zip(&prompt))
        .enumerate()
        .map(|(k, (r, (&n, &p)))| {
            let ids: Vec<u32> = r.as_array().unwrap()[..n]
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            Row {
                response: (0..n).map(|i| i >= p).collect(),
                ids,
                ref_logp: 0.0,
                // Chosen, rejected: places 0 and 1 of each pair.
                tier: k % 2,
            }
        })
        .collect()
}

#[test]
fn rl_token_log_probs_at_reply_positions_equal_the_full_forward_pass() {
    // RL's per-token log-probabilities run the language-model head and the softmax at the reply
    // positions only: per row they sum to PyTorch's sequence log-probs (1e-4), every value and
    // every gradient equals the full-vocabulary pass over all positions (1e-5, 1e-4 relative),
    // and the prompt's positions hold zeros.
    use cria_core::model::token_logprobs;
    use cria_train::scoring::token_logps;
    let exp = json("dpo.json");
    let rows = dpo_rows(&exp);
    let groups = [rows[..2].to_vec(), rows[2..].to_vec()];
    let b = make_batch(groups.iter(), 0, Layout::Tokens);
    let dev = device::training_device();
    let policy = checkpoint::load_model(&dir().join("lm"), &dev)
        .unwrap()
        .require_grad();
    let w = b.weights.clone().unwrap();
    let (lp, _) = token_logps(&policy, &b, &dev, 1.0);
    let lp = to_vec(lp);
    for (r, want) in floats(&exp["policy_logps"]).iter().enumerate() {
        let got: f32 = lp[r * b.t..(r + 1) * b.t].iter().sum();
        assert!(
            (got - want).abs() < 1e-4,
            "row {r}: {got} vs PyTorch {want}"
        );
    }
    let temperature = 0.7;
    let (lp, logits) = token_logps(&policy, &b, &dev, temperature);
    let n = w.iter().filter(|x| **x > 0.0).count();
    assert_eq!(logits.dims(), [1, n, policy.cfg.vocab_size]);
    let full_logits = policy.forward(b.input_ids(&dev), None) / temperature;
    let full = token_logprobs(full_logits, b.target_ids(&dev)) * b.weight_tensor(&dev).unwrap();
    let (a, f) = (to_vec(lp.clone()), to_vec(full.clone()));
    for (i, ((x, y), m)) in a.iter().zip(&f).zip(&w).enumerate() {
        assert!((x - y).abs() < 1e-5, "position {i}: {x} vs {y}");
        if *m == 0.0 {
            assert_eq!(*x, 0.0, "position {i} is the prompt's");
        }
    }
    let (ga, gf) = (lp.sum().backward(), full.sum().backward());
    let mut seen = 0;
    policy.clone().visit("", &mut |name, p| {
        let (x, y) = match &p {
            ParamMut::Vector(t) => (t.grad(&ga).map(to_vec), t.grad(&gf).map(to_vec)),
            ParamMut::Matrix { t, .. } => (t.grad(&ga).map(to_vec), t.grad(&gf).map(to_vec)),
        };
        let (x, y) = (x.unwrap(), y.unwrap());
        let scale = y.iter().map(|v| v.abs()).fold(0f32, f32::max).max(1e-6);
        for (u, v) in x.iter().zip(&y) {
            assert!((u - v).abs() <= 1e-4 * scale, "{name}: gradient {u} vs {v}");
        }
        seen += 1;
    });
    assert!(seen > 0);
}

#[test]
fn dpo_through_a_model_matches_pytorch() {
    let exp = json("dpo.json");
    let rows = dpo_rows(&exp);
    let mut groups = [rows[..2].to_vec(), rows[2..].to_vec()];
    let inf = device::inference_device();
    let reference = checkpoint::load_model(&dir().join("ref"), &inf).unwrap();
    let b = make_batch(groups.iter(), 0, Layout::Tokens);
    let ref_lp = to_vec(batch_logps(&reference, &b, &inf));
    for (a, w) in ref_lp.iter().zip(floats(&exp["ref_logps"])) {
        assert!((a - w).abs() < 1e-4, "reference log-prob {a} vs {w}");
    }
    for (row, v) in groups.iter_mut().flatten().zip(&ref_lp) {
        row.ref_logp = *v;
    }
    let b = make_batch(groups.iter(), 0, Layout::Tokens);
    let dev = device::training_device();
    let policy = checkpoint::load_model(&dir().join("lm"), &inf)
        .unwrap()
        .to_device(&dev)
        .require_grad();
    let lp = to_vec(batch_logps(&policy, &b, &dev));
    for (a, w) in lp.iter().zip(floats(&exp["policy_logps"])) {
        assert!((a - w).abs() < 1e-4, "policy log-prob {a} vs {w}");
    }
    let obj = DpoObjective {
        beta: exp["beta"].as_f64().unwrap(),
        sft_weight: 0.0,
    };
    let (loss, _) = obj.loss(&policy, &b, &dev).unwrap();
    close(
        loss.clone().into_scalar::<f32>() as f64,
        exp["loss"].as_f64().unwrap(),
        1e-5,
        "DPO loss",
    );
    check_grad_norms(&policy, &loss.backward(), &exp["grad_norms"]);
    // With the chosen responses' per-token NLL added (TRL's ["sigmoid", "sft"] losses).
    let obj = DpoObjective {
        beta: exp["beta"].as_f64().unwrap(),
        sft_weight: exp["sft_weight"].as_f64().unwrap(),
    };
    let (loss, metrics) = obj.loss(&policy, &b, &dev).unwrap();
    close(
        metrics["nll"],
        exp["nll"].as_f64().unwrap(),
        1e-5,
        "chosen NLL",
    );
    close(
        loss.clone().into_scalar::<f32>() as f64,
        exp["rpo_loss"].as_f64().unwrap(),
        1e-5,
        "DPO + NLL loss",
    );
    check_grad_norms(&policy, &loss.backward(), &exp["rpo_grad_norms"]);
}
