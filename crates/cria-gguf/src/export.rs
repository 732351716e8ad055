//! A cria (Hugging Face layout) model as a GGUF file llama.cpp and ollama load: the metadata
//! keys of its architecture (`llama` for LLaMA and Mistral, `qwen2` for Qwen2), llama.cpp's
//! tensor names, LLaMA's q/k rows permuted to the pairwise RoPE layout llama.cpp's `llama`
//! graph uses (Qwen2 keeps Hugging Face's rotate-half, which llama.cpp's `qwen2` graph uses),
//! the byte-level BPE tokenizer embedded as `gpt2` with its pre-tokenizer's name, and the
//! checkpoint's chat template.

use crate::error::{GgufError, Result};
use crate::format::{TensorOut, Value, Writer};
use crate::quant::{self, GgmlType};
use cria_core::config::{Arch, Head, ModelConfig, RopeScaling};
use cria_core::model::Llama;
use rayon::prelude::*;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// GGUF's `tokenizer.ggml.token_type` values.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// Pre-tokenizer regexes of byte-level BPE tokenizers and the names llama.cpp knows them by.
pub(crate) const PRE_TOKENIZERS: [(&str, &str); 2] = [
    (
        "llama-bpe",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    (
        "qwen2",
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
];

pub struct ExportOptions {
    /// The type of the 2-D weights (f32, f16, q8_0, q4_0); norms and biases stay f32.
    pub quant: GgmlType,
    /// `general.name`.
    pub name: String,
    /// The checkpoint's chat template (Jinja), embedded as `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

/// What was written.
#[derive(Debug, Default)]
pub struct ExportReport {
    pub tensors: usize,
    /// Tensors per ggml type name.
    pub by_type: BTreeMap<String, usize>,
    /// Matrices kept in f16 because their rows are not whole 32-value blocks.
    pub fallbacks: Vec<String>,
    pub bytes: u64,
    pub arch: &'static str,
    /// Notes for the user (a context shortened to a sliding window, …).
    pub notes: Vec<String>,
}

/// The `general.file_type` of a file whose matrices are mostly `ty`.
fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q8_0 => 7,
        GgmlType::Bf16 => 32,
        GgmlType::Other(i) => panic!("no file type for ggml type {i}"),
    }
}

/// llama.cpp's architecture name for `cfg`, or why it cannot be exported.
fn arch_name(cfg: &ModelConfig) -> Result<&'static str> {
    let what = cfg.arch.class_name_with(cfg.head);
    if cfg.head != Head::Lm {
        return Err(GgufError::export(
            what,
            "a reward or value model (score head) has no runtime in llama.cpp; export the policy",
        ));
    }
    let arch = match cfg.arch {
        Arch::Llama | Arch::Mistral => "llama",
        Arch::Qwen2 => "qwen2",
        Arch::Qwen3 | Arch::Phi3 | Arch::Gemma3 => {
            return Err(GgufError::export(
                what,
                "cria writes GGUF for LLaMA, Mistral and Qwen2 checkpoints so far",
            ));
        }
    };
    if cfg.extras != Default::default() || cfg.qk_norm {
        return Err(GgufError::export(
            what,
            "layer options beyond LLaMA's (Gemma-style norms or q/k norms)",
        ));
    }
    if let Some(RopeScaling::Llama3 { .. }) = cfg.rope_scaling {
        return Err(GgufError::export(
            what,
            "LLaMA 3.1's rope scaling (rope_freqs) is not exported yet",
        ));
    }
    Ok(arch)
}

/// llama.cpp's name for a Hugging Face tensor name.
fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let short = match module {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "post_attention_layernorm" => "ffn_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}.{kind}"))
}

