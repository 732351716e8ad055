//! PPO's checkpoint: the policy (full weights or its adapter) with the value model (PPO's
//! algorithm only), the optimizers and the iteration state beside it, written between iterations; resuming reads
//! them back through the shared resume path.

use super::Ctx;
use super::setup::Models;
use crate::collective::CollectiveExt;
use crate::error::Result;
use crate::optim::AdamW;
use crate::state::{
    OPTIMIZER_FILE, check_fingerprint, load_trained, optimizer_tensors, read_optimizer_file,
    read_state,
};
use crate::update::Optimizer;
use cria_core::checkpoint::{self, SaveExtras};
use cria_core::config::ModelConfig;
use cria_core::weights::{VarBuilder, WeightMap};
use cria_core::{Device, Llama};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const STATE_FILE: &str = "ppo_state.json";
const VALUE_WEIGHTS: &str = "value.safetensors";
const VALUE_CONFIG: &str = "value_config.json";
const VALUE_OPTIMIZER: &str = "value_optimizer.safetensors";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PpoState {
    pub iteration: u64,
    pub beta: f64,
    pub replies_seen: u64,
    /// Pretraining batches consumed by PPO-ptx.
    pub ptx_cursor: u64,
    pub fingerprint: String,
    /// The `[train]` settings the run was saved with (a resume may change them; logged).
    #[serde(default)]
    pub train: Option<crate::config::TrainConfig>,
}

/// The policy's and the value model's optimizers (the same settings, `[train]`'s).
pub(super) struct Optimizers {
    pub policy: Optimizer,
    pub value: Option<Optimizer>,
}

/// The models, optimizers and state to continue from: the run's checkpoint when there is one,
/// else a fresh start (the value model initialised from the reward model).
pub(super) fn resume_or_start(
    ctx: &Ctx<'_>,
    policy: Llama,
    reference: Llama,
    reward: Llama,
) -> Result<(Models, Optimizers, PpoState)> {
    let (cfg, setup) = (ctx.cfg, &ctx.setup);
    let ckpt = ctx.run.checkpoint();
    let critic = cfg.ppo.algorithm.has_critic();
    let optimizers = |p: AdamW, v: Option<AdamW>| Optimizers {
        policy: Optimizer::new(&cfg.train, p),
        value: v.map(|v| Optimizer::new(&cfg.train, v)),
    };
    // With ranks, rank 0 reads the checkpoint and [`share`] hands it to the others.
    let world = crate::collective::world();
    let resuming = world.agree(ckpt.join(STATE_FILE).exists());
    if !resuming || !world.is_root() {
        let st = PpoState {
            iteration: 0,
            beta: cfg.ppo.kl_coef,
            replies_seen: 0,
            ptx_cursor: 0,
            fingerprint: setup.fingerprint.clone(),
            train: None,
        };
        let value = critic.then(|| reward.clone());
        let models = Models {
            policy,
            reference,
            reward,
            value,
        };
        let opts = optimizers(AdamW::default(), critic.then(AdamW::default));
        return Ok((models, opts, st));
    }
    let st: PpoState = read_state(&ckpt.join(STATE_FILE), "PPO state")?;
    check_fingerprint(&st.fingerprint, &setup.fingerprint, &ckpt.join(STATE_FILE))?;
    for change in st
        .train
        .iter()
        .flat_map(|saved| crate::divergence::changed(saved, &cfg.train))
    {
        tracing::info!(iteration = st.iteration, "resuming with {change}");
    }
    let base = setup.adapted.adapter.map(|_| cfg.init.as_path());
    let models = Models {
        policy: load_trained(&ckpt, base, &ctx.inf)?,
        reference,
        value: critic.then(|| load_value(&ckpt, &ctx.inf)).transpose()?,
        reward,
    };
    let value_opt = critic.then(|| read_optimizer_file(&ckpt.join(VALUE_OPTIMIZER)));
    let opts = optimizers(
        read_optimizer_file(&ckpt.join(OPTIMIZER_FILE))?,
        value_opt.transpose()?,
    );
    tracing::info!(iteration = st.iteration, "resuming PPO");
    Ok((models, opts, st))
}

/// Rank 0's policy, value model, optimizers and state on every rank (a run of several).
pub(super) fn share(m: &mut Models, opts: &mut Optimizers, st: &mut PpoState) -> Result<()> {
    let world = crate::collective::world();
    let mut bytes = serde_json::to_vec(st).expect("JSON");
    world.broadcast_bytes(&mut bytes, 0);
    *st = serde_json::from_slice(&bytes).expect("rank 0's state is JSON");
    crate::dp::broadcast_params(world, &mut m.policy)?;
    crate::dp::broadcast_optimizer(world, &mut opts.policy.adamw);
    if let (Some(value), Some(opt)) = (&mut m.value, &mut opts.value) {
        crate::dp::broadcast_params(world, value)?;
        crate::dp::broadcast_optimizer(world, &mut opt.adamw);
    }
    Ok(())
}

fn load_value(dir: &Path, device: &Device) -> Result<Llama> {
    let cfg = ModelConfig::from_file(&dir.join(VALUE_CONFIG))?;
    let mut map = WeightMap::default();
    WeightMap::read_file(&dir.join(VALUE_WEIGHTS), &mut map)?;
    let mut vb = VarBuilder::load(map, &dir.join(VALUE_WEIGHTS), device);
    let m = Llama::new(&cfg, &mut vb)?;
    vb.finish()?;
    Ok(m)
}

/// Writes the checkpoint (atomically, like every checkpoint).
pub(super) fn save(ctx: &Ctx<'_>, m: &Models, opts: &Optimizers, st: &PpoState) -> Result<()> {
    let cfg = ctx.cfg;
    let policy = m.policy.clone().to_device(&ctx.inf);
    let value = m.value.as_ref().map(|v| v.clone().to_device(&ctx.inf));
    // Nothing non-finite is ever saved: the checkpoint on disk stays the last good one.
    for (which, model) in [("policy", Some(&policy)), ("value model", value.as_ref())] {
        if let Some(name) = model.and_then(crate::divergence::first_non_finite) {
            let what = format!("{which} weight {name}");
            return Err(ctx.diverged(st.iteration, &what, f64::NAN));
        }
    }
    let mut files = vec![
        (
            STATE_FILE.to_string(),
            serde_json::to_vec_pretty(st).expect("JSON"),
        ),
        ("ppo.toml".to_string(), ctx.resolved.as_bytes().to_vec()),
    ];
    let mut tensors = vec![(
        OPTIMIZER_FILE.to_string(),
        optimizer_tensors(&opts.policy.adamw),
    )];
    if let (Some(value), Some(opt)) = (&value, &opts.value) {
        let value_cfg = serde_json::to_vec_pretty(&value.cfg.to_json()).expect("JSON");
        files.push((VALUE_CONFIG.to_string(), value_cfg));
        tensors.push((VALUE_OPTIMIZER.to_string(), optimizer_tensors(&opt.adamw)));
        tensors.push((VALUE_WEIGHTS.to_string(), checkpoint::named_tensors(value)));
    }
    let extras = SaveExtras {
        tokenizer_from: Some(&cfg.init),
        files,
        tensors,
        adapter: ctx
            .setup
            .adapted
            .adapter
            .map(|a| (a, cfg.init.to_str().unwrap_or_default())),
    };
    checkpoint::save(&policy, &ctx.run.checkpoint(), extras)?;
    Ok(())
}
