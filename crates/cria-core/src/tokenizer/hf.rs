//! A checkpoint's tokenizer as transformers (5.x) builds it from `tokenizer.json` and
//! `tokenizer_config.json`, so ids equal `AutoTokenizer.from_pretrained(dir)`'s:
//!
//! - `tokenizer_class` `LlamaTokenizer`, `GemmaTokenizer`, `Qwen2Tokenizer` and `GPT2Tokenizer`
//!   keep only the BPE vocabulary, merges and post-processor of `tokenizer.json` and rebuild the
//!   normalizer, pre-tokenizer and decoder as those classes do (a LLaMA tokenizer whose file
//!   mentions `ByteLevel` is taken as it is, as transformers does); every other class takes
//!   the file as it is;
//! - `added_tokens_decoder` (else the file's `added_tokens`) and the named special tokens
//!   (`bos_token`, `eos_token`, ..., class defaults first, `additional_special_tokens`) are
//!   added in transformers' order with their flags; ids come from the tokenizer (an existing
//!   vocabulary entry keeps its id, a new token takes the next free one), never from the keys;
//! - `add_bos_token`/`add_eos_token` in the config do not change the file's post-processor,
//!   and the file's truncation and padding are switched off.
//!
//! Facts from reading transformers 5.24 (`tokenization_utils_tokenizers.py`,
//! `tokenization_utils_base.py`, `models/auto/tokenization_auto.py`) and held against it by
//! the fixtures of `scripts/ref/tokenizer_fixtures.py`.

use super::tok_err;
use crate::error::Result;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

/// The special tokens transformers' named attributes resolve to.
#[derive(Debug, Clone, Default)]
pub struct Named {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub pad: Option<String>,
}

const NAMED: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

const QWEN_RE: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The classes whose constructors rebuild the pipeline.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    Backend,
    Llama,
    Gemma,
    Qwen2,
    Gpt2,
}

impl Class {
    fn of(file_text: &str, cfg: &Value) -> Class {
        let name = cfg.get("tokenizer_class").and_then(Value::as_str);
        match name.map(|n| n.trim_end_matches("Fast")) {
            Some("LlamaTokenizer") if !file_text.contains("\"ByteLevel\"") => Class::Llama,
            Some("GemmaTokenizer") => Class::Gemma,
            Some("Qwen2Tokenizer") => Class::Qwen2,
            Some("GPT2Tokenizer") => Class::Gpt2,
            _ => Class::Backend,
        }
    }

    /// The named tokens each class's constructor defaults to.
    fn defaults(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Class::Backend => &[],
            Class::Llama => &[
                ("unk_token", "<unk>"),
                ("bos_token", "<s>"),
                ("eos_token", "</s>"),
            ],
            Class::Gemma => &[
                ("unk_token", "<unk>"),
                ("bos_token", "<bos>"),
                ("eos_token", "<eos>"),
                ("pad_token", "<pad>"),
                ("mask_token", "<mask>"),
            ],
            Class::Qwen2 => &[
                ("unk_token", "<|endoftext|>"),
                ("eos_token", "<|endoftext|>"),
                ("pad_token", "<|endoftext|>"),
            ],
            Class::Gpt2 => &[
                ("unk_token", "<|endoftext|>"),
                ("bos_token", "<|endoftext|>"),
                ("eos_token", "<|endoftext|>"),
            ],
        }
    }
}

