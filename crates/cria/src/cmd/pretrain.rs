//! `cria pretrain`: next-token training from scratch or from a checkpoint (`--init`).

use crate::overrides;
use crate::progress::TrainProgress;
use clap::Args as ClapArgs;
use cria_train::pretrain::{self, PretrainConfig};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// TOML file with [model], [data] and [train] sections.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set train.lr=1e-3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Run directory (overrides `out`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue pretraining this Hugging Face checkpoint (overrides `init`).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Optimizer steps (overrides `train.steps`).
    #[arg(long)]
    steps: Option<u64>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut sets = a.sets.clone();
    if let Some(o) = &a.out {
        sets.push(format!(
            "out={}",
            toml::Value::String(o.display().to_string())
        ));
    }
    if let Some(i) = &a.init {
        sets.push(format!(
            "init={}",
            toml::Value::String(i.display().to_string())
        ));
    }
    if let Some(s) = a.steps {
        sets.push(format!("train.steps={s}"));
    }
    let origin = a
        .config
        .as_ref()
        .map_or("command line".to_string(), |p| p.display().to_string());
    let mut table = overrides::load(a.config.as_deref(), &sets)?;
    // Relative paths in a config file are relative to that file.
    if let Some(base) = a.config.as_ref().and_then(|p| p.parent()) {
        resolve_paths(&mut table, base, &a);
    }
    let cfg: PretrainConfig = overrides::parse(table, &origin)?;
    if cfg.out.as_os_str().is_empty() {
        anyhow::bail!("{origin}: set `out` (or pass --out DIR)");
    }
    let resolved = toml::to_string_pretty(&cfg)?;
    let mut progress = TrainProgress::new(cfg.train.log_every);
    let ckpt = pretrain::run(&cfg, resolved, &mut progress)?;
    drop(progress);
    println!("{}", ckpt.display());
    Ok(())
}

/// Makes `out`, `init`, `tokenizer` and `data.inputs` from the file relative to its directory
/// (values given on the command line stay relative to the working directory).
fn resolve_paths(table: &mut toml::Table, base: &std::path::Path, a: &Args) {
    let fix = |v: &mut toml::Value| {
        if let toml::Value::String(s) = v {
            let p = std::path::Path::new(s.as_str());
            if p.is_relative() {
                *s = normalize(&base.join(p)).display().to_string();
            }
        }
    };
    let from_cli = |k: &str| a.sets.iter().any(|s| s.starts_with(&format!("{k}=")));
    for (key, cli) in [
        ("out", a.out.is_some()),
        ("init", a.init.is_some()),
        ("tokenizer", false),
    ] {
        if !cli
            && !from_cli(key)
            && let Some(v) = table.get_mut(key)
        {
            fix(v);
        }
    }
    if !from_cli("data.inputs")
        && let Some(toml::Value::Array(items)) =
            table.get_mut("data").and_then(|d| d.get_mut("inputs"))
    {
        items.iter_mut().for_each(fix);
    }
}

/// Removes `.` and folds `dir/..` without touching the file system (the target may not exist
/// yet), so paths read `runs/tiny`, not `examples/tiny/../../runs/tiny`.
fn normalize(p: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}
