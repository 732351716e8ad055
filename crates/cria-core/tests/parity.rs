//! cria's forward pass against transformers' logits on tiny random checkpoints written by
//! scripts/ref/model_fixtures.py: LLaMA (GQA, llama3 rope scaling, untied), the same with the
//! pre-v5 config spelling, Qwen2 (q/k/v bias, tied embeddings, MQA, bf16 weights) and Mistral
//! (sliding window 5 < 12 tokens, sharded safetensors), Qwen3 (q/k RMSNorm, head_dim 24 with
//! 4 heads of a 64-wide model), Phi-3 (fused qkv_proj and gate_up_proj, sliding window) and
//! Gemma 3 (scaled embeddings, (1 + w) norms, GeGLU, local and global layers);
//! and tied LLaMAs stored as
//! `safetensors.torch.save_model` writes them (scripts/ref/checkpoint_fixtures.py). Tolerance:
//! 1e-4 absolute on logits.

mod common;

use common::*;
use cria_core::params::to_vec;
use cria_core::{checkpoint, device};

const TOL: f64 = 1e-4;

fn check(name: &str) {
    let dir = fixture(name);
    let dev = device::inference_device();
    let model = checkpoint::load_model(&dir, &dev).unwrap();
    let reference = dir.join("reference.safetensors");
    let (shape, ids) = read_tensor(&reference, "input_ids");
    let (lshape, want) = read_tensor(&reference, "logits");
    let (b, t) = (shape[0], shape[1]);
    let got = to_vec(model.forward(ids_tensor(&ids, b, t, &dev), None));
    let (d, i) = max_diff(&got, &want);
    let v = lshape[2];
    println!(
        "{name}: max |diff| {d:.2e} at batch {} pos {} token {}",
        i / (t * v),
        (i / v) % t,
        i % v
    );
    assert!(
        d < TOL,
        "{name}: logits differ by {d:e} (> {TOL:e}) at flat index {i}"
    );

    // Incremental decoding with the KV cache gives the same logits as the full forward.
    let mut cache = model.new_cache();
    let mut inc = Vec::new();
    for b_i in 0..b {
        cache = model.new_cache();
        for p in 0..t {
            let one = ids_tensor(&ids[b_i * t + p..b_i * t + p + 1], 1, 1, &dev);
            inc.push(to_vec(model.forward(one, Some(&mut cache))));
        }
    }
    assert_eq!(cache.len(), t);
    let inc: Vec<f32> = inc.concat();
    let (d, i) = max_diff(&inc, &want);
    assert!(
        d < TOL,
        "{name}: cached decoding differs by {d:e} at flat index {i}"
    );
}

#[test]
fn llama_gqa_llama3_rope_matches_transformers() {
    check("llama");
}

#[test]
fn llama_old_config_spelling_matches_transformers() {
    check("llama_old_config");
    let new = checkpoint::load_config(&fixture("llama")).unwrap();
    let old = checkpoint::load_config(&fixture("llama_old_config")).unwrap();
    assert_eq!(new, old);
}

#[test]
fn qwen2_bias_tied_bf16_matches_transformers() {
    check("qwen2_bf16");
}

#[test]
fn mistral_sliding_window_sharded_matches_transformers() {
    let cfg = checkpoint::load_config(&fixture("mistral_sharded")).unwrap();
    assert_eq!(cfg.sliding_window, vec![Some(5), Some(5)]);
    check("mistral_sharded");
}

#[test]
fn qwen3_qk_norm_and_wide_heads_match_transformers() {
    let cfg = checkpoint::load_config(&fixture("qwen3")).unwrap();
    assert!(cfg.qk_norm && !cfg.qkv_bias);
    assert_eq!(
        cfg.head_dim, 24,
        "head_dim as given, not hidden_size / heads"
    );
    check("qwen3");
}

#[test]
fn phi3_fused_projections_and_sliding_window_match_transformers() {
    let cfg = checkpoint::load_config(&fixture("phi3")).unwrap();
    assert_eq!(cfg.sliding_window, vec![Some(5), Some(5)]);
    check("phi3");
}

