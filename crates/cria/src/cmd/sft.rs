//! `cria sft`: supervised fine-tuning of a checkpoint on instruction or chat data.

use super::run_args::{RunArgs, run_stage};
use clap::Args as ClapArgs;
use cria_train::stages::sft::{self, SftConfig};

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    run_stage(
        &a.run,
        cria_train::keys::Stage::Sft,
        &["out", "init", "data.train", "data.val"],
        |c: &SftConfig| (&c.out, &c.init, c.train.log_every),
        sft::run,
    )
}
