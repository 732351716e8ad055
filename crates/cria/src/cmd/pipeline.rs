//! `cria pipeline run|plan FILE.toml` (or `--config FILE.toml`): the whole recipe from one file.

use super::run_args::RunArgs;
use clap::{Args as ClapArgs, Subcommand};
use cria_train::pipeline::{self, PipelineConfig};

#[derive(Subcommand)]
pub enum Command {
    /// Run every stage not yet done (a killed run resumes where it died).
    Run(Args),
    /// Print the stages, which are done and where a killed one would resume.
    Plan(Args),
}

#[derive(ClapArgs)]
pub struct Args {
    /// The pipeline file (the same as `--config FILE.toml`).
    #[arg(value_name = "FILE.toml", conflicts_with = "config")]
    file: Option<std::path::PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

impl Args {
    fn config(mut self) -> anyhow::Result<PipelineConfig> {
        if let Some(f) = self.file.take() {
            self.run.config = Some(f);
        }
        if self.run.config.is_none() {
            anyhow::bail!("name the pipeline file: `cria pipeline run FILE.toml`");
        }
        self.run.resolve_with(PATHS, "skip_invalid")
    }
}

const PATHS: &[&str] = &[
    "out",
    "init",
    "tokenizer.input",
    "pretrain.data.inputs",
    "sft.data.train",
    "sft.data.val",
    "rm.data.train",
    "rm.data.val",
    "dpo.data.train",
    "dpo.data.val",
    "ppo.data.prompts",
    "ppo.data.ptx",
    "eval.facts",
    "eval.truthful",
    "eval.harmful",
    "eval.benign",
];

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Plan(a) | Command::Run(a) if a.run.print_config => {
            let cfg = a.config()?;
            println!(
                "# the pipeline's settings as they would run; each stage's section takes the keys \
                 `cria <stage> --print-config` describes"
            );
            print!("{}", toml::to_string_pretty(&cfg)?);
            Ok(())
        }
        Command::Plan(a) => {
            let cfg = a.config()?;
            for line in pipeline::describe(&cfg)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Run(a) => {
            let cfg = a.config()?;
            run_all(&cfg)?;
            println!("{}", cfg.out.join("report.md").display());
            Ok(())
        }
    }
}

/// Runs every stage not yet done with a progress display, announcing each stage and how long
/// it took.
pub fn run_all(cfg: &PipelineConfig) -> anyhow::Result<()> {
    let mut progress = crate::progress::TrainProgress::new(20);
    let mut started: Option<(String, std::time::Instant)> = None;
    let finish = |started: &mut Option<(String, std::time::Instant)>| {
        if let Some((name, t)) = started.take() {
            eprintln!("== {name}: finished in {:.0} s", t.elapsed().as_secs_f64());
        }
    };
    let outcome = pipeline::run(cfg, &mut progress, &mut |stage, done| {
        finish(&mut started);
        if done {
            eprintln!("== {stage}: done earlier, skipped");
        } else {
            eprintln!("== {stage}");
            started = Some((stage.to_string(), std::time::Instant::now()));
        }
    })?;
    finish(&mut started);
    crate::report::write(cfg, &outcome.stages, &outcome.results)?;
    Ok(())
}
