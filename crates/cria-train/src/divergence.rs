//! Divergence handled honestly. A non-finite loss, gradient norm, validation loss or weight
//! stops the run before anything non-finite is saved; the error names the newest checkpoint
//! that is really good (every tensor finite), or says there is none, and how to resume with a
//! lower learning rate. A loss that blows up without turning NaN is warned about.

use crate::config::TrainConfig;
use crate::error::TrainError;
use cria_core::Llama;
use cria_core::params::{Params, to_vec};
use cria_core::weights::WeightMap;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The first parameter of `model` holding a NaN or an infinity.
pub fn first_non_finite(model: &Llama) -> Option<String> {
    let mut bad = None;
    let mut m = model.clone();
    m.visit("", &mut |name, p| {
        if bad.is_none() && to_vec(p.flat()).iter().any(|x| !x.is_finite()) {
            bad = Some(name.to_string());
        }
    });
    bad
}

/// The step of the checkpoint in `ckpt` when it is complete and every tensor it holds is
/// finite (`state_file`'s `key` gives the step).
pub fn last_good(ckpt: &Path, state_file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(ckpt.join(state_file)).ok()?;
    let step = serde_json::from_str::<serde_json::Value>(&text).ok()?[key].as_u64()?;
    for entry in std::fs::read_dir(ckpt).ok()? {
        let path = entry.ok()?.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let mut map = WeightMap::default();
            WeightMap::read_file(&path, &mut map).ok()?;
            if map
                .tensors
                .values()
                .any(|t| t.data.iter().any(|x| !x.is_finite()))
            {
                return None;
            }
        }
    }
    Some(step)
}

/// Where a run checkpoints, for the message of a run that diverged.
pub struct CheckpointAt<'a> {
    pub dir: &'a Path,
    pub state_file: &'a str,
    /// The state's key holding the step (`step`, or PPO's `iteration`).
    pub key: &'a str,
}

/// The error for a non-finite `what` (loss, gradient norm, ...) at `step`, naming the last
/// good checkpoint and suggesting a tenth of the learning rate `lr`.
pub fn diverged(step: u64, what: &str, value: f64, at: &CheckpointAt<'_>, lr: f64) -> TrainError {
    let lower = lr / 10.0;
    let advice = match last_good(at.dir, at.state_file, at.key) {
        Some(good) => format!(
            "The last good checkpoint, step {good}, is in {}: resume from it with a lower \
             learning rate by running the same command with `--set train.lr={lower:e}` (or \
             stronger clipping, train.grad_clip)",
            at.dir.display()
        ),
        None => format!(
            "There is no good checkpoint to resume from ({} holds none with finite weights); \
             start over with a lower learning rate, e.g. `--set train.lr={lower:e}`, or \
             stronger clipping (train.grad_clip)",
            at.dir.display()
        ),
    };
    TrainError::Diverged {
        step,
        msg: format!("step {step}: the {what} is {value}; stopping. {advice}"),
    }
}

/// Watches for a loss that blows up without turning NaN: above `factor` times its first value
/// for `steps` steps in a row. Kept in the training state, so a resumed run remembers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BlowupGuard {
    pub first_loss: Option<f64>,
    pub steps_above: u64,
}

impl BlowupGuard {
    /// Records a step's loss; returns a warning the step the streak reaches `steps`.
    pub fn observe(&mut self, loss: f64, factor: Option<f64>, steps: u64) -> Option<String> {
        let first = *self.first_loss.get_or_insert(loss);
        let factor = factor?;
        if loss > factor * first.abs().max(f64::MIN_POSITIVE) {
            self.steps_above += 1;
        } else {
            self.steps_above = 0;
        }
        (self.steps_above == steps).then(|| {
            format!(
                "the loss {loss:.4} has stayed above {factor}× its first value ({first:.4}) for \
                 {steps} steps: the run is likely diverging (stop it and resume from the last \
                 checkpoint with a lower train.lr)"
            )
        })
    }
}

/// `[train]` settings that differ between a checkpoint and the resumed run, as
/// `train.lr = 1e-4 (was 3e-4)`: allowed (the learning rate after a divergence, more steps),
/// and logged.
pub fn changed(saved: &TrainConfig, now: &TrainConfig) -> Vec<String> {
    let (a, b) = (
        serde_json::to_value(saved).expect("JSON"),
        serde_json::to_value(now).expect("JSON"),
    );
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec![];
    };
    b.iter()
        .filter(|(k, v)| a.get(*k) != Some(v))
        .map(|(k, v)| {
            let was = a.get(k).map_or("unset".to_string(), |x| x.to_string());
            format!("train.{k} = {v} (was {was})")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_warns_once_a_streak_reaches_its_length() {
        let mut g = BlowupGuard::default();
        // First loss 2.0, factor 3: above means > 6.
        assert!(g.observe(2.0, Some(3.0), 2).is_none());
        assert!(g.observe(7.0, Some(3.0), 2).is_none());
        assert!(
            g.observe(5.0, Some(3.0), 2).is_none(),
            "the streak is broken"
        );
        assert!(g.observe(6.5, Some(3.0), 2).is_none());
        let w = g.observe(9.0, Some(3.0), 2).expect("two steps above 6");
        assert!(
            w.contains("9.0000") && w.contains("3× its first value (2.0000)"),
            "{w}"
        );
        assert!(
            g.observe(9.5, Some(3.0), 2).is_none(),
            "warned once per streak"
        );
        let mut off = BlowupGuard::default();
        off.observe(1.0, None, 1);
        assert!(off.observe(100.0, None, 1).is_none());
    }

    #[test]
    fn changed_settings_are_listed_with_their_old_values() {
        let saved = TrainConfig::default();
        let now = TrainConfig {
            lr: 1e-4,
            steps: 2000,
            ..TrainConfig::default()
        };
        let c = changed(&saved, &now);
        assert_eq!(
            c,
            vec![
                "train.steps = 2000 (was 1000)".to_string(),
                "train.lr = 0.0001 (was 0.0003)".to_string()
            ]
        );
        assert!(changed(&saved, &saved).is_empty());
    }
}