/// Saving writes the family's own layout (Phi-3's fused tensors, Qwen3's norms) and loading
/// it back gives the same weights and config.
#[test]
fn qwen3_phi3_and_gemma3_round_trip_through_cria_save_in_their_own_layout() {
    let dev = device::inference_device();
    for (name, must_have) in [
        ("qwen3", "model.layers.1.self_attn.k_norm.weight"),
        ("phi3", "model.layers.1.mlp.gate_up_proj.weight"),
        ("gemma3", "model.layers.2.post_feedforward_layernorm.weight"),
    ] {
        let model = checkpoint::load_model(&fixture(name), &dev).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("ckpt");
        checkpoint::save(&model, &out, Default::default()).unwrap();
        let mut ours = cria_core::weights::WeightMap::default();
        cria_core::weights::WeightMap::read_file(&out.join("model.safetensors"), &mut ours)
            .unwrap();
        let mut theirs = cria_core::weights::WeightMap::default();
        cria_core::weights::WeightMap::read_file(
            &fixture(name).join("model.safetensors"),
            &mut theirs,
        )
        .unwrap();
        let mut a: Vec<&String> = ours.tensors.keys().collect();
        let mut b: Vec<&String> = theirs.tensors.keys().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{name}: the tensor names transformers wrote");
        assert!(ours.tensors.contains_key(must_have), "{name}");
        for (k, t) in &theirs.tensors {
            assert_eq!(ours.tensors[k].data, t.data, "{name}: {k}");
        }
        let again = checkpoint::load_model(&out, &dev).unwrap();
        assert_eq!(again.cfg, model.cfg, "{name}");
        // transformers validates Gemma 3's scalar as an integer (checked by loading these
        // exports with transformers: identical logits for all three).
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        if name == "gemma3" {
            assert_eq!(cfg["query_pre_attn_scalar"], serde_json::json!(32));
            assert_eq!(cfg["layer_types"][1], "full_attention");
            assert!(cfg.get("hidden_act").is_none());
        }
    }
}

#[test]
fn gemma3_local_and_global_layers_match_transformers() {
    let cfg = checkpoint::load_config(&fixture("gemma3")).unwrap();
    assert_eq!(cfg.sliding_window, vec![Some(5), None, Some(5)]);
    assert_eq!(cfg.extras.local_rope_theta, Some(10000.0));
    assert_eq!(cfg.extras.query_pre_attn_scalar, Some(32.0));
    assert!(cfg.extras.norm_plus_one && cfg.extras.gelu_gate && cfg.extras.sandwich_norms);
    check("gemma3");
}

#[test]
fn smollm2_config_as_shipped_matches_transformers() {
    check("smollm2");
}

#[test]
fn tied_embeddings_stored_as_lm_head_with_alias_metadata_load() {
    check("llama_tied_lm_head");
}

#[test]
fn tied_embeddings_stored_only_as_lm_head_load() {
    check("llama_tied_lm_head_only");
}

#[test]
fn save_then_load_roundtrips_exactly() {
    let dev = device::inference_device();
    let model = checkpoint::load_model(&fixture("qwen2_bf16"), &dev).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ckpt");
    checkpoint::save(&model, &out, Default::default()).unwrap();
    let again = checkpoint::load_model(&out, &dev).unwrap();
    assert_eq!(again.cfg, model.cfg);
    let a = checkpoint::named_tensors(&model);
    let b = checkpoint::named_tensors(&again);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, (s, v)) in &a {
        assert_eq!(&b[k].0, s, "{k}");
        assert_eq!(&b[k].1, v, "{k}");
    }
    // No staging directory is left behind.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("ckpt")]);
}

#[test]
fn hf_tokenizer_and_greedy_decoding_match_transformers() {
    use cria_core::generate::{GenerateOptions, generate};
    let dir = fixture("llama");
    let exp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("greedy.json")).unwrap()).unwrap();
    let ids = |k: &str| -> Vec<u32> {
        exp[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    };
    let dev = device::inference_device();
    let model = checkpoint::load_model(&dir, &dev).unwrap();
    // A whitespace BPE (not byte-level) whose template post-processor adds <s>, as LLaMA's does.
    let tok = checkpoint::load_tokenizer(&dir, &model.cfg).unwrap();
    let prompt = tok.encode(exp["prompt"].as_str().unwrap(), true).unwrap();
    assert_eq!(
        prompt,
        ids("prompt_ids"),
        "prompt encoded as transformers encodes it"
    );
    let opts = GenerateOptions {
        max_new_tokens: 12,
        sampling: Default::default(),
        stop_ids: vec![],
    };
    let (out, _) = generate(&model, &prompt, &opts, |_| true).unwrap();
    assert_eq!(
        out,
        ids("greedy_ids"),
        "greedy continuation token for token"
    );
}