/// The tokenizer of `path` (a `tokenizer.json`) as transformers loads it, and its named
/// special tokens.
pub fn load(path: &Path) -> Result<(HfTokenizer, Named)> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::CoreError::io(path, e))?;
    let cfg_path = path.with_file_name("tokenizer_config.json");
    let cfg = if cfg_path.exists() {
        crate::fsutil::read_json(&cfg_path)?
    } else {
        json!({})
    };
    let file: Value = serde_json::from_str(&text).map_err(|e| tok_err(path, e))?;
    let class = Class::of(&text, &cfg);
    let mut tok: HfTokenizer = match class {
        Class::Backend => text.parse().map_err(|e| tok_err(path, e))?,
        c => rebuild(&file, c, &cfg)
            .to_string()
            .parse()
            .map_err(|e| tok_err(path, e))?,
    };
    let decoder = match cfg.get("added_tokens_decoder").and_then(Value::as_object) {
        Some(m) => m
            .iter()
            .filter_map(|(k, v)| Some((k.parse::<u64>().ok()?, added(v, true)?)))
            .collect::<BTreeMap<_, _>>(),
        None => file["added_tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| Some((t["id"].as_u64()?, added(t, true)?)))
            .collect(),
    };
    let (named, extras) = named_tokens(class, &file, &cfg, &decoder);
    add_tokens(&mut tok, class, &decoder, &named, &extras);
    tok.with_truncation(None).map_err(|e| tok_err(path, e))?;
    tok.with_padding(None);
    let content = |k: &str| {
        named
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, t)| t.content.clone())
    };
    let out = Named {
        bos: content("bos_token"),
        eos: content("eos_token"),
        pad: content("pad_token"),
    };
    Ok((tok, out))
}

/// A config value (a string, or an `AddedToken` object) as a token; strings are special.
fn added(v: &Value, special_string: bool) -> Option<AddedToken> {
    match v {
        Value::String(s) => Some(AddedToken::from(s.as_str(), special_string)),
        Value::Object(o) => {
            let content = o.get("content")?.as_str()?;
            let flag = |k: &str| o.get(k).and_then(Value::as_bool);
            let special = flag("special").unwrap_or(false);
            Some(AddedToken {
                content: content.to_string(),
                single_word: flag("single_word").unwrap_or(false),
                lstrip: flag("lstrip").unwrap_or(false),
                rstrip: flag("rstrip").unwrap_or(false),
                normalized: flag("normalized").unwrap_or(!special),
                special,
            })
        }
        _ => None,
    }
}

/// The named special tokens in transformers' order (class defaults < config, `null`
/// removing one; a name matching an `added_tokens_decoder` entry takes that token), then the
/// extra special tokens.
fn named_tokens(
    class: Class,
    file: &Value,
    cfg: &Value,
    decoder: &BTreeMap<u64, AddedToken>,
) -> (Vec<(String, AddedToken)>, Vec<AddedToken>) {
    let mut named: Vec<(String, Value)> = class
        .defaults()
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    if let Some(pad) = file["padding"]["pad_token"].as_str()
        && !named.iter().any(|(k, _)| k == "pad_token")
    {
        named.push(("pad_token".into(), json!(pad)));
    }
    let mut extra_named = vec![];
    for (k, v) in cfg.as_object().into_iter().flatten() {
        if NAMED.contains(&k.as_str()) {
            named.retain(|(n, _)| n != k);
            named.push((k.clone(), v.clone()));
        } else if k.ends_with("_token") && (v.is_string() || v.is_object()) {
            extra_named.push((k.clone(), v.clone()));
        }
    }
    let mut extras_v = cfg
        .get("extra_special_tokens")
        .or_else(|| cfg.get("additional_special_tokens"))
        .cloned()
        .unwrap_or(Value::Null);
    if let Value::Object(m) = &extras_v {
        extra_named.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        extras_v = Value::Null;
    }
    let order = |k: &str| NAMED.iter().position(|n| *n == k).unwrap_or(NAMED.len());
    named.sort_by_key(|(k, _)| order(k));
    named.extend(extra_named);
    let by_content = |s: &str| decoder.values().find(|t| t.content == s).cloned();
    let named = named
        .into_iter()
        .filter_map(|(k, v)| {
            let content = v.as_str().or_else(|| v["content"].as_str())?.to_string();
            Some((k, by_content(&content).or_else(|| added(&v, true))?))
        })
        .collect();
    let extras = extras_v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| added(v, true))
        .collect();
    (named, extras)
}

