//! `cria tokenizer train`: a byte-level BPE with cria's chat special tokens.

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};
use cria_core::tokenizer::{TrainOptions, train};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Command {
    /// Train a byte-level BPE tokenizer on text files or directories.
    Train(TrainArgs),
}

#[derive(ClapArgs)]
pub struct TrainArgs {
    /// Corpus files or directories (.txt, .md, .jsonl with {"text"}; optionally .gz).
    #[arg(long = "input", required = true, num_args = 1..)]
    inputs: Vec<PathBuf>,
    /// Vocabulary size, special tokens included.
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    /// Minimum pair frequency for a merge.
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
    /// Output directory for tokenizer.json and tokenizer_config.json.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    let Command::Train(a) = cmd;
    let docs = cria_data::corpus::read_corpus(&a.inputs)?;
    tracing::info!(
        documents = docs.len(),
        vocab_size = a.vocab_size,
        "training tokenizer"
    );
    let opts = TrainOptions {
        vocab_size: a.vocab_size,
        min_frequency: a.min_frequency,
    };
    let tok = train(docs.into_iter().map(|d| d.text), &opts, &a.out)
        .with_context(|| format!("training the tokenizer into {}", a.out.display()))?;
    println!("{}", a.out.join("tokenizer.json").display());
    tracing::info!(vocab = tok.vocab_size(), "tokenizer written");
    Ok(())
}
