//! LoRA against PEFT (fixture from scripts/ref/lora_fixtures.py): a PEFT adapter on all seven
//! projections loads, gives PEFT's logits (1e-4) and causal-LM loss (1e-5 relative), every
//! LoRA parameter's gradient norm (1e-4 relative), and merging gives the merged logits.

mod common;

use common::*;
use cria_core::model::cross_entropy;
use cria_core::nn::lora::is_lora_param;
use cria_core::params::{ParamMut, Params, to_vec};
use cria_core::{checkpoint, device};

fn dir() -> std::path::PathBuf {
    fixture("lora")
}

#[test]
fn peft_adapter_logits_loss_gradients_and_merge() {
    let reference = dir().join("reference.safetensors");
    let exp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("expected.json")).unwrap()).unwrap();
    let (shape, ids) = read_tensor(&reference, "input_ids");
    let (b, t) = (shape[0], shape[1]);
    let inputs: Vec<f64> = (0..b)
        .flat_map(|i| ids[i * t..i * t + t - 1].to_vec())
        .collect();
    let targets: Vec<f64> = (0..b)
        .flat_map(|i| ids[i * t + 1..(i + 1) * t].to_vec())
        .collect();

    let inf = device::inference_device();
    let mut model = checkpoint::load_model(&dir().join("base"), &inf).unwrap();
    let cfg = model.load_lora(&dir().join("adapter")).unwrap();
    assert_eq!((cfg.r, cfg.alpha), (4, 8.0));
    let logits = to_vec(model.forward(ids_tensor(&inputs, b, t - 1, &inf), None));
    let (d, i) = max_diff(&logits, &read_tensor(&reference, "logits").1);
    assert!(d < 1e-4, "logits with the adapter differ by {d:e} at {i}");

    let dev = device::training_device();
    let mut m = model
        .clone()
        .to_device(&dev)
        .require_grad_where(&is_lora_param);
    let loss = cross_entropy(
        m.forward(ids_tensor(&inputs, b, t - 1, &dev), None),
        ids_tensor(&targets, b, t - 1, &dev),
        None,
    );
    let value = loss.clone().into_scalar::<f32>() as f64;
    let want = exp["loss"].as_f64().unwrap();
    assert!(
        (value - want).abs() / want < 1e-5,
        "loss {value} vs PEFT {want}"
    );
    let grads = loss.backward();
    let want_norms = exp["grad_norms"].as_object().unwrap();
    let mut seen = 0;
    m.visit("", &mut |name, p| {
        let g = match &p {
            ParamMut::Vector(t) => t.grad(&grads).map(to_vec),
            ParamMut::Matrix { t, .. } => t.grad(&grads).map(to_vec),
        };
        match g {
            Some(g) => {
                let norm = g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                let w = want_norms[name]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{name} is not a PEFT parameter"));
                assert!(
                    (norm - w).abs() / w < 1e-4,
                    "{name}: grad norm {norm} vs PEFT {w}"
                );
                seen += 1;
            }
            None => assert!(!is_lora_param(name), "{name} got no gradient"),
        }
    });
    assert_eq!(seen, want_norms.len(), "only and all LoRA parameters train");

    model.merge_lora();
    let merged = to_vec(model.forward(ids_tensor(&inputs, b, t - 1, &inf), None));
    let (d, i) = max_diff(&merged, &read_tensor(&reference, "merged_logits").1);
    assert!(d < 1e-4, "merged logits differ by {d:e} at {i}");
}

#[test]
fn saved_adapter_reloads_identically_in_peft_layout() {
    let inf = device::inference_device();
    let mut model = checkpoint::load_model(&dir().join("base"), &inf).unwrap();
    model.load_lora(&dir().join("adapter")).unwrap();
    let cfg =
        cria_core::nn::lora::LoraConfig::from_peft(&dir().join("adapter/adapter_config.json"))
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    model.save_lora(&cfg, "base", tmp.path()).unwrap();
    let theirs = weights(&dir().join("adapter/adapter_model.safetensors"));
    let ours = weights(&tmp.path().join("adapter_model.safetensors"));
    let mut names: Vec<_> = theirs.tensors.keys().collect();
    names.sort();
    let mut ours_names: Vec<_> = ours.tensors.keys().collect();
    ours_names.sort();
    assert_eq!(names, ours_names, "PEFT's tensor names");
    for n in names {
        assert_eq!(theirs.tensors[n].shape, ours.tensors[n].shape, "{n}");
        assert_eq!(theirs.tensors[n].data, ours.tensors[n].data, "{n}");
    }
}

