//! GGUF export against llama.cpp's facts: the quantizer's bytes (fixtures from libggml), the
//! metadata and tensor layout its loaders read, and its tokenisation of cria's exports
//! (scripts/ref/gguf_fixtures.py). scripts/check_gguf.py runs llama.cpp itself on exports.

use cria_core::checkpoint;
use cria_gguf::export::{ExportOptions, export};
use cria_gguf::quant::{self, GgmlType};
use cria_gguf::{GgufFile, Value};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn q8_0_and_q4_0_bytes_equal_llama_cpp_quantizer() {
    let cases: Json = cria_testkit::read_json(&fixtures().join("quant.json"));
    for (i, c) in cases.as_array().unwrap().iter().enumerate() {
        let x = cria_testkit::floats(&c["values"]);
        assert_eq!(
            hex(&quant::quantize_q8_0(&x)),
            c["q8_0"].as_str().unwrap(),
            "q8_0 case {i}"
        );
        assert_eq!(
            hex(&quant::quantize_q4_0(&x)),
            c["q4_0"].as_str().unwrap(),
            "q4_0 case {i}"
        );
    }
}

/// Each value decodes within half a step of its block's scale, except in q4_0 the values on
/// the other side from the extreme one, which the 16 codes (-8..7) clip by up to one step.
#[test]
fn blocks_decode_within_half_a_step() {
    let x = cria_testkit::rand_vec(256, 3);
    for (ty, steps, slack) in [(GgmlType::Q8_0, 127.0, 0.5), (GgmlType::Q4_0, 8.0, 1.0)] {
        let back = quant::decode(ty, &quant::encode(ty, &x)).unwrap();
        for (b, (xs, ys)) in x.chunks(32).zip(back.chunks(32)).enumerate() {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let step = amax / steps;
            for (a, y) in xs.iter().zip(ys) {
                // Half a step, plus the f16 rounding of the scale over up to 8 (or 127) steps.
                assert!(
                    (a - y).abs() <= step * slack + amax * 2e-3,
                    "{ty:?} block {b}: {a} vs {y}"
                );
            }
        }
    }
    let f16 = quant::decode(GgmlType::F16, &quant::encode(GgmlType::F16, &x)).unwrap();
    cria_testkit::assert_close_rel(&f16, &x, 1e-3, "f16");
}

fn load(name: &str) -> cria_core::model::Llama {
    checkpoint::load_model(
        &fixtures().join(name),
        &cria_core::device::inference_device(),
    )
    .unwrap()
}

fn exported(name: &str, quant: GgmlType, dir: &Path) -> GgufFile {
    let model = load(name);
    let out = dir.join(format!("{name}-{}.gguf", quant.name()));
    let template = std::fs::read_to_string(fixtures().join(name).join("chat_template.jinja")).ok();
    let opts = ExportOptions {
        quant,
        name: name.into(),
        chat_template: template,
    };
    export(&model, &fixtures().join(name), &opts, &out).unwrap();
    GgufFile::open(&out).unwrap()
}

fn u(f: &GgufFile, key: &str) -> u64 {
    f.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{key} missing"))
}

fn tensor_f32(f: &GgufFile, name: &str) -> Vec<f32> {
    let t = f.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
    quant::decode(t.ty, f.bytes(t)).unwrap()
}

