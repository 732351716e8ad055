//! Arguments every training command shares: the config file, overrides and common shortcuts.

use crate::overrides;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct RunArgs {
    /// TOML file with the stage's settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. `--set train.lr=1e-3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Run directory (overrides `out`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The Hugging Face checkpoint to start from (overrides `init`).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Optimizer steps (overrides `train.steps`).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Skip malformed data records instead of stopping: they are counted by reason in the log
    /// and written to `rejects.jsonl` in the run directory (sets `data.skip_invalid`).
    #[arg(long)]
    pub skip_invalid: bool,
    /// Print the stage's settings as they would run (defaults < --config < --set), each with a
    /// comment saying what it does, and exit: a starting point for a config file.
    #[arg(long)]
    pub print_config: bool,
}

impl RunArgs {
    /// Where the settings came from, for error messages.
    pub fn origin(&self) -> String {
        self.config
            .as_ref()
            .map_or("command line".to_string(), |p| p.display().to_string())
    }

    /// Defaults < file < flags, deserialised into the stage's config (unknown keys are errors).
    pub fn resolve<T: serde::de::DeserializeOwned>(&self, path_keys: &[&str]) -> anyhow::Result<T> {
        self.resolve_with(path_keys, "data.skip_invalid")
    }

    /// With `--print-config`, prints `cfg` annotated (see cria_train::keys) and returns true.
    pub fn printed<C: serde::Serialize>(
        &self,
        stage: cria_train::keys::Stage,
        cfg: &C,
    ) -> anyhow::Result<bool> {
        if self.print_config {
            let table = toml::Table::try_from(cfg)?;
            print!("{}", cria_train::keys::annotated(stage, &table));
        }
        Ok(self.print_config)
    }

    /// As [`RunArgs::resolve`], `--skip-invalid` setting `skip_key`.
    pub fn resolve_with<T: serde::de::DeserializeOwned>(
        &self,
        path_keys: &[&str],
        skip_key: &str,
    ) -> anyhow::Result<T> {
        let mut sets = self.sets.clone();
        if self.skip_invalid {
            sets.push(format!("{skip_key}=true"));
        }
        let quoted = |p: &PathBuf| toml::Value::String(p.display().to_string()).to_string();
        if let Some(o) = &self.out {
            sets.push(format!("out={}", quoted(o)));
        }
        if let Some(i) = &self.init {
            sets.push(format!("init={}", quoted(i)));
        }
        if let Some(s) = self.steps {
            sets.push(format!("train.steps={s}"));
        }
        let table = overrides::load_with_paths(self.config.as_deref(), &sets, path_keys)?;
        overrides::parse(table, &self.origin())
    }
}

/// Runs a fine-tuning stage whose config has `out`, `init` and `train`: resolves the config,
/// checks both paths are set, trains with a progress display and prints the checkpoint path.
pub fn run_stage<C: serde::Serialize + serde::de::DeserializeOwned>(
    args: &RunArgs,
    which: cria_train::keys::Stage,
    path_keys: &[&str],
    parts: impl Fn(&C) -> (&std::path::Path, &std::path::Path, u64),
    stage: impl Fn(&C, String, &mut dyn cria_train::metrics::Reporter) -> cria_train::Result<PathBuf>,
) -> anyhow::Result<()> {
    let cfg: C = args.resolve(path_keys)?;
    if args.printed(which, &cfg)? {
        return Ok(());
    }
    let (out, init, log_every) = parts(&cfg);
    if out.as_os_str().is_empty() || init.as_os_str().is_empty() {
        anyhow::bail!(
            "{}: set `out` and `init` (or pass --out DIR --init CHECKPOINT)",
            args.origin()
        );
    }
    let resolved = toml::to_string_pretty(&cfg)?;
    let mut progress = crate::progress::TrainProgress::new(log_every);
    let ckpt = stage(&cfg, resolved, &mut progress)?;
    drop(progress);
    crate::progress::result(&ckpt);
    Ok(())
}
