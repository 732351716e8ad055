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
        let mut sets = self.sets.clone();
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
