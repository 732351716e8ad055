//! Malformed checkpoints give errors that name the file and the tensor or field at fault.

mod common;

use common::fixture;
use cria_core::{CoreError, checkpoint, device};
use std::path::Path;

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

fn llama_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_dir(&fixture("llama"), &dir);
    (tmp, dir)
}

fn load_err(dir: &Path) -> String {
    match checkpoint::load_model(dir, &device::inference_device()) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn missing_safetensors_names_the_directory_and_file() {
    let (_t, dir) = llama_copy();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("missing model.safetensors") && e.contains(&dir.display().to_string()),
        "{e}"
    );
}

#[test]
fn missing_config_names_the_file() {
    let (_t, dir) = llama_copy();
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert!(load_err(&dir).contains("missing config.json"));
}

#[test]
fn missing_shard_named_by_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_dir(&fixture("mistral_sharded"), &dir);
    std::fs::remove_file(dir.join("model-00003-of-00012.safetensors")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("model-00003-of-00012.safetensors"), "{e}");
}

#[test]
fn corrupt_safetensors_is_named() {
    let (_t, dir) = llama_copy();
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors file"),
        "{e}"
    );
}

#[test]
fn wrong_tensor_shape_names_tensor_and_shapes() {
    let (_t, dir) = llama_copy();
    edit_config(&dir, |c| {
        c.insert("intermediate_size".into(), 100.into());
    });
    let e = load_err(&dir);
    assert!(
        e.contains("gate_proj.weight") && e.contains("[112, 64]") && e.contains("[100, 64]"),
        "{e}"
    );
}

#[test]
fn unknown_architecture_is_rejected() {
    let (_t, dir) = llama_copy();
    edit_config(&dir, |c| {
        c.insert(
            "architectures".into(),
            serde_json::json!(["GPTNeoXForCausalLM"]),
        );
    });
    let e = load_err(&dir);
    assert!(
        e.contains("config.json")
            && e.contains("architectures")
            && e.contains("GPTNeoXForCausalLM"),
        "{e}"
    );
}

#[test]
fn unknown_config_key_is_rejected() {
    let (_t, dir) = llama_copy();
    edit_config(&dir, |c| {
        c.insert("attn_logit_softcapping".into(), 50.into());
    });
    let e = load_err(&dir);
    assert!(
        e.contains("attn_logit_softcapping") && e.contains("unknown config key"),
        "{e}"
    );
}

#[test]
fn unsupported_rope_type_is_rejected() {
    let (_t, dir) = llama_copy();
    edit_config(&dir, |c| {
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "yarn", "rope_theta": 10000.0}),
        );
    });
    let e = load_err(&dir);
    assert!(
        e.contains("rope_parameters.rope_type") && e.contains("yarn"),
        "{e}"
    );
}

#[test]
fn leftover_tensor_is_an_error() {
    // A Qwen2 checkpoint read with a LLaMA config: the q/k/v biases have no home.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_dir(&fixture("qwen2_bf16"), &dir);
    edit_config(&dir, |c| {
        c.insert(
            "architectures".into(),
            serde_json::json!(["LlamaForCausalLM"]),
        );
        c.insert("model_type".into(), "llama".into());
        for k in [
            "layer_types",
            "max_window_layers",
            "use_sliding_window",
            "sliding_window",
        ] {
            c.remove(k);
        }
    });
    let e = load_err(&dir);
    assert!(e.contains("unexpected tensor") && e.contains("bias"), "{e}");
}

#[test]
fn tokenizer_larger_than_vocab_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus: Vec<String> = (0..200)
        .map(|i| format!("word{i} another{i} text {i}"))
        .collect();
    let opts = cria_core::tokenizer::TrainOptions {
        vocab_size: 400,
        min_frequency: 1,
    };
    let tok = cria_core::tokenizer::train(corpus.into_iter(), &opts, tmp.path()).unwrap();
    let cfg = checkpoint::load_config(&fixture("llama")).unwrap();
    assert!(tok.vocab_size() > cfg.vocab_size);
    let e = checkpoint::check_vocab(&tok, &cfg, &tmp.path().join("tokenizer.json")).unwrap_err();
    assert!(matches!(e, CoreError::Tokenizer { .. }));
    assert!(
        e.to_string()
            .contains("does not fit the model's vocab_size 96"),
        "{e}"
    );
}

