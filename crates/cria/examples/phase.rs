use cria_core::config::{Arch, ModelConfig};
use cria_core::weights::VarBuilder;
use cria_core::{Llama, device, Tensor, TensorData, Int};
use cria_core::model::cross_entropy;
use cria_core::params::{Params, ParamMut, to_vec};
use std::time::Instant;
#[path = "../src/alloc.rs"]
mod alloc;
fn main() {
    let cfg = ModelConfig { arch: Arch::Llama, vocab_size: 4096, hidden_size: 384, intermediate_size: 1024, num_hidden_layers: 6, num_attention_heads: 6, num_key_value_heads: 6, head_dim: 64, rms_norm_eps: 1e-5, rope_theta: 10000.0, rope_scaling: None, max_position_embeddings: 1024, tie_word_embeddings: false, qkv_bias: false, o_bias: false, mlp_bias: false, sliding_window: vec![None; 6], initializer_range: 0.02, bos_token_id: None, eos_token_id: vec![], pad_token_id: None };
    let mut vb = VarBuilder::init(0, 0.02, &device::inference_device());
    let dev = device::training_device();
    let mut model = Llama::new(&cfg, &mut vb).unwrap().to_device(&dev).require_grad();
    let ids: Vec<i64> = (0..8*256).map(|i| (i * 7919 % 4096) as i64).collect();
    for it in 0..4 {
        let t0 = Instant::now();
        let x = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [8, 256]), &dev);
        let y = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [8, 256]), &dev);
        let logits = model.forward(x, None);
        let loss = cross_entropy(logits, y, None);
        let v = loss.clone().into_scalar::<f32>();
        let t1 = Instant::now();
        let g = loss.backward();
        let t2 = Instant::now();
        let mut n = 0usize;
        model.visit("", &mut |_, p| { let gr = match &p { ParamMut::Vector(t) => t.grad(&g).map(to_vec), ParamMut::Matrix{t,..} => t.grad(&g).map(to_vec) }; n += gr.unwrap().len(); });
        let t3 = Instant::now();
        eprintln!("it {it} loss {v:.3} fwd {:.3}s bwd {:.3}s grads {:.3}s ({n})", (t1-t0).as_secs_f64(), (t2-t1).as_secs_f64(), (t3-t2).as_secs_f64());
    }
}
