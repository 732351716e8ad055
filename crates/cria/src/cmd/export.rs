//! `cria export`: a plain Hugging Face checkpoint (LoRA merged into the base), or a GGUF file for
//! llama.cpp and ollama with an ollama `Modelfile` beside it.

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, ValueEnum};
use cria_core::checkpoint::{self, SaveExtras};
use cria_core::device;
use cria_gguf::GgmlType;
use cria_gguf::export::ExportOptions;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum To {
    /// A Hugging Face checkpoint directory (config.json, model.safetensors, tokenizer files).
    Hf,
    /// One GGUF file (version 3) for llama.cpp, ollama and `cria chat --model FILE.gguf`.
    Gguf,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Quant {
    F32,
    F16,
    /// 8-bit blocks of 32 weights with an f16 scale (8.5 bits per weight).
    #[value(name = "q8_0")]
    Q8_0,
    /// 4-bit blocks of 32 weights with an f16 scale (4.5 bits per weight).
    #[value(name = "q4_0")]
    Q4_0,
}

#[derive(ClapArgs)]
#[command(after_help = "Examples:
  cria export --model runs/demo/ppo/checkpoint --to gguf --quant q4_0 --out demo-q4_0.gguf
  ollama create demo -f Modelfile            # the Modelfile written beside the .gguf
  llama-cli -m demo-q4_0.gguf -cnv
  cria chat --model demo-q4_0.gguf
  cria export --model base --adapter runs/lora/checkpoint --merge-lora --out merged")]
pub struct Args {
    /// The base Hugging Face checkpoint.
    #[arg(long)]
    model: PathBuf,
    /// A LoRA adapter directory (PEFT layout) to merge into the base (`--to gguf` merges it
    /// always; LLaMA-Adapter prompts cannot be merged into weights and are refused).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Merge the adapter's low-rank update into the base weights (`--to hf`).
    #[arg(long, requires = "adapter")]
    merge_lora: bool,
    /// What to write.
    #[arg(long, value_enum, default_value = "hf")]
    to: To,
    /// The type of the weight matrices in a GGUF file; norms and biases stay f32, and a matrix
    /// whose rows are not whole blocks of 32 falls back to f16.
    #[arg(long, value_enum, default_value = "f16")]
    quant: Quant,
    /// `general.name` in the GGUF file (default: the checkpoint directory's name).
    #[arg(long)]
    name: Option<String>,
    /// Do not write the ollama `Modelfile` beside the GGUF file.
    #[arg(long)]
    no_modelfile: bool,
    /// The output: a directory for `--to hf`, a file for `--to gguf` (written atomically).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.to == To::Hf && a.adapter.is_some() && !a.merge_lora {
        bail!(
            "--adapter with --to hf needs --merge-lora (a merged checkpoint is what this writes)"
        );
    }
    let dev = device::inference_device();
    let mut model = checkpoint::load_model(&a.model, &dev)
        .with_context(|| format!("loading {}", a.model.display()))?;
    // Tokenizer files come from the adapter when it has them (its chat template), else the base.
    let mut tokenizer_from = a.model.clone();
    if let Some(ad) = &a.adapter {
        let cfg = cria_core::fsutil::read_json(&ad.join("adapter_config.json"))?;
        if cfg.get("peft_type").and_then(|t| t.as_str()) != Some("LORA") {
            bail!(
                "{}: a {} adapter adds learned prompt tokens to attention, which no weight matrix can hold; \
                 only LORA adapters (peft_type LORA) can be merged for export (serve this one with `cria serve --models`)",
                ad.display(),
                cfg.get("peft_type")
                    .and_then(|t| t.as_str())
                    .unwrap_or("non-LoRA")
            );
        }
        model
            .load_lora(ad)
            .with_context(|| format!("loading the adapter {}", ad.display()))?;
        model.merge_lora();
        if ad.join("tokenizer.json").exists() {
            tokenizer_from = ad.clone();
        }
    }
    match a.to {
        To::Hf => {
            let extras = SaveExtras {
                tokenizer_from: Some(&tokenizer_from),
                ..Default::default()
            };
            checkpoint::save(&model, &a.out, extras)?;
            println!("{}", a.out.display());
        }
        To::Gguf => export_gguf(&a, &model, &tokenizer_from)?,
    }
    Ok(())
}

fn export_gguf(a: &Args, model: &cria_core::model::Llama, tok_dir: &Path) -> anyhow::Result<()> {
    if a.out.is_dir() {
        bail!(
            "--out {} is a directory; --to gguf writes one file (e.g. --out model.gguf)",
            a.out.display()
        );
    }
    let quant = match a.quant {
        Quant::F32 => GgmlType::F32,
        Quant::F16 => GgmlType::F16,
        Quant::Q8_0 => GgmlType::Q8_0,
        Quant::Q4_0 => GgmlType::Q4_0,
    };
    let chat_template = cria_data::template::template_text(tok_dir)?.map(|(_, t)| t);
    let name = a.name.clone().unwrap_or_else(|| {
        let p = std::fs::canonicalize(&a.model).unwrap_or(a.model.clone());
        let base = p
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // `runs/demo/ppo/checkpoint` names itself after the stage, not "checkpoint".
        match (base.as_str(), p.parent().and_then(|q| q.file_name())) {
            ("checkpoint", Some(stage)) => stage.to_string_lossy().into_owned(),
            _ => base,
        }
    });
    if let Some(dir) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let opts = ExportOptions {
        quant,
        name,
        chat_template: chat_template.clone(),
    };
    let report = cria_gguf::export::export(model, tok_dir, &opts, &a.out)?;
    let types: Vec<String> = report
        .by_type
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    eprintln!(
        "{}: GGUF v3, architecture {}, {} tensors ({}), {:.1} MiB of weights",
        a.out.display(),
        report.arch,
        report.tensors,
        types.join(", "),
        report.bytes as f64 / (1024.0 * 1024.0)
    );
    if !report.fallbacks.is_empty() {
        eprintln!(
            "kept in f16 (rows not a multiple of 32 values): {}",
            report.fallbacks.join(", ")
        );
    }
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    if !a.no_modelfile {
        let file = a
            .out
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mf = a.out.with_file_name("Modelfile");
        cria_core::fsutil::write_atomic(
            &mf,
            cria_gguf::modelfile::modelfile(&file, chat_template.as_deref()).as_bytes(),
        )?;
        eprintln!(
            "{}: for `ollama create NAME -f {}`",
            mf.display(),
            mf.display()
        );
    }
    println!("{}", a.out.display());
    Ok(())
}
