//! `cria export`: write a plain Hugging Face checkpoint, merging a LoRA adapter into the base.

use anyhow::Context;
use clap::Args as ClapArgs;
use cria_core::checkpoint::{self, SaveExtras};
use cria_core::device;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The base Hugging Face checkpoint.
    #[arg(long)]
    model: PathBuf,
    /// A LoRA adapter directory (PEFT layout) to merge into the base.
    #[arg(long, requires = "merge_lora")]
    adapter: Option<PathBuf>,
    /// Merge the adapter's low-rank update into the base weights.
    #[arg(long, requires = "adapter")]
    merge_lora: bool,
    /// The output directory (written atomically).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let dev = device::inference_device();
    let mut model = checkpoint::load_model(&a.model, &dev)
        .with_context(|| format!("loading {}", a.model.display()))?;
    // Tokenizer files come from the adapter when it has them (its chat template), else the base.
    let mut tokenizer_from = a.model.clone();
    if let Some(ad) = &a.adapter {
        model
            .load_lora(ad)
            .with_context(|| format!("loading the adapter {}", ad.display()))?;
        model.merge_lora();
        if ad.join("tokenizer.json").exists() {
            tokenizer_from = ad.clone();
        }
    }
    let extras = SaveExtras {
        tokenizer_from: Some(&tokenizer_from),
        ..Default::default()
    };
    checkpoint::save(&model, &a.out, extras)?;
    println!("{}", a.out.display());
    Ok(())
}