/// Reorders the rows of a q or k projection (weight `[heads·hd, in]` or bias `[heads·hd]`)
/// from Hugging Face's rotate-half layout (a head's first half pairs with its second half) to
/// interleaved pairs (rows 2j, 2j+1), the layout llama.cpp's `llama` graph rotates.
fn permute_rope_rows(data: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let rows = data.len() / cols;
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                let src = h * hd + s * half + j;
                let dst = h * hd + 2 * j + s;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Writes `model` (adapters merged already) with the tokenizer of `tokenizer_dir` to `out`.
pub fn export(
    model: &Llama,
    tokenizer_dir: &Path,
    opts: &ExportOptions,
    out: &Path,
) -> Result<ExportReport> {
    let cfg = &model.cfg;
    let arch = arch_name(cfg)?;
    let mut w = Writer::default();
    let mut report = ExportReport {
        arch,
        ..Default::default()
    };
    model_metadata(&mut w, cfg, arch, opts, &mut report);
    tokenizer_metadata(&mut w, cfg, tokenizer_dir)?;
    if let Some(t) = &opts.chat_template {
        w.set("tokenizer.chat_template", Value::Str(t.clone()));
    }
    for c in convert_tensors(model, arch, opts.quant) {
        let (t, fallback) = c?;
        *report.by_type.entry(t.ty.name()).or_default() += 1;
        report.bytes += t.data.len() as u64;
        report.fallbacks.extend(fallback);
        w.tensors.push(t);
    }
    report.tensors = w.tensors.len();
    w.write(out)?;
    Ok(report)
}

/// The `general.*` keys and the architecture's shape keys.
fn model_metadata(
    w: &mut Writer,
    cfg: &ModelConfig,
    arch: &'static str,
    opts: &ExportOptions,
    report: &mut ExportReport,
) {
    w.set("general.architecture", Value::Str(arch.into()));
    w.set("general.type", Value::Str("model".into()));
    w.set("general.name", Value::Str(opts.name.clone()));
    w.set("general.file_type", Value::U32(file_type(opts.quant)));
    if opts.quant.is_quantized() {
        w.set("general.quantization_version", Value::U32(2));
    }
    let mut ctx = cfg.max_position_embeddings;
    if let Some(win) = cfg.sliding_window.iter().flatten().min().copied()
        && win < ctx
    {
        report.notes.push(format!(
            "context_length set to the sliding window ({win} tokens): llama.cpp's {arch} graph attends to every cached key, which equals the checkpoint only within one window"
        ));
        ctx = win;
    }
    let u = |v: usize| Value::U32(v as u32);
    let k = |s: &str| format!("{arch}.{s}");
    w.set(&k("vocab_size"), u(cfg.vocab_size));
    w.set(&k("context_length"), u(ctx));
    w.set(&k("embedding_length"), u(cfg.hidden_size));
    w.set(&k("block_count"), u(cfg.num_hidden_layers));
    w.set(&k("feed_forward_length"), u(cfg.intermediate_size));
    w.set(&k("attention.head_count"), u(cfg.num_attention_heads));
    w.set(&k("attention.head_count_kv"), u(cfg.num_key_value_heads));
    w.set(&k("attention.key_length"), u(cfg.head_dim));
    w.set(&k("attention.value_length"), u(cfg.head_dim));
    w.set(&k("rope.dimension_count"), u(cfg.head_dim));
    w.set(&k("rope.freq_base"), Value::F32(cfg.rope_theta as f32));
    w.set(
        &k("attention.layer_norm_rms_epsilon"),
        Value::F32(cfg.rms_norm_eps as f32),
    );
    if let Some(RopeScaling::Linear { factor }) = cfg.rope_scaling {
        w.set(&k("rope.scaling.type"), Value::Str("linear".into()));
        w.set(&k("rope.scaling.factor"), Value::F32(factor as f32));
    }
}

/// Every tensor of `model` as GGUF writes it, in llama.cpp's order (embeddings, blocks, final
/// norm, output head), each with the name of a matrix kept f16 because its rows are not whole
/// blocks.
fn convert_tensors(
    model: &Llama,
    arch: &str,
    target: GgmlType,
) -> Vec<Result<(TensorOut, Option<String>)>> {
    let named = cria_core::checkpoint::named_tensors(model);
    let order = |name: &str| -> (usize, usize, String) {
        match gguf_name(name) {
            Some(g) if g.starts_with("token_embd") => (0, 0, g),
            Some(g) if g.starts_with("blk.") => {
                let layer: usize = g[4..]
                    .split('.')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                (1, layer, g)
            }
            Some(g) => (2, 0, g),
            None => (3, 0, name.to_string()),
        }
    };
    let mut items: Vec<_> = named.iter().collect();
    items.sort_by_key(|(n, _)| order(n));
    items
        .par_iter()
        .map(|(hf, (shape, data))| convert_tensor(&model.cfg, arch, target, hf, shape, data))
        .collect()
}

/// One tensor: its GGUF name, LLaMA's q/k rows permuted to llama.cpp's pairwise RoPE, encoded
/// as `target` (vectors f32; a matrix whose rows are not whole blocks f16, named in the result).
fn convert_tensor(
    cfg: &ModelConfig,
    arch: &str,
    target: GgmlType,
    hf: &str,
    shape: &[usize],
    data: &[f32],
) -> Result<(TensorOut, Option<String>)> {
    let name = gguf_name(hf).ok_or_else(|| {
        GgufError::export(
            cfg.arch.class_name(),
            format!("no GGUF name for tensor {hf}"),
        )
    })?;
    let cols = *shape.last().expect("tensors have a shape");
    let row_len = if shape.len() == 2 { cols } else { 1 };
    let mut data = std::borrow::Cow::Borrowed(data);
    if arch == "llama" {
        if hf.contains("self_attn.q_proj.") {
            data = permute_rope_rows(&data, cfg.num_attention_heads, row_len).into();
        } else if hf.contains("self_attn.k_proj.") {
            data = permute_rope_rows(&data, cfg.num_key_value_heads, row_len).into();
        }
    }
    let mut fallback = None;
    let ty = if shape.len() == 1 {
        GgmlType::F32
    } else if target.is_quantized() && !cols.is_multiple_of(quant::QK) {
        fallback = Some(name.clone());
        GgmlType::F16
    } else {
        target
    };
    let dims = shape.iter().rev().map(|&d| d as u64).collect();
    Ok((
        TensorOut {
            name,
            dims,
            ty,
            data: quant::encode(ty, &data),
        },
        fallback,
    ))
}

/// The tokenizer as `tokenizer.ggml.*` keys: byte-level BPE only (what cria trains, and what
/// LLaMA 3, Qwen2 and GPT-2 style checkpoints ship).
fn tokenizer_metadata(w: &mut Writer, cfg: &ModelConfig, dir: &Path) -> Result<()> {
    let path = dir.join("tokenizer.json");
    let tj = cria_core::fsutil::read_json(&path)?;
    let model = tj
        .get("model")
        .ok_or_else(|| bad(&path, "model", "missing"))?;
    let kind = model.get("type").and_then(Json::as_str).unwrap_or("");
    if kind != "BPE" {
        return Err(bad(
            &path,
            "model.type",
            format!(
                "{kind:?}: cria exports byte-level BPE tokenizers to GGUF (not SentencePiece/Unigram/WordPiece yet)"
            ),
        ));
    }
    if model.get("byte_fallback").and_then(Json::as_bool) == Some(true) {
        return Err(bad(
            &path,
            "model.byte_fallback",
            "a SentencePiece-style BPE (LLaMA 2, Mistral v0.1); cria exports byte-level BPE tokenizers to GGUF so far",
        ));
    }
    let pre = pre_tokenizer_name(tj.get("pre_tokenizer").unwrap_or(&Json::Null))
        .map_err(|why| bad(&path, "pre_tokenizer", why))?;
    let (tokens, types) = vocabulary(&tj, model, cfg.vocab_size, &path)?;
    let merges = merges(model, &path)?;
    w.set("tokenizer.ggml.model", Value::Str("gpt2".into()));
    w.set("tokenizer.ggml.pre", Value::Str(pre.into()));
    w.set("tokenizer.ggml.tokens", Value::strings(tokens));
    w.set("tokenizer.ggml.token_type", Value::i32s(types));
    w.set("tokenizer.ggml.merges", Value::strings(merges));
    special_ids(w, cfg, &path)
}

/// A tokenizer.json error: the file, the field, why.
fn bad(path: &Path, field: &str, why: impl std::fmt::Display) -> GgufError {
    GgufError::model(path, format!("{field}: {why}"))
}

/// Every embedding row's token and its GGUF type (normal, control, user-defined; rows no
/// token uses are named `[PADn]`, unused).
fn vocabulary(
    tj: &Json,
    model: &Json,
    vocab_size: usize,
    path: &Path,
) -> Result<(Vec<String>, Vec<i32>)> {
    let mut by_id: HashMap<u32, (String, i32)> = HashMap::new();
    let vocab = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| bad(path, "model.vocab", "missing or not an object"))?;
    for (tok, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad(path, "model.vocab", format!("{tok:?} has no integer id")))?;
        by_id.insert(id as u32, (tok.clone(), NORMAL));
    }
    for t in tj
        .get("added_tokens")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(content)) = (
            t.get("id").and_then(Json::as_u64),
            t.get("content").and_then(Json::as_str),
        ) else {
            return Err(bad(
                path,
                "added_tokens",
                format!("an entry without id and content: {t}"),
            ));
        };
        let special = t.get("special").and_then(Json::as_bool).unwrap_or(false);
        let ty = if special { CONTROL } else { USER_DEFINED };
        by_id.insert(id as u32, (content.to_string(), ty));
    }
    let n_tok = by_id.keys().max().map_or(0, |m| *m as usize + 1);
    if n_tok > vocab_size {
        return Err(bad(
            path,
            "model.vocab",
            format!("{n_tok} tokens do not fit the model's vocab_size {vocab_size}"),
        ));
    }
    Ok((0..vocab_size as u32)
        .map(|id| {
            // Embedding rows no token uses (padded vocabularies), named as
            // convert_hf_to_gguf names them.
            by_id
                .remove(&id)
                .unwrap_or_else(|| (format!("[PAD{id}]"), UNUSED))
        })
        .unzip())
}