#[test]
fn batched_generation_with_left_padding_equals_one_prompt_at_a_time() {
    use cria_core::generate::{Finish, GenerateOptions, generate, generate_batch};
    use cria_core::sampling::SamplingParams;
    for name in ["llama", "mistral_sharded", "qwen3", "phi3", "gemma3"] {
        let dev = device::inference_device();
        let model = checkpoint::load_model(&fixture(name), &dev).unwrap();
        // The last prompt repeats the second (k replies to one prompt): prefilled once, its
        // rows still sample with their own seeds.
        let prompts: Vec<Vec<u32>> = vec![
            vec![5, 9, 2, 7, 11, 3, 8],
            vec![4, 6],
            vec![12, 1, 9, 9, 3],
            vec![4, 6],
        ];
        for sampling in [
            SamplingParams::default(),
            SamplingParams {
                temperature: 0.9,
                top_k: Some(20),
                top_p: Some(0.95),
                seed: 0,
                ..Default::default()
            },
        ] {
            let opts = GenerateOptions {
                max_new_tokens: 10,
                sampling: sampling.clone(),
                stop_ids: vec![3],
            };
            let seeds = [11, 12, 13, 14];
            let batched = generate_batch(&model, &prompts, &opts, &seeds, 0).unwrap();
            for ((p, &seed), (ids, finish)) in prompts.iter().zip(&seeds).zip(&batched) {
                let one = GenerateOptions {
                    max_new_tokens: 10,
                    sampling: SamplingParams {
                        seed,
                        ..sampling.clone()
                    },
                    stop_ids: vec![3],
                };
                let (alone, why) = generate(&model, p, &one, |_| true).unwrap();
                assert_eq!(ids, &alone, "{name}: prompt {p:?}");
                assert_eq!(*finish, why);
                assert_eq!(*finish == Finish::Stop, ids.last() == Some(&3));
            }
        }
    }
}

#[test]
fn scored_batched_generation_gives_a_forward_pass_log_probabilities() {
    // What RL uses as its old-policy log-probabilities: each sampled id's log-probability at the
    // sampling temperature, from the decode step that drew it (left-padded, KV cache), equals
    // the log-softmax of one full forward pass over prompt + reply at that id.
    use cria_core::generate::{Finish, GenerateOptions, generate_batch, generate_batch_scored};
    use cria_core::sampling::SamplingParams;
    use cria_core::{Int, Tensor, TensorData};
    let dev = device::inference_device();
    let model = checkpoint::load_model(&fixture("llama"), &dev).unwrap();
    let prompts: Vec<Vec<u32>> = vec![vec![5, 9, 2, 7, 11, 3, 8], vec![4, 6], vec![12, 1, 9]];
    let temperature = 0.7;
    let opts = GenerateOptions {
        max_new_tokens: 8,
        // top_k truncates what is sampled from, not the distribution the log-probs are of.
        sampling: SamplingParams {
            temperature,
            top_k: Some(30),
            seed: 0,
            ..Default::default()
        },
        stop_ids: vec![3],
    };
    let seeds = [21, 22, 23];
    let scored = generate_batch_scored(&model, &prompts, &opts, &seeds, 0).unwrap();
    let plain = generate_batch(&model, &prompts, &opts, &seeds, 0).unwrap();
    for ((p, s), (ids, finish)) in prompts.iter().zip(&scored).zip(&plain) {
        assert_eq!(
            (&s.ids, s.finish),
            (ids, *finish),
            "scoring changes no sample"
        );
        assert_eq!(s.logps.len(), s.ids.len());
        assert_eq!(s.finish == Finish::Stop, s.ids.last() == Some(&3));
        let seq: Vec<i64> = p.iter().chain(&s.ids).map(|x| *x as i64).collect();
        let n = seq.len();
        let input = Tensor::<2, Int>::from_data(TensorData::new(seq.clone(), [1, n]), &dev);
        let logits = to_vec(model.forward(input, None));
        let v = logits.len() / n;
        for (j, (&id, &got)) in s.ids.iter().zip(&s.logps).enumerate() {
            let row = &logits[(p.len() + j - 1) * v..(p.len() + j) * v];
            let scaled: Vec<f64> = row.iter().map(|x| *x as f64 / temperature).collect();
            let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + scaled.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            let want = scaled[id as usize] - lse;
            assert!(
                (got as f64 - want).abs() < TOL,
                "prompt {p:?} token {j}: {got} sampled, {want} from a forward pass"
            );
        }
    }
}

#[test]
fn reward_models_score_the_token_transformers_scores() {
    // pad id = EOS id (scripts/ref/checkpoint_fixtures.py): rows ending in EOS, padded with
    // it, holding it inside, and left-padded; transformers reads the rightmost non-pad token.
    let dir = fixture("rm_pad_is_eos");
    let dev = device::inference_device();
    let model = checkpoint::load_model(&dir, &dev).unwrap();
    let reference = dir.join("reference.safetensors");
    let (shape, ids) = read_tensor(&reference, "input_ids");
    let (_, want) = read_tensor(&reference, "scores");
    let (b, t) = (shape[0], shape[1]);
    let ids_u: Vec<u32> = ids.iter().map(|x| *x as u32).collect();
    let at = model.reward_positions(&ids_u, t, &vec![t; b]);
    assert_eq!(at, vec![4, 2, 3, 5, 5]);
    let got = to_vec(model.rewards(ids_tensor(&ids, b, t, &dev), &at));
    let (d, i) = max_diff(&got, &want);
    assert!(
        d < TOL,
        "row {i}: reward differs from transformers' by {d:e}"
    );
    // Saved by cria, the model keeps the pad id its pooling depends on.
    let tmp = tempfile::tempdir().unwrap();
    checkpoint::save(&model, tmp.path(), Default::default()).unwrap();
    let back = checkpoint::load_model(tmp.path(), &dev).unwrap();
    assert_eq!(back.cfg.pad_token_id, Some(2));
}

