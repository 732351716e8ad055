//! `cria rm`: train a reward model on ranked or paired responses.

use super::run_args::{RunArgs, run_stage};
use clap::Args as ClapArgs;
use cria_train::stages::rm::{self, RmConfig};

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    run_stage(
        &a.run,
        cria_train::keys::Stage::Rm,
        &["out", "init", "data.train", "data.val"],
        |c: &RmConfig| (&c.out, &c.init, c.train.log_every),
        rm::run,
    )
}
