//! `cria pretrain`: next-token training from scratch or from a checkpoint (`--init`).

use super::run_args::RunArgs;
use crate::progress::TrainProgress;
use clap::Args as ClapArgs;
use cria_train::stages::pretrain::{self, PretrainConfig};

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.run.skip_invalid {
        anyhow::bail!(
            "--skip-invalid applies to record files (instructions, preferences, prompts); a \
             pretraining corpus is read whole, so fix or remove the file it names"
        );
    }
    let cfg: PretrainConfig = a
        .run
        .resolve(&["out", "init", "tokenizer", "data.inputs"])?;
    if a.run.printed(cria_train::keys::Stage::Pretrain, &cfg)? {
        return Ok(());
    }
    if cfg.out.as_os_str().is_empty() {
        anyhow::bail!("{}: set `out` (or pass --out DIR)", a.run.origin());
    }
    let resolved = toml::to_string_pretty(&cfg)?;
    let mut progress = TrainProgress::new(cfg.train.log_every);
    let ckpt = pretrain::run(&cfg, resolved, &mut progress)?;
    drop(progress);
    crate::progress::result(&ckpt);
    Ok(())
}
