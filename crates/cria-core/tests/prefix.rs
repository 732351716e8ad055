//! LLaMA-Adapter: at step 0 (zero gates) the model is exactly the base model; only the gates
//! get a gradient then (the prompts' contribution is multiplied by tanh(0) = 0); a trained
//! adapter saves separately from the base and reloads with the same logits.

mod common;

use common::*;
use cria_core::model::cross_entropy;
use cria_core::nn::prefix::{PrefixConfig, is_prefix_param};
use cria_core::params::{ParamMut, Params, to_vec};
use cria_core::{Tensor, TensorData, checkpoint, device};

fn ids() -> (Vec<f64>, usize, usize) {
    let (shape, ids) = read_tensor(&fixture("llama").join("reference.safetensors"), "input_ids");
    (ids, shape[0], shape[1])
}

#[test]
fn step_zero_is_the_base_model_and_only_gates_get_gradients() {
    let inf = device::inference_device();
    let base = checkpoint::load_model(&fixture("llama"), &inf).unwrap();
    let (x, b, t) = ids();
    let want = to_vec(base.forward(ids_tensor(&x, b, t, &inf), None));
    let mut m = base.clone();
    m.add_prefix_adapter(&PrefixConfig { len: 4, layers: 1 }, 3)
        .unwrap();
    assert!(
        m.layers[0].self_attn.prefix.is_none() && m.layers[1].self_attn.prefix.is_some(),
        "top layer only"
    );
    assert_eq!(
        to_vec(m.forward(ids_tensor(&x, b, t, &inf), None)),
        want,
        "exactly the base logits"
    );

    let dev = device::training_device();
    let mut tm = m.to_device(&dev).require_grad_where(&is_prefix_param);
    let inputs: Vec<f64> = x.clone();
    let loss = cross_entropy(
        tm.forward(ids_tensor(&inputs, b, t, &dev), None),
        ids_tensor(&inputs, b, t, &dev),
        None,
    );
    let grads = loss.backward();
    let mut seen = vec![];
    tm.visit("", &mut |name, p| {
        let g = match &p {
            ParamMut::Vector(t) => t.grad(&grads).map(to_vec),
            ParamMut::Matrix { t, .. } => t.grad(&grads).map(to_vec),
        };
        if let Some(g) = g {
            let norm: f32 = g.iter().map(|v| v * v).sum::<f32>().sqrt();
            seen.push((name.to_string(), norm));
        }
    });
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "model.layers.1.self_attn.adapter_prompt",
            "model.layers.1.self_attn.adapter_gate"
        ]
    );
    assert_eq!(seen[0].1, 0.0, "the prompt is gated off at step 0");
    assert!(seen[1].1 > 0.0, "the gate learns first");
}

#[test]
fn adapter_saves_apart_from_the_base_and_reloads() {
    let inf = device::inference_device();
    let mut m = checkpoint::load_model(&fixture("llama"), &inf).unwrap();
    let cfg = PrefixConfig { len: 3, layers: 2 };
    m.add_prefix_adapter(&cfg, 9).unwrap();
    for block in &mut m.layers {
        let p = block.self_attn.prefix.as_mut().unwrap();
        p.gate = Tensor::from_data(TensorData::new(vec![0.5f32, -0.3, 0.8, 0.1], [4]), &inf);
    }
    let (x, b, t) = ids();
    let want = to_vec(m.forward(ids_tensor(&x, b, t, &inf), None));
    let base_logits = to_vec(
        checkpoint::load_model(&fixture("llama"), &inf)
            .unwrap()
            .forward(ids_tensor(&x, b, t, &inf), None),
    );
    assert_ne!(want, base_logits, "open gates change the output");
    let tmp = tempfile::tempdir().unwrap();
    m.save_prefix_adapter(&cfg, "llama", tmp.path()).unwrap();
    let saved = weights(&tmp.path().join("adapter_model.safetensors"));
    assert_eq!(
        saved.tensors.len(),
        4,
        "prompts and gates only, not the base"
    );
    let mut again = checkpoint::load_model(&fixture("llama"), &inf).unwrap();
    again.load_adapter(tmp.path()).unwrap();
    assert_eq!(
        to_vec(again.forward(ids_tensor(&x, b, t, &inf), None)),
        want
    );
}