#[test]
fn llama_export_has_llama_cpp_keys_names_and_rope_layout() {
    let dir = tempfile::tempdir().unwrap();
    let f = exported("llama", GgmlType::F32, dir.path());
    let model = load("llama");
    let cfg = &model.cfg;
    assert_eq!(f.version, 3);
    assert_eq!(
        f.get("general.architecture").unwrap().as_str(),
        Some("llama")
    );
    assert_eq!(u(&f, "general.file_type"), 0);
    assert_eq!(u(&f, "llama.block_count") as usize, cfg.num_hidden_layers);
    assert_eq!(u(&f, "llama.embedding_length") as usize, cfg.hidden_size);
    assert_eq!(
        u(&f, "llama.feed_forward_length") as usize,
        cfg.intermediate_size
    );
    assert_eq!(
        u(&f, "llama.attention.head_count") as usize,
        cfg.num_attention_heads
    );
    assert_eq!(
        u(&f, "llama.attention.head_count_kv") as usize,
        cfg.num_key_value_heads
    );
    assert_eq!(u(&f, "llama.rope.dimension_count") as usize, cfg.head_dim);
    assert_eq!(
        f.get("llama.rope.freq_base").unwrap().as_f64(),
        Some(500000.0)
    );
    assert_eq!(
        f.get("tokenizer.ggml.model").unwrap().as_str(),
        Some("gpt2")
    );
    assert_eq!(
        f.get("tokenizer.ggml.pre").unwrap().as_str(),
        Some("llama-bpe")
    );
    assert_eq!(
        f.get("tokenizer.ggml.add_bos_token").unwrap().as_bool(),
        Some(true)
    );
    assert!(
        f.get("tokenizer.chat_template")
            .unwrap()
            .as_str()
            .unwrap()
            .contains("start_header_id")
    );
    // Tokens in id order, the special ones marked as control tokens (type 3).
    let tok = checkpoint::load_tokenizer(&fixtures().join("llama"), cfg).unwrap();
    let tokens = f.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap();
    let types = f
        .get("tokenizer.ggml.token_type")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(tokens.len(), cfg.vocab_size);
    let bos = tok.bos_id.unwrap() as usize;
    assert_eq!(tokens[bos].as_str(), Some("<|begin_of_text|>"));
    assert_eq!(types[bos], Value::I32(3));
    assert_eq!(u(&f, "tokenizer.ggml.bos_token_id") as usize, bos);
    assert_eq!(types[300], Value::I32(1));
    assert!(
        !f.get("tokenizer.ggml.merges")
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty()
    );
    // 2 + 9 per layer (untied output head): every tensor, 1-D ones f32.
    assert_eq!(f.tensors.len(), 3 + 9 * cfg.num_hidden_layers);
    let named = checkpoint::named_tensors(&model);
    let (shape, w) = &named["model.layers.1.mlp.down_proj.weight"];
    let t = f.tensor("blk.1.ffn_down.weight").unwrap();
    assert_eq!(
        t.dims,
        [shape[1] as u64, shape[0] as u64],
        "ggml dims are innermost first"
    );
    assert_eq!(&tensor_f32(&f, "blk.1.ffn_down.weight"), w);
    assert_eq!(&tensor_f32(&f, "output.weight"), &named["lm_head.weight"].1);
    // q rows: head h's pair (j, j + hd/2) becomes rows (2j, 2j + 1).
    let (qs, q) = &named["model.layers.0.self_attn.q_proj.weight"];
    let cols = qs[1];
    let hd = cfg.head_dim;
    let got = tensor_f32(&f, "blk.0.attn_q.weight");
    for h in 0..cfg.num_attention_heads {
        for j in 0..hd / 2 {
            for (s, src) in [(0, h * hd + j), (1, h * hd + hd / 2 + j)] {
                let dst = h * hd + 2 * j + s;
                assert_eq!(
                    got[dst * cols..(dst + 1) * cols],
                    q[src * cols..(src + 1) * cols]
                );
            }
        }
    }
}

