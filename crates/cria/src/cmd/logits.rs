//! `cria logits` (hidden, for scripts/ref/check_cria_checkpoint.py): the logits of every
//! position of a prompt, written as safetensors (`input_ids`, `logits`).

use clap::Args as ClapArgs;
use cria_core::params::to_vec;
use cria_core::{Int, Tensor, TensorData};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
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
