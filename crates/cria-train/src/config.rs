//! Settings of the shared training loop. Defaults follow common LLaMA-style pretraining
//! practice (AdamW betas 0.9/0.95, weight decay 0.1, clip 1.0, cosine to 10% of peak).

use crate::check::{at_least, bad, fraction, non_negative, positive};
use crate::error::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimizer steps to run.
    pub steps: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub lr: f64,
    /// The cosine schedule decays to this learning rate.
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clipping; `None` (written `false` in TOML) disables it.
    #[serde(with = "number_or_false")]
    pub grad_clip: Option<f64>,
    /// Seed of initialisation and data order.
    pub seed: u64,
    /// Print one line (or advance the bar) every this many steps.
    pub log_every: u64,
    /// Validation loss every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Validation batches per evaluation.
    pub eval_batches: usize,
    /// Checkpoint every this many steps (0: only at the end).
    pub save_every: u64,
    /// Warn when the loss stays above this many times its first value for `blowup_steps`
    /// steps in a row (a blow-up that is not NaN); `false` turns the warning off.
    #[serde(with = "number_or_false")]
    pub blowup_factor: Option<f64>,
    pub blowup_steps: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 1000,
            batch_size: 8,
            grad_accum: 1,
            lr: 3e-4,
            min_lr: 3e-5,
            warmup_steps: 100,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: Some(1.0),
            seed: 1337,
            log_every: 10,
            eval_every: 200,
            eval_batches: 8,
            save_every: 200,
            blowup_factor: Some(3.0),
            blowup_steps: 10,
        }
    }
}

impl TrainConfig {
    /// Range checks, keys named under `prefix` (`train`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let k = |name: &str| format!("{prefix}.{name}");
        at_least(&k("steps"), self.steps, 1)?;
        at_least(&k("batch_size"), self.batch_size as u64, 1)?;
        at_least(&k("grad_accum"), self.grad_accum as u64, 1)?;
        positive(&k("lr"), self.lr)?;
        non_negative(&k("min_lr"), self.min_lr)?;
        if self.min_lr > self.lr {
            return Err(bad(
                &k("min_lr"),
                format!(
                    "{} is above {} = {}: the schedule decays to min_lr",
                    self.min_lr,
                    k("lr"),
                    self.lr
                ),
            ));
        }
        fraction(&k("beta1"), self.beta1)?;
        fraction(&k("beta2"), self.beta2)?;
        positive(&k("eps"), self.eps)?;
        non_negative(&k("weight_decay"), self.weight_decay)?;
        if let Some(c) = self.grad_clip {
            positive(&k("grad_clip"), c).map_err(|_| {
                bad(
                    &k("grad_clip"),
                    format!("must be positive, or false to turn clipping off; got {c}"),
                )
            })?;
        }
        at_least(&k("log_every"), self.log_every, 1)?;
        if let Some(f) = self.blowup_factor
            && !(f.is_finite() && f > 1.0)
        {
            return Err(bad(
                &k("blowup_factor"),
                format!("must be above 1, or false to turn the warning off; got {f}"),
            ));
        }
        at_least(&k("blowup_steps"), self.blowup_steps, 1)
    }
}

/// TOML has no null: an optional number is written as the number or `false`.
mod number_or_false {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) => s.serialize_f64(*x),
            None => s.serialize_bool(false),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum V {
            Num(f64),
            Int(i64),
            Bool(bool),
        }
        match V::deserialize(d)? {
            V::Num(x) => Ok(Some(x)),
            V::Int(x) => Ok(Some(x as f64)),
            V::Bool(false) => Ok(None),
            V::Bool(true) => Err(D::Error::custom("expected a number, or false to disable")),
        }
    }
}