#[test]
fn qwen2_export_keeps_biases_rotate_half_and_pads_the_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let f = exported("qwen2", GgmlType::Q8_0, dir.path());
    let model = load("qwen2");
    let named = checkpoint::named_tensors(&model);
    assert_eq!(
        f.get("general.architecture").unwrap().as_str(),
        Some("qwen2")
    );
    assert_eq!(u(&f, "general.file_type"), 7);
    assert_eq!(u(&f, "general.quantization_version"), 2);
    assert_eq!(f.get("tokenizer.ggml.pre").unwrap().as_str(), Some("qwen2"));
    assert_eq!(
        f.get("tokenizer.ggml.add_bos_token").unwrap().as_bool(),
        Some(false)
    );
    // Tied embeddings: no output tensor; q/k/v biases in f32, unpermuted.
    assert!(f.tensor("output.weight").is_none());
    assert_eq!(f.tensor("blk.0.attn_q.bias").unwrap().ty, GgmlType::F32);
    assert_eq!(
        &tensor_f32(&f, "blk.0.attn_k.bias"),
        &named["model.layers.0.self_attn.k_proj.bias"].1
    );
    let t = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(t.ty, GgmlType::Q8_0);
    assert_eq!(
        f.bytes(t),
        quant::quantize_q8_0(&named["model.layers.0.self_attn.q_proj.weight"].1)
    );
    // Rows past the tokenizer are named padding, of type UNUSED (5).
    let tokens = f.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap();
    let types = f
        .get("tokenizer.ggml.token_type")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(tokens.len(), model.cfg.vocab_size);
    let last = tokens.len() - 1;
    assert_eq!(tokens[last].as_str().unwrap(), format!("[PAD{last}]"));
    assert_eq!(types[last], Value::I32(5));
}

#[test]
fn cria_tokenizes_as_llama_cpp_does_on_the_exports() {
    let ref_: Json = cria_testkit::read_json(&fixtures().join("llama_cpp.json"));
    for name in ["llama", "qwen2"] {
        let e = &ref_[name];
        let model = load(name);
        let tok = checkpoint::load_tokenizer(&fixtures().join(name), &model.cfg).unwrap();
        for (text, ids) in e["texts"]
            .as_array()
            .unwrap()
            .iter()
            .zip(e["tokens"].as_array().unwrap())
        {
            let want: Vec<u32> = ids
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                tok.encode(text.as_str().unwrap(), true).unwrap(),
                want,
                "{name}: {text}"
            );
        }
    }
}

#[test]
fn models_llama_cpp_cannot_run_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ExportOptions {
        quant: GgmlType::F16,
        name: "x".into(),
        chat_template: None,
    };
    let rm = load("llama").into_reward_model(0);
    let out = dir.path().join("rm.gguf");
    let err = export(&rm, &fixtures().join("llama"), &opts, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("score head"), "{err}");
    assert!(!out.exists(), "nothing written");
    // A tokenizer llama.cpp would split differently is refused, not exported wrongly.
    let tok_dir = dir.path().join("tok");
    std::fs::create_dir_all(&tok_dir).unwrap();
    let mut tj = cria_testkit::read_json(&fixtures().join("llama/tokenizer.json"));
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = Json::String(r"\w+|\s+".into());
    std::fs::write(tok_dir.join("tokenizer.json"), tj.to_string()).unwrap();
    let err = export(&load("llama"), &tok_dir, &opts, &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("pre_tokenizer"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn broken_files_are_named_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let f = exported("qwen2", GgmlType::Q4_0, dir.path());
    let bytes = f.raw().to_vec();
    let p = dir.path().join("broken.gguf");
    std::fs::write(&p, b"GGML not this").unwrap();
    let err = GgufFile::open(&p).err().unwrap().to_string();
    assert!(
        err.contains("broken.gguf") && err.contains("does not start with \"GGUF\""),
        "{err}"
    );
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let err = GgufFile::open(&p).err().unwrap().to_string();
    assert!(err.contains("past the end of the file"), "{err}");
    std::fs::write(&p, &bytes[..2000]).unwrap();
    let err = GgufFile::open(&p).err().unwrap().to_string();
    assert!(err.contains("ends inside"), "{err}");
    let mut v = bytes.clone();
    v[4..8].copy_from_slice(&9u32.to_le_bytes());
    std::fs::write(&p, &v).unwrap();
    let err = GgufFile::open(&p).err().unwrap().to_string();
    assert!(err.contains("version 9"), "{err}");
}
