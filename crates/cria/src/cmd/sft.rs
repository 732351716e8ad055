//! `cria sft`: supervised fine-tuning of a checkpoint on instruction or chat data.

use super::run_args::RunArgs;
use crate::progress::TrainProgress;
use clap::Args as ClapArgs;
use cria_train::sft::{self, SftConfig};

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg: SftConfig = a.run.resolve(&["out", "init", "data.train", "data.val"])?;
    if cfg.out.as_os_str().is_empty() || cfg.init.as_os_str().is_empty() {
        anyhow::bail!(
            "{}: set `out` and `init` (or pass --out DIR --init CHECKPOINT)",
            a.run.origin()
        );
    }
    let resolved = toml::to_string_pretty(&cfg)?;
    let mut progress = TrainProgress::new(cfg.train.log_every);
    let ckpt = sft::run(&cfg, resolved, &mut progress)?;
    drop(progress);
    println!("{}", ckpt.display());
    Ok(())
}