#[test]
fn invalid_json_config_is_named() {
    let (_t, dir) = llama_copy();
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("config.json") && e.contains("invalid JSON"),
        "{e}"
    );
}

fn copy_of(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_dir(&fixture(name), &dir);
    (tmp, dir)
}

#[test]
fn phi3_partial_rotary_and_longrope_are_refused() {
    // Phi-4-mini rotates 3/4 of each head; cria rotates whole heads only.
    let (_t, dir) = copy_of("phi3");
    edit_config(&dir, |c| {
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.75}),
        );
    });
    let e = load_err(&dir);
    assert!(
        e.contains("partial_rotary_factor") && e.contains("1.0"),
        "{e}"
    );
    // Phi-3's 128k models scale RoPE with longrope.
    edit_config(&dir, |c| {
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "longrope", "rope_theta": 10000.0,
                               "short_factor": [1.0], "long_factor": [1.0]}),
        );
    });
    let e = load_err(&dir);
    assert!(e.contains("rope_type") && e.contains("longrope"), "{e}");
}

#[test]
fn phi3_without_its_fused_tensor_names_it_and_lora_on_phi3_is_refused() {
    let (_t, dir) = copy_of("phi3");
    let model = checkpoint::load_model(&dir, &device::inference_device()).unwrap();
    let e = model
        .clone()
        .add_lora(&Default::default(), 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Phi-3") && e.contains("method = \"full\""),
        "{e}"
    );
    // A checkpoint with split projections is not Phi-3's layout.
    let mut tensors = checkpoint::named_tensors(&model);
    tensors.remove("model.layers.0.self_attn.q_proj.weight");
    cria_core::weights::save_safetensors(&dir.join("model.safetensors"), &tensors, None).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("model.layers.0.self_attn.qkv_proj.weight"),
        "{e}"
    );
}

#[test]
fn qwen3_missing_its_key_norm_names_the_tensor() {
    let (_t, dir) = copy_of("qwen3");
    let model = checkpoint::load_model(&dir, &device::inference_device()).unwrap();
    let mut tensors = checkpoint::named_tensors(&model);
    tensors.remove("model.layers.1.self_attn.k_norm.weight");
    cria_core::weights::save_safetensors(&dir.join("model.safetensors"), &tensors, None).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("model.layers.1.self_attn.k_norm.weight"), "{e}");
}

#[test]
fn interleaved_rope_is_refused() {
    let (_t, dir) = copy_of("smollm2");
    edit_config(&dir, |c| {
        c.insert("rope_interleaved".into(), true.into());
    });
    let e = load_err(&dir);
    assert!(
        e.contains("rope_interleaved") && e.contains("config.json"),
        "{e}"
    );
}

#[test]
fn gemma3_softcapping_and_bidirectional_attention_are_refused() {
    for (key, value) in [
        ("final_logit_softcapping", serde_json::json!(30.0)),
        ("attn_logit_softcapping", serde_json::json!(50.0)),
        ("use_bidirectional_attention", serde_json::json!(true)),
        ("hidden_activation", serde_json::json!("gelu")),
    ] {
        let (_t, dir) = copy_of("gemma3");
        edit_config(&dir, |c| {
            c.insert(key.into(), value.clone());
        });
        let e = load_err(&dir);
        assert!(e.contains(key) && e.contains("config.json"), "{key}: {e}");
    }
    // Gemma's keys mean nothing to other families: there they stay unknown.
    let (_t, dir) = llama_copy();
    edit_config(&dir, |c| {
        c.insert("query_pre_attn_scalar".into(), 32.into());
    });
    let e = load_err(&dir);
    assert!(
        e.contains("query_pre_attn_scalar") && e.contains("unknown config key"),
        "{e}"
    );
}
