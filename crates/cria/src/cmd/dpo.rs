//! `cria dpo`: Direct Preference Optimization of an SFT checkpoint on preference pairs.

use super::run_args::{RunArgs, run_stage};
use clap::Args as ClapArgs;
use cria_train::stages::dpo::{self, DpoConfig};

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    run_stage(
        &a.run,
        cria_train::keys::Stage::Dpo,
        &["out", "init", "data.train", "data.val"],
        |c: &DpoConfig| (&c.out, &c.init, c.train.log_every),
        dpo::run,
    )
}
