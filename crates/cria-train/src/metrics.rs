//! What a run reports: one [`StepLog`] per step, appended to the run's `metrics.jsonl` (which
//! plots and report cards read) and handed to a [`Reporter`] (the binary's progress display).

use crate::error::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Named figures a stage logs besides the loss (averaged over a step's micro-batches).
pub type Metrics = BTreeMap<String, f64>;

/// One line of the metrics file.
#[derive(Debug, Clone, Serialize)]
pub struct StepLog {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub tokens_seen: u64,
    pub elapsed_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// The objective's figures; validation ones are prefixed `val_`.
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// What a run tells its caller (progress bars and log lines live in the binary).
pub trait Reporter {
    fn start(&mut self, _first_step: u64, _total: u64) {}
    fn step(&mut self, _log: &StepLog) {}
    fn saved(&mut self, _step: u64, _dir: &Path) {}
}

/// A reporter that says nothing.
pub struct Silent;
impl Reporter for Silent {}

/// Where a run keeps its files.
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: &Path) -> Self {
        RunDir {
            root: root.to_path_buf(),
        }
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// Creates the run directory and finishes or rolls back an interrupted checkpoint write.
    pub fn prepare(&self) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(|e| cria_core::CoreError::io(&self.root, e))?;
        cria_core::fsutil::recover_dir(&self.checkpoint())?;
        Ok(())
    }
}

/// Drops metric lines after `step` (written after the checkpoint a resumed run restarts from).
pub fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    cria_core::fsutil::write_atomic(path, kept.as_bytes())?;
    Ok(())
}

pub fn append_metrics(path: &Path, log: &StepLog) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| cria_core::CoreError::io(path, e))?;
    let line = serde_json::to_string(log).expect("serialisable");
    writeln!(f, "{line}").map_err(|e| cria_core::CoreError::io(path, e))?;
    Ok(())
}

/// The process's peak resident memory in MiB (Linux), for the log.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