#[test]
fn qwen3_phi3_and_gemma3_greedy_decoding_matches_transformers() {
    use cria_core::generate::{GenerateOptions, generate};
    let dev = device::inference_device();
    for name in ["qwen3", "phi3", "gemma3"] {
        let dir = fixture(name);
        let exp: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("greedy.json")).unwrap()).unwrap();
        let ids = |k: &str| -> Vec<u32> { serde_json::from_value(exp[k].clone()).unwrap() };
        let model = checkpoint::load_model(&dir, &dev).unwrap();
        let opts = GenerateOptions {
            max_new_tokens: 12,
            sampling: Default::default(),
            stop_ids: vec![],
        };
        let (out, _) = generate(&model, &ids("prompt_ids"), &opts, |_| true).unwrap();
        assert_eq!(out, ids("greedy_ids"), "{name}: token for token");
    }
}

/// The family's own name for a parameter in transformers: Phi-3's split projections are parts
/// of its fused ones.
fn fused_name(name: &str) -> String {
    [
        ("self_attn.q_proj.", "self_attn.qkv_proj."),
        ("self_attn.k_proj.", "self_attn.qkv_proj."),
        ("self_attn.v_proj.", "self_attn.qkv_proj."),
        ("mlp.gate_proj.", "mlp.gate_up_proj."),
        ("mlp.up_proj.", "mlp.gate_up_proj."),
    ]
    .iter()
    .find(|(part, _)| name.contains(part))
    .map_or(name.to_string(), |(part, whole)| name.replace(part, whole))
}

/// Training goes through the new layers too: the next-token loss and every parameter's
/// gradient norm equal PyTorch's (scripts/ref/model_fixtures.py, grads.json), within 1e-5
/// relative on the loss and 1e-4 on each norm.
#[test]
fn qwen3_phi3_and_gemma3_gradients_match_pytorch() {
    use cria_core::params::{ParamMut, Params};
    let dev = device::training_device();
    for name in ["qwen3", "phi3", "gemma3"] {
        let dir = fixture(name);
        let exp: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("grads.json")).unwrap()).unwrap();
        let mut model = checkpoint::load_model(&dir, &device::inference_device())
            .unwrap()
            .to_device(&dev)
            .require_grad();
        let (shape, ids) = read_tensor(&dir.join("reference.safetensors"), "input_ids");
        let (b, t) = (shape[0], shape[1]);
        let row = |lo: usize, hi: usize| -> Vec<f64> {
            (0..b)
                .flat_map(|i| ids[i * t + lo..i * t + hi].to_vec())
                .collect()
        };
        let input = ids_tensor(&row(0, t - 1), b, t - 1, &dev);
        let target = ids_tensor(&row(1, t), b, t - 1, &dev);
        let loss = cria_core::model::cross_entropy(model.forward(input, None), target, None);
        let value = loss.clone().into_scalar::<f32>() as f64;
        let want = exp["loss"].as_f64().unwrap();
        assert!(
            (value - want).abs() / want < 1e-5,
            "{name}: loss {value} vs {want}"
        );
        let grads = loss.backward();
        let mut sq: std::collections::BTreeMap<String, f64> = Default::default();
        model.visit("", &mut |n, p| {
            let g = match &p {
                ParamMut::Vector(t) => t.grad(&grads).map(to_vec),
                ParamMut::Matrix { t, .. } => t.grad(&grads).map(to_vec),
            };
            let g = g.unwrap_or_else(|| panic!("{name}: {n} received no gradient"));
            let key = if name == "phi3" {
                fused_name(n)
            } else {
                n.to_string()
            };
            *sq.entry(key).or_default() += g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
        });
        let want = exp["grad_norms"].as_object().unwrap();
        assert_eq!(sq.len(), want.len(), "{name}: every parameter");
        for (n, s) in &sq {
            let w = want[n]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: {n} not in PyTorch's"));
            let r = (s.sqrt() - w).abs() / w.max(1e-12);
            assert!(r < 1e-4, "{name}: gradient norm of {n} off by {r:e}");
        }
    }
}