#[test]
fn adapter_for_another_base_is_refused() {
    let inf = device::inference_device();
    let mut other = checkpoint::load_model(&fixture("llama"), &inf).unwrap();
    let e = other
        .load_lora(&dir().join("adapter"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("adapter_model.safetensors")
            && e.contains("lora_A.weight")
            && e.contains("shape"),
        "{e}"
    );
}

#[test]
fn dropout_masks_the_adapter_input_while_training_only() {
    use cria_core::nn::lora::{Lora, LoraConfig, dropout_mask};
    use cria_core::{Tensor, TensorData};
    use rand::SeedableRng;

    // The mask: about p zeros, the rest 1/(1-p), the same for the same key.
    let m = dropout_mask(7, 100_000, 0.25);
    let zeros = m.iter().filter(|x| **x == 0.0).count() as f64 / m.len() as f64;
    assert!((zeros - 0.25).abs() < 0.01, "zero fraction {zeros}");
    assert!(m.iter().all(|x| *x == 0.0 || (*x - 4.0 / 3.0).abs() < 1e-6));
    assert_eq!(m, dropout_mask(7, 100_000, 0.25));
    assert_ne!(m, dropout_mask(8, 100_000, 0.25));

    // One adapter: B(A(x * mask)) * scale, as PEFT's lora_B(lora_A(dropout(x))) * scaling.
    let dev = device::inference_device();
    let cfg = LoraConfig {
        r: 3,
        alpha: 6.0,
        dropout: 0.5,
        ..LoraConfig::default()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut l = Lora::init(8, 5, &cfg, &mut rng, &dev);
    let bv: Vec<f32> = (0..15).map(|i| (i as f32 - 7.0) / 10.0).collect();
    l.b = Tensor::from_data(TensorData::new(bv, [3, 5]), &dev);
    let xv: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
    let x = || Tensor::<2>::from_data(TensorData::new(xv.clone(), [4, 8]), &dev);
    let plain = to_vec(l.forward(x()));
    l.train_key = Some(42);
    let dropped = to_vec(l.forward(x()));
    let mask = dropout_mask(42, 32, 0.5);
    let xm: Vec<f32> = xv.iter().zip(&mask).map(|(a, b)| a * b).collect();
    let manual = to_vec(
        Tensor::<2>::from_data(TensorData::new(xm, [4, 8]), &dev)
            .matmul(l.a.clone())
            .matmul(l.b.clone())
            * 2.0,
    );
    let (d, _) = max_diff(
        &dropped,
        &manual.iter().map(|x| *x as f64).collect::<Vec<_>>(),
    );
    assert!(
        d < 1e-6,
        "dropout forward differs from the manual product by {d:e}"
    );
    assert!(
        max_diff(
            &plain,
            &dropped.iter().map(|x| *x as f64).collect::<Vec<_>>()
        )
        .0 > 1e-3,
        "the mask changed the output"
    );

    // A model: the key changes training forwards only; None is inference.
    let mut model = checkpoint::load_model(&dir().join("base"), &dev).unwrap();
    model.load_lora(&dir().join("adapter")).unwrap();
    let ids: Vec<f64> = (1..9).map(|i| i as f64).collect();
    let logits = |m: &cria_core::Llama| to_vec(m.forward(ids_tensor(&ids, 1, 8, &dev), None));
    let mut keyed = model.clone();
    for layer in &mut keyed.layers {
        for (_, lin) in layer.projections_mut() {
            if let Some(l) = &mut lin.lora {
                l.dropout = 0.3;
            }
        }
    }
    let inference = logits(&keyed);
    let base = logits(&model);
    assert_eq!(inference, base, "no key: dropout is off");
    keyed.set_train_key(Some(5));
    let a = logits(&keyed);
    assert_eq!(a, logits(&keyed), "the same key draws the same masks");
    assert_ne!(a, base);
    keyed.set_train_key(Some(6));
    assert_ne!(a, logits(&keyed), "another micro-batch, another mask");
}