/// The merges as `"a b"` strings (tokenizer.json writes them so or as pairs).
fn merges(model: &Json, path: &Path) -> Result<Vec<String>> {
    model
        .get("merges")
        .and_then(Json::as_array)
        .ok_or_else(|| bad(path, "model.merges", "missing or not a list"))?
        .iter()
        .map(|m| match m {
            Json::String(s) => Ok(s.clone()),
            Json::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) => Ok(format!("{a} {b}")),
                _ => Err(bad(
                    path,
                    "model.merges",
                    format!("{m} is not a pair of strings"),
                )),
            },
            _ => Err(bad(path, "model.merges", format!("{m} is not a merge"))),
        })
        .collect()
}

/// BOS, EOS, padding and end-of-turn ids, and whether encoding adds BOS/EOS.
fn special_ids(w: &mut Writer, cfg: &ModelConfig, path: &Path) -> Result<()> {
    let tok = cria_core::tokenizer::Tokenizer::from_file(path)?;
    let bos = cfg.bos_token_id.or(tok.bos_id);
    let eos = cfg.eos_token_id.first().copied().or(tok.eos_id);
    if let Some(b) = bos {
        w.set("tokenizer.ggml.bos_token_id", Value::U32(b));
    }
    if let Some(e) = eos {
        w.set("tokenizer.ggml.eos_token_id", Value::U32(e));
    }
    if let Some(p) = cfg.pad_token_id.or(tok.pad_id_named) {
        w.set("tokenizer.ggml.padding_token_id", Value::U32(p));
    }
    // The token that ends a chat turn when it is not the end-of-sequence token: cria's own
    // `<|end_of_turn|>`; ChatML's and LLaMA 3's are recognised by llama.cpp by their text.
    if let Some(eot) = tok.token_to_id(cria_core::tokenizer::EOT) {
        w.set("tokenizer.ggml.eot_token_id", Value::U32(eot));
    }
    // Whether encoding adds BOS/EOS, as the tokenizer's post-processor does it.
    let probe = tok.encode("a", true)?;
    let add_bos = bos.is_some() && probe.first() == bos.as_ref();
    let add_eos = eos.is_some() && probe.len() > 1 && probe.last() == eos.as_ref();
    w.set("tokenizer.ggml.add_bos_token", Value::Bool(add_bos));
    w.set("tokenizer.ggml.add_eos_token", Value::Bool(add_eos));
    Ok(())
}

