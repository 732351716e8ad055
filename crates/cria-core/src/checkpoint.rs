//! Hugging Face checkpoint directories: `config.json`, `model.safetensors` (or a sharded index),
//! `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`. Saving stages the whole
//! directory under a temporary name and renames it into place, so a crash leaves either the
//! previous checkpoint or the new one.

use crate::config::ModelConfig;
use crate::error::{CoreError, Result};
use crate::fsutil;
use crate::model::Llama;
use crate::params::Params;
use crate::tokenizer::Tokenizer;
use crate::weights::{NamedTensors, VarBuilder, WeightMap, save_safetensors};
use burn::tensor::Device;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Files copied from a source checkpoint when present.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Reads `config.json` from a checkpoint directory.
pub fn load_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join("config.json");
    if !dir.is_dir() {
        return Err(CoreError::io(
            dir,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    if !path.exists() {
        return Err(CoreError::MissingFile {
            dir: dir.to_path_buf(),
            file: "config.json".into(),
        });
    }
    ModelConfig::from_file(&path)
}

/// Loads the model of a checkpoint directory onto `device`.
pub fn load_model(dir: &Path, device: &Device) -> Result<Llama> {
    let cfg = load_config(dir)?;
    let mut map = WeightMap::read_dir(dir)?;
    if cfg.arch == crate::config::Arch::Phi3 {
        crate::model::fused::split(&cfg, &mut map)?;
    }
    let mut vb = VarBuilder::load(map, dir, device);
    let model = Llama::new(&cfg, &mut vb)?;
    vb.finish()?;
    Ok(model)
}

/// Loads the tokenizer of a checkpoint directory and checks it fits the model's vocabulary.
pub fn load_tokenizer(dir: &Path, cfg: &ModelConfig) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        return Err(CoreError::MissingFile {
            dir: dir.to_path_buf(),
            file: "tokenizer.json".into(),
        });
    }
    let tok = Tokenizer::from_file(&path)?;
    check_vocab(&tok, cfg, &path)?;
    Ok(tok)
}

/// A tokenizer may be smaller than the embedding table (padded vocabularies) but never larger.
pub fn check_vocab(tok: &Tokenizer, cfg: &ModelConfig, path: &Path) -> Result<()> {
    if tok.vocab_size() > cfg.vocab_size {
        return Err(CoreError::Tokenizer {
            path: path.to_path_buf(),
            msg: format!(
                "vocabulary of {} tokens does not fit the model's vocab_size {}",
                tok.vocab_size(),
                cfg.vocab_size
            ),
        });
    }
    Ok(())
}

/// Every base parameter by Hugging Face name and layout (LoRA adapters are not part of an HF
/// checkpoint: merge them first, or save them with [`SaveExtras::adapter`]).
pub fn named_tensors(model: &Llama) -> NamedTensors {
    let mut out = NamedTensors::new();
    let mut m = model.clone();
    m.visit("", &mut |name, p| {
        if !crate::nn::is_adapter_param(name) {
            out.insert(name.to_string(), (p.hf_shape(), p.to_hf_vec()));
        }
    });
    out
}

/// What to write besides the model.
#[derive(Default)]
pub struct SaveExtras<'a> {
    /// A directory to copy tokenizer files from.
    pub tokenizer_from: Option<&'a Path>,
    /// Further files (name, bytes), e.g. the resolved run config or training state.
    pub files: Vec<(String, Vec<u8>)>,
    /// Further safetensors files (name, tensors).
    pub tensors: Vec<(String, NamedTensors)>,
    /// Write only the LoRA adapter (PEFT layout), recording this base path, instead of the model.
    pub adapter: Option<(crate::nn::AdapterConfig<'a>, &'a str)>,
}

/// Writes a complete checkpoint directory atomically.
pub fn save(model: &Llama, dir: &Path, extras: SaveExtras<'_>) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| CoreError::io(parent, e))?;
    fsutil::recover_dir(dir)?;
    let staged: PathBuf = fsutil::tmp_name(dir);
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(&staged).map_err(|e| CoreError::io(&staged, e))?;
    let res = write_into(model, &staged, &extras).and_then(|_| fsutil::replace_dir(&staged, dir));
    if res.is_err() {
        let _ = std::fs::remove_dir_all(&staged);
    }
    res
}

fn write_into(model: &Llama, dir: &Path, extras: &SaveExtras<'_>) -> Result<()> {
    match extras.adapter {
        Some((cfg, base)) => model.save_adapter(cfg, base, dir)?,
        None => write_model(model, dir)?,
    }
    if let Some(src) = extras.tokenizer_from {
        for f in TOKENIZER_FILES {
            let p = src.join(f);
            if p.exists() {
                fsutil::write_atomic(&dir.join(f), &fsutil::read(&p)?)?;
            }
        }
    }
    for (name, bytes) in &extras.files {
        fsutil::write_atomic(&dir.join(name), bytes)?;
    }
    for (name, tensors) in &extras.tensors {
        save_safetensors(&dir.join(name), tensors, None)?;
    }
    Ok(())
}

fn write_model(model: &Llama, dir: &Path) -> Result<()> {
    let cfg_text = serde_json::to_string_pretty(&model.cfg.to_json()).expect("JSON value");
    fsutil::write_atomic(&dir.join("config.json"), cfg_text.as_bytes())?;
    let gen_cfg = json!({
        "bos_token_id": model.cfg.bos_token_id,
        "eos_token_id": model.cfg.eos_token_id,
        "pad_token_id": model.cfg.pad_token_id,
    });
    fsutil::write_atomic(
        &dir.join("generation_config.json"),
        serde_json::to_string_pretty(&gen_cfg)
            .expect("JSON value")
            .as_bytes(),
    )?;
    let meta = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    let mut tensors = named_tensors(model);
    if model.cfg.arch == crate::config::Arch::Phi3 {
        crate::model::fused::fuse(&model.cfg, &mut tensors);
    }
    save_safetensors(&dir.join("model.safetensors"), &tensors, Some(meta))
}