/// One `add_tokens` call in transformers' order: the decoder's tokens not already there as
/// they are, then named and extra tokens not yet added; a named token is always special.
fn add_tokens(
    tok: &mut HfTokenizer,
    class: Class,
    decoder: &BTreeMap<u64, AddedToken>,
    named: &[(String, AddedToken)],
    extras: &[AddedToken],
) {
    let existing: Vec<AddedToken> = tok.get_added_tokens_decoder().into_values().collect();
    let mut to_add: Vec<AddedToken> = decoder
        .values()
        .filter(|t| !existing.contains(t))
        .cloned()
        .collect();
    let mut contents: Vec<String> = existing
        .iter()
        .chain(&to_add)
        .map(|t| t.content.clone())
        .collect();
    let named_contents: Vec<&str> = named.iter().map(|(_, t)| t.content.as_str()).collect();
    for t in named.iter().map(|(_, t)| t).chain(extras) {
        if !contents.contains(&t.content) && !to_add.contains(t) {
            to_add.push(t.clone());
            contents.push(t.content.clone());
        }
    }
    for t in &mut to_add {
        if named_contents.contains(&t.content.as_str()) {
            t.special = true;
        }
    }
    if !to_add.is_empty() {
        tok.add_tokens(&to_add);
    }
    if class == Class::Qwen2 {
        let mut all: Vec<AddedToken> = vec![];
        for t in named.iter().map(|(_, t)| t).chain(extras) {
            if !all.iter().any(|a| a.content == t.content) {
                all.push(AddedToken::from(t.content.as_str(), true));
            }
        }
        tok.add_tokens(&all);
    }
}

/// `tokenizer.json` as the classes that rebuild it leave it: the BPE vocabulary, merges and
/// post-processor kept, normalizer, pre-tokenizer and decoder the class's own.
fn rebuild(file: &Value, class: Class, cfg: &Value) -> Value {
    let m = &file["model"];
    let mut model = json!({
        "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
        "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
        "ignore_merges": false, "vocab": m["vocab"], "merges": m["merges"],
    });
    let flag = |k: &str| cfg.get(k).and_then(Value::as_bool);
    let (normalizer, pre, decoder) = match class {
        Class::Llama => {
            let prefix = flag("add_prefix_space").unwrap_or(true);
            let scheme = match (prefix, flag("legacy").unwrap_or(false)) {
                (false, _) => "never",
                (true, true) => "always",
                (true, false) => "first",
            };
            model["fuse_unk"] = json!(true);
            model["byte_fallback"] = json!(true);
            let mut dec = vec![
                json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if prefix {
                dec.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            let pre = json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": false});
            (
                Value::Null,
                pre,
                json!({"type": "Sequence", "decoders": dec}),
            )
        }
        Class::Gemma => {
            model["fuse_unk"] = json!(true);
            model["byte_fallback"] = json!(true);
            let unk = cfg
                .get("unk_token")
                .and_then(Value::as_str)
                .unwrap_or("<unk>");
            model["unk_token"] = json!(unk);
            (
                json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}),
                json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false}),
                json!({"type": "Sequence", "decoders": [
                    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                    {"type": "ByteFallback"}, {"type": "Fuse"}]}),
            )
        }
        Class::Qwen2 | Class::Gpt2 => {
            model["continuing_subword_prefix"] = json!("");
            model["end_of_word_suffix"] = json!("");
            let prefix = flag("add_prefix_space").unwrap_or(false);
            let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": true, "use_regex": regex});
            let dec = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
            if class == Class::Qwen2 {
                let pre = json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": QWEN_RE}, "behavior": "Isolated", "invert": false},
                    byte_level(false)]});
                (json!({"type": "NFC"}), pre, dec)
            } else {
                (Value::Null, byte_level(true), dec)
            }
        }
        Class::Backend => unreachable!("taken as it is"),
    };
    let mut out = file.clone();
    out["model"] = model;
    out["normalizer"] = normalizer;
    out["pre_tokenizer"] = pre;
    out["decoder"] = decoder;
    out["added_tokens"] = json!([]);
    out
}