/// llama.cpp's name for a byte-level BPE pre-tokenizer (`tokenizer.ggml.pre`), or why it has
/// none: a wrong name would make llama.cpp split text differently and the model read tokens it
/// was never trained on.
fn pre_tokenizer_name(pre: &Json) -> std::result::Result<&'static str, String> {
    let ty = |v: &Json| {
        v.get("type")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string()
    };
    let flag = |v: &Json, k: &str| v.get(k).and_then(Json::as_bool);
    match ty(pre).as_str() {
        "ByteLevel" if flag(pre, "use_regex") != Some(false) => {
            if flag(pre, "add_prefix_space") == Some(true) {
                return Err("ByteLevel with add_prefix_space has no llama.cpp equivalent".into());
            }
            Ok("gpt-2")
        }
        "Sequence" => {
            let parts = pre
                .get("pretokenizers")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default();
            let [split, bl] = parts.as_slice() else {
                return Err(format!(
                    "a sequence of {} pre-tokenizers (cria knows Split + ByteLevel)",
                    parts.len()
                ));
            };
            if ty(split) != "Split" || ty(bl) != "ByteLevel" || flag(bl, "use_regex") != Some(false)
            {
                return Err(
                    "a sequence other than Split(regex) + ByteLevel(use_regex = false)".into(),
                );
            }
            let re = split
                .get("pattern")
                .and_then(|p| p.get("Regex"))
                .and_then(Json::as_str)
                .ok_or("a Split without a regex pattern")?;
            PRE_TOKENIZERS
                .iter()
                .find(|(_, r)| *r == re)
                .map(|(n, _)| *n)
                .ok_or_else(|| {
                    format!(
                        "the split regex {re:?} is none that llama.cpp names (LLaMA 3's or Qwen2's)"
                    )
                })
        }
        other => Err(format!(
            "{other:?} (cria knows GPT-2's ByteLevel and LLaMA 3's / Qwen2's regex splits)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_rows_interleave_each_head_halves() {
        // 2 heads of 4 rows (halves [a0 a1 | b0 b1]), 1 column.
        let data = [0.0, 1.0, 10.0, 11.0, 100.0, 101.0, 110.0, 111.0];
        let out = permute_rope_rows(&data, 2, 1);
        assert_eq!(out, [0.0, 10.0, 1.0, 11.0, 100.0, 110.0, 101.0, 111.0]);
    }

    #[test]
    fn names_follow_llama_cpp() {
        assert_eq!(
            gguf_name("model.layers.3.mlp.down_proj.weight").unwrap(),
            "blk.3.ffn_down.weight"
        );
        assert_eq!(
            gguf_name("model.layers.0.self_attn.q_proj.bias").unwrap(),
            "blk.0.attn_q.bias"
        );
        assert_eq!(
            gguf_name("model.embed_tokens.weight").unwrap(),
            "token_embd.weight"
        );
        assert_eq!(gguf_name("lm_head.weight").unwrap(), "output.weight");
        assert!(gguf_name("model.layers.0.self_attn.q_norm.weight").is_none());
    }
}
