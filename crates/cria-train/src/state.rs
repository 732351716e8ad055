//! What a checkpoint stores beside the weights so a run resumes exactly (the step, the data
//! cursor, the optimizer moments, and fingerprints that refuse a resume under a changed
//! setup), and the one resume path every stage takes: state read, fingerprint checked, the
//! trained model (full weights, or the base plus the saved adapter) and optimizers restored.

use crate::error::{Result, TrainError};
use crate::optim::{AdamW, Moments};
use cria_core::weights::WeightMap;
use cria_core::{Device, Llama, checkpoint};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Micro-batches consumed (the data cursor).
    pub micro_cursor: u64,
    pub tokens_seen: u64,
    /// Everything that must not change across a resume (model shape, batch layout, seed, data).
    pub fingerprint: String,
    pub last_val_loss: Option<f64>,
    /// The `[train]` settings the run was saved with (absent in checkpoints of older
    /// builds): a resume may change them, and the changes are logged.
    #[serde(default)]
    pub train: Option<crate::config::TrainConfig>,
    #[serde(default)]
    pub guard: crate::divergence::BlowupGuard,
}

impl TrainerState {
    /// The state before the first step of a run with this setup.
    pub fn fresh(fingerprint: String) -> TrainerState {
        TrainerState {
            step: 0,
            micro_cursor: 0,
            tokens_seen: 0,
            fingerprint,
            last_val_loss: None,
            train: None,
            guard: Default::default(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("serialisable")
    }

    pub fn read(dir: &Path) -> Result<TrainerState> {
        read_state(&dir.join(STATE_FILE), "training state")
    }
}

/// Reads a run's JSON state file (`what` names it in errors).
pub fn read_state<S: DeserializeOwned>(path: &Path, what: &str) -> Result<S> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::Resume {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::Resume {
        path: path.to_path_buf(),
        msg: format!("corrupt {what}: {e}"),
    })
}

/// Refuses to resume a checkpoint whose setup fingerprint differs from the current one.
pub fn check_fingerprint(saved: &str, now: &str, path: &Path) -> Result<()> {
    if saved == now {
        return Ok(());
    }
    Err(TrainError::Resume {
        path: path.to_path_buf(),
        msg: format!(
            "the checkpoint was made with a different setup; start a new run directory or restore \
             the original config.\n  checkpoint: {saved}\n  now:        {now}"
        ),
    })
}

/// The model a checkpoint holds: its weights, or with `adapter_base` the base checkpoint
/// plus the adapter saved in `ckpt`.
pub fn load_trained(ckpt: &Path, adapter_base: Option<&Path>, device: &Device) -> Result<Llama> {
    Ok(match adapter_base {
        None => checkpoint::load_model(ckpt, device)?,
        Some(base) => {
            let mut m = checkpoint::load_model(base, device)?;
            m.load_adapter(ckpt)?;
            m
        }
    })
}

/// The optimizer as named tensors: `m.<param>`, `v.<param>`, and the step in `t`.
pub fn optimizer_tensors(opt: &AdamW) -> cria_core::weights::NamedTensors {
    let mut out = BTreeMap::new();
    for (name, st) in &opt.state {
        out.insert(format!("m.{name}"), (vec![st.m.len()], st.m.clone()));
        out.insert(format!("v.{name}"), (vec![st.v.len()], st.v.clone()));
    }
    // The step count as f32 is exact up to 2^24 steps; stored as two halves to be safe.
    let t = opt.t;
    out.insert(
        "t".into(),
        (vec![2], vec![(t >> 24) as f32, (t & 0xFF_FFFF) as f32]),
    );
    out
}

pub fn read_optimizer(dir: &Path) -> Result<AdamW> {
    read_optimizer_file(&dir.join(OPTIMIZER_FILE))
}

/// Reads optimizer state written by [`optimizer_tensors`] from any file.
pub fn read_optimizer_file(path: &Path) -> Result<AdamW> {
    let path = path.to_path_buf();
    let mut map = WeightMap::default();
    WeightMap::read_file(&path, &mut map)?;
    let t = map.tensors.remove("t").ok_or_else(|| TrainError::Resume {
        path: path.clone(),
        msg: "optimizer state has no step counter `t`".into(),
    })?;
    let mut opt = AdamW {
        t: ((t.data[0] as u64) << 24) | t.data[1] as u64,
        state: BTreeMap::new(),
    };
    let mut names: Vec<String> = map
        .tensors
        .keys()
        .filter_map(|k| k.strip_prefix("m.").map(String::from))
        .collect();
    names.sort();
    for name in names {
        let m = map
            .tensors
            .remove(&format!("m.{name}"))
            .expect("listed above")
            .data;
        let v = map
            .tensors
            .remove(&format!("v.{name}"))
            .ok_or_else(|| TrainError::Resume {
                path: path.clone(),
                msg: format!("optimizer state for `{name}` has m but no v"),
            })?
            .data;
        opt.state.insert(name, Moments { m, v });
    }
    Ok(opt)
}
