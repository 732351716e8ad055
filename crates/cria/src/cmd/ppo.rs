//! `cria ppo`: RLHF against a reward model with a KL penalty to the SFT model: PPO
//! (InstructGPT), RLOO or GRPO.

use super::run_args::{RunArgs, run_stage};
use clap::Args as ClapArgs;
use cria_train::stages::ppo::{self, PpoConfig};

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    run_stage(
        &a.run,
        cria_train::keys::Stage::Ppo,
        &["out", "init", "reward_model", "data.prompts", "data.ptx"],
        |c: &PpoConfig| (&c.out, &c.init, c.train.log_every),
        ppo::run,
    )
}
