//! `cria logits`: the logits of every position of a prompt, written as safetensors
//! (`input_ids`, `logits`), as scripts/ref/check_cria_checkpoint.py compares them with
//! transformers'.

use clap::Args as ClapArgs;
use cria_core::params::to_vec;
use cria_core::{Int, Tensor, TensorData};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// A Hugging Face checkpoint directory (a language model).
    #[arg(long)]
    model: PathBuf,
    /// The text, tokenized as the checkpoint's tokenizer does (with its BOS when it adds one).
    #[arg(long)]
    prompt: String,
    /// The safetensors file to write: `input_ids` (1, T) and `logits` (1, T, vocab), f32.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (model, tok) = super::load_for_inference(&a.model, None)?;
    let dev = model.device();
    let ids = tok.encode(&a.prompt, true)?;
    let t = ids.len();
    let input = Tensor::<2, Int>::from_data(
        TensorData::new(ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, t]),
        &dev,
    );
    let logits = to_vec(model.forward(input, None));
    let tensors = [
        (
            "input_ids".to_string(),
            (vec![1, t], ids.iter().map(|&x| x as f32).collect()),
        ),
        (
            "logits".to_string(),
            (vec![1, t, model.cfg.vocab_size], logits),
        ),
    ]
    .into_iter()
    .collect();
    cria_core::weights::save_safetensors(&a.out, &tensors, None)?;
    Ok(())
}
