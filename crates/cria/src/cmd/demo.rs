//! `cria demo`: the built-in example world through the whole recipe (world → tokenizer →
//! pretrain → SFT → reward model → DPO and PPO → eval → report), sized for about five minutes
//! on 2 CPU cores. The settings are `examples/pipeline/demo.toml`, built into the binary;
//! `--print-config` writes them out to start a pipeline file of your own.

use super::pipeline::run_all;
use clap::Args as ClapArgs;
use cria_train::pipeline::{self, PipelineConfig};
use std::path::PathBuf;

/// The demo's pipeline file, built in.
pub const DEMO_TOML: &str = include_str!("../../../../examples/pipeline/demo.toml");

#[derive(ClapArgs)]
pub struct Args {
    /// Where the run goes (a killed demo resumes from here; remove it to start over).
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Override a setting of the demo's pipeline file, e.g. `--set pretrain.train.steps=100`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Print the demo's pipeline file and exit (a starting point for your own).
    #[arg(long)]
    print_config: bool,
    /// Print which stages would run and exit.
    #[arg(long)]
    plan: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.print_config {
        print!("{DEMO_TOML}");
        return Ok(());
    }
    let origin = "the demo's pipeline file (cria demo --print-config)";
    let mut sets = a.sets.clone();
    sets.push(format!(
        "out={}",
        toml::Value::String(a.out.display().to_string())
    ));
    let table = crate::overrides::load_text(DEMO_TOML, origin, &sets)?;
    let cfg: PipelineConfig = crate::overrides::parse(table, origin)?;
    if a.plan {
        for line in pipeline::describe(&cfg)? {
            println!("{line}");
        }
        return Ok(());
    }
    eprintln!(
        "cria demo: a fictional company's handbook, instructions and rankings are generated, \
         then a small model is pretrained, instruction-tuned, given a reward model, aligned \
         with DPO and with PPO, and evaluated. About five minutes on 2 cores; everything goes \
         to {} (a killed demo resumes where it stopped).",
        cfg.out.display()
    );
    let t = std::time::Instant::now();
    run_all(&cfg)?;
    let report = cfg.out.join("report.md");
    let text = std::fs::read_to_string(&report)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", report.display()))?;
    print!("{text}");
    let model = ["ppo", "dpo", "sft"]
        .iter()
        .map(|m| cfg.out.join(m).join("checkpoint"))
        .find(|p| p.exists())
        .unwrap_or_else(|| cfg.out.join("sft/checkpoint"));
    eprintln!(
        "\nDemo finished in {:.1} min. Report card: {} (with plots: {}).\n\
         Chat with the aligned model in the terminal, or serve it (web chat and OpenAI API\n\
         at http://127.0.0.1:8000/):\n\n    cria chat --model {m}\n    cria serve --model {m}\n\n\
         (or `cargo run --release -- chat --model {m}` from the repository).",
        t.elapsed().as_secs_f64() / 60.0,
        report.display(),
        cfg.out.join("report.html").display(),
        m = model.display(),
    );
    Ok(())
}
