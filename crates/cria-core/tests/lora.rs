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
