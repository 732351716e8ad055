//! The tokenizer embedded in a GGUF file (`tokenizer.ggml.*`), rebuilt as a Hugging Face
//! tokenizer: byte-level BPE (`gpt2`) with the pre-tokenizer llama.cpp names in
//! `tokenizer.ggml.pre`, control and user-defined tokens as added tokens, BOS prepended when
//! `add_bos_token` says so.

use crate::error::{GgufError, Result};
use crate::export::PRE_TOKENIZERS;
use crate::format::{GgufFile, Value};
use cria_core::tokenizer::Tokenizer;
use serde_json::{Map, Value as Json, json};

fn strings<'a>(f: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    f.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| GgufError::model(&f.path, format!("metadata {key} is missing")))?
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| GgufError::model(&f.path, format!("{key} holds a non-string")))
        })
        .collect()
}

/// The file's tokenizer.
pub fn tokenizer(f: &GgufFile) -> Result<Tokenizer> {
    let bad = |msg: String| GgufError::model(&f.path, msg);
    let model = f
        .get("tokenizer.ggml.model")
        .and_then(Value::as_str)
        .unwrap_or("");
    if model != "gpt2" {
        return Err(bad(format!(
            "tokenizer.ggml.model is {model:?}: cria reads byte-level BPE (\"gpt2\") tokenizers from GGUF files (not SentencePiece \"llama\" ones yet)"
        )));
    }
    let pre = f
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
    let (vocab, added) = vocabulary(f, &tokens);
    let merges = strings(f, "tokenizer.ggml.merges")?;
    let id_of = |key: &str| f.get(key).and_then(Value::as_u64).map(|v| v as u32);
    let bos = id_of("tokenizer.ggml.bos_token_id");
    let normalizer = if pre == "qwen2" {
        json!({"type": "NFC"})
    } else {
        Json::Null
    };
    let tj = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added, "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer(pre).map_err(bad)?,
        "post_processor": post_processor(f, &tokens, bos),
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": pre == "llama-bpe", "vocab": vocab, "merges": merges},
    });
    let inner: tokenizers::Tokenizer = tj
        .to_string()
        .parse()
        .map_err(|e| bad(format!("its tokenizer does not rebuild: {e}")))?;
    Ok(Tokenizer {
        inner,
        path: f.path.clone(),
        eos_id: id_of("tokenizer.ggml.eos_token_id"),
        bos_id: bos,
        pad_id_named: id_of("tokenizer.ggml.padding_token_id"),
    })
}

/// The pre-tokenizer llama.cpp's `tokenizer.ggml.pre` names, as tokenizer.json writes it.
fn pre_tokenizer(pre: &str) -> std::result::Result<Json, String> {
    Ok(match pre {
        "gpt-2" | "default" => {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
        }
        name => match PRE_TOKENIZERS.iter().find(|(n, _)| *n == name) {
            Some((_, re)) => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
            ]}),
            None => {
                return Err(format!(
                    "tokenizer.ggml.pre {name:?}: cria knows gpt-2, llama-bpe and qwen2"
                ));
            }
        },
    })
}

/// The BPE vocabulary and the added tokens (control and user-defined), from the tokens and
/// their types; unused padding rows are left out.
fn vocabulary(f: &GgufFile, tokens: &[&str]) -> (Map<String, Json>, Vec<Json>) {
    let types: Vec<i64> = match f.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
        Some(a) => a
            .iter()
            .map(|v| match v {
                Value::I32(x) => *x as i64,
                other => other.as_u64().map_or(1, |x| x as i64),
            })
            .collect(),
        None => vec![1; tokens.len()],
    };
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        match types.get(id).copied().unwrap_or(1) {
            5 => {} // unused padding rows
            t @ (3 | 4) => {
                vocab.insert(tok.to_string(), json!(id));
                added.push(
                    json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": t == 3}),
                );
            }
            _ => {
                vocab.insert(tok.to_string(), json!(id));
            }
        }
    }
    (vocab, added)
}

/// BOS before every text when `tokenizer.ggml.add_bos_token` says so.
fn post_processor(f: &GgufFile, tokens: &[&str], bos: Option<u32>) -> Json {
    let add_bos = f
        .get("tokenizer.ggml.add_bos_token")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match (add_bos, bos) {
        (true, Some(b)) => {
            let t = tokens.get(b as usize).copied().unwrap_or_default();
            json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}],
                "special_tokens": {t: {"id": t, "ids": [b], "tokens": [t]}}})
        }
        _ => Json::Null,
    }
}

/// Ids that end a reply: end-of-sequence, end-of-turn, and the end-of-turn tokens llama.cpp
/// recognises by their text (ChatML's, LLaMA 3's, cria's).
pub fn stop_ids(f: &GgufFile, tok: &Tokenizer) -> Vec<u32> {
    let mut ids: Vec<u32> = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
        .iter()
        .filter_map(|k| f.get(k).and_then(Value::as_u64).map(|v| v as u32))
        .collect();
    for t in [
        "<|im_end|>",
        "<|eot_id|>",
        "<|end_of_turn|>",
        "<|endoftext|>",
        "<|end_of_text|>",
    ] {
        ids.extend(tok.token_to_id(t));
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}
