//! `cria ppo`'s settings (`[data]`, `[rollout]`, `[ppo]`, `[train]`) and their validation.

use crate::check;
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::method::{self, Method};
use cria_core::nn::lora::LoraConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PpoDataConfig {
    /// Prompt files: records with `prompt` (string or messages) or `messages` ending on a user
    /// turn; JSON list or JSONL, optionally gzipped.
    pub prompts: Vec<PathBuf>,
    /// Prompts longer than this many tokens (rendered) are skipped and counted.
    pub prompt_len: usize,
    /// Pretraining corpus for PPO-ptx (used when `ppo.ptx_coef > 0`).
    pub ptx: Vec<PathBuf>,
    pub ptx_seq_len: usize,
    pub ptx_batch_size: usize,
    /// Skip malformed prompt records instead of stopping, counting them by reason and writing
    /// them to `out/rejects.jsonl`.
    pub skip_invalid: bool,
    /// How a policy without a chat template is prompted (`auto`/`cria`, or `alpaca`).
    pub format: cria_data::chat::FormatChoice,
}

impl Default for PpoDataConfig {
    fn default() -> Self {
        PpoDataConfig {
            prompts: vec![],
            prompt_len: 256,
            ptx: vec![],
            ptx_seq_len: 128,
            ptx_batch_size: 4,
            skip_invalid: false,
            format: cria_data::chat::FormatChoice::Auto,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// Prompts per iteration.
    pub batch_size: usize,
    /// Replies sampled to each prompt: 1 for PPO and 4 for RLOO and GRPO when unset (their
    /// baselines compare a prompt's replies with each other, so they need at least 2).
    pub samples_per_prompt: Option<usize>,
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            batch_size: 16,
            samples_per_prompt: None,
            max_new_tokens: 64,
            temperature: 1.0,
            top_k: None,
            top_p: None,
        }
    }
}

/// How the policy learns from scored replies.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// PPO with a value model and GAE, the KL penalty in the per-token reward (InstructGPT).
    #[default]
    Ppo,
    /// REINFORCE leave-one-out (Ahmadian et al. 2024): no value model; each reply's advantage is
    /// its KL-penalised reward minus the mean of its siblings', with a clipped reply-level ratio.
    Rloo,
    /// Group relative policy optimisation (Shao et al. 2024): no value model; each reply's
    /// advantage is its reward normalised within its prompt's group, the KL to the reference a
    /// per-token term of the loss.
    Grpo,
}

impl Algorithm {
    /// Whether the algorithm trains a value model.
    pub fn has_critic(self) -> bool {
        self == Algorithm::Ppo
    }
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Ppo => "ppo",
            Algorithm::Rloo => "rloo",
            Algorithm::Grpo => "grpo",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PpoParams {
    /// `ppo` (value model and GAE), `rloo` or `grpo` (critic-free, several replies per prompt).
    pub algorithm: Algorithm,
    /// GRPO: divide each group's centred rewards by their standard deviation (Dr. GRPO: off).
    pub scale_advantages: bool,
    /// β of the KL penalty (the starting value when `target_kl` is set): PPO's per token in the
    /// reward, RLOO's per reply in the reward, GRPO's a term of the loss.
    pub kl_coef: f64,
    /// When set, β adapts so the KL per reply approaches this many nats (Ziegler et al. 2019).
    pub target_kl: Option<f64>,
    /// Horizon of the adaptive controller, in replies.
    pub kl_horizon: f64,
    pub gamma: f64,
    pub lam: f64,
    /// ε of the clipped policy loss.
    pub clip_range: f64,
    /// ε of the clipped value loss.
    pub value_clip_range: f64,
    /// Passes over each iteration's replies.
    pub epochs: usize,
    /// Replies per optimizer step (divides the iteration's replies).
    pub minibatch_size: usize,
    /// Reward-model scores are clipped to ±this.
    pub reward_clip: f64,
    /// Normalise scores over each batch (keeping their mean).
    pub whiten_rewards: bool,
    /// Subtracted from the score of a reply that never reaches the end of its turn.
    pub missing_eos_penalty: f64,
    /// γ of PPO-ptx: weight of the pretraining loss (0 turns it off).
    pub ptx_coef: f64,
    /// Learning rate of the value model (`train.lr` when unset).
    pub value_lr: Option<f64>,
}

impl Default for PpoParams {
    fn default() -> Self {
        PpoParams {
            algorithm: Algorithm::Ppo,
            scale_advantages: true,
            kl_coef: 0.05,
            target_kl: None,
            kl_horizon: 10_000.0,
            gamma: 1.0,
            lam: 0.95,
            clip_range: 0.2,
            value_clip_range: 0.2,
            epochs: 2,
            minibatch_size: 8,
            reward_clip: 10.0,
            whiten_rewards: false,
            missing_eos_penalty: 1.0,
            ptx_coef: 0.0,
            value_lr: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// The run directory.
    pub out: PathBuf,
    /// The SFT checkpoint: the policy's start and the KL reference.
    pub init: PathBuf,
    /// The reward model (`cria rm`); it also initialises the value model.
    pub reward_model: PathBuf,
    /// `full` or `lora`.
    pub method: Method,
    pub lora: LoraConfig,
    pub data: PpoDataConfig,
    pub rollout: RolloutConfig,
    pub ppo: PpoParams,
    /// `steps` counts PPO iterations; `batch_size` and `grad_accum` are unused.
    pub train: TrainConfig,
}

impl PpoConfig {
    /// Replies sampled to each prompt.
    pub fn samples_per_prompt(&self) -> usize {
        let default = if self.ppo.algorithm.has_critic() {
            1
        } else {
            4
        };
        self.rollout.samples_per_prompt.unwrap_or(default)
    }
    /// Replies per iteration.
    pub fn replies(&self) -> usize {
        self.rollout.batch_size * self.samples_per_prompt()
    }
}

/// Every setting that would make PPO divide by zero, loop without learning or clamp backwards.
pub(super) fn validate(cfg: &PpoConfig) -> Result<()> {
    method::offered(cfg.method, "PPO", &[Method::Full, Method::Lora])?;
    if cfg.reward_model.as_os_str().is_empty() {
        return Err(TrainError::Invalid(
            "reward_model: name the reward-model checkpoint (`cria rm`)".into(),
        ));
    }
    let p = &cfg.ppo;
    let bad = |m: &str| Err(TrainError::Invalid(m.to_string()));
    if cfg.rollout.batch_size == 0 || p.minibatch_size == 0 || p.epochs == 0 {
        return bad("rollout.batch_size, ppo.minibatch_size and ppo.epochs must be at least 1");
    }
    if cfg.rollout.max_new_tokens == 0 {
        return bad("rollout.max_new_tokens must be at least 1");
    }
    if cfg.rollout.temperature <= 0.0 {
        return bad("rollout.temperature must be positive: PPO learns from sampled replies");
    }
    if p.clip_range <= 0.0 || p.value_clip_range <= 0.0 {
        return bad("ppo.clip_range and ppo.value_clip_range must be positive");
    }
    if p.target_kl.is_some_and(|t| t <= 0.0) || p.kl_horizon <= 0.0 {
        return bad("ppo.target_kl and ppo.kl_horizon must be positive");
    }
    if p.kl_coef < 0.0 || p.reward_clip <= 0.0 {
        return bad("ppo.kl_coef must be at least 0 and ppo.reward_clip positive");
    }
    if !(0.0..=1.0).contains(&p.gamma) || !(0.0..=1.0).contains(&p.lam) {
        return bad("ppo.gamma and ppo.lam must be within [0, 1]");
    }
    more_checks(cfg)?;
    if cfg.rollout.top_k.is_some() || cfg.rollout.top_p.is_some_and(|x| x < 1.0) {
        tracing::warn!(
            "rollout.top_k/top_p sample from a truncated distribution while PPO scores the \
             full (tempered) one: the updates are then slightly off-policy"
        );
    }
    Ok(())
}

/// The rest of PPO's ranges, each naming its key.
fn more_checks(cfg: &PpoConfig) -> Result<()> {
    let (p, r, d) = (&cfg.ppo, &cfg.rollout, &cfg.data);
    if d.prompts.is_empty() {
        return Err(TrainError::Invalid(
            "data.prompts is empty: name prompt files (or a preference file)".into(),
        ));
    }
    check::positive("rollout.temperature", r.temperature)?;
    if let Some(k) = r.top_k {
        check::at_least("rollout.top_k", k as u64, 1)?;
    }
    if let Some(x) = r.top_p
        && !(x > 0.0 && x <= 1.0)
    {
        return Err(check::bad(
            "rollout.top_p",
            format!("must be within (0, 1], got {x}"),
        ));
    }
    let k = cfg.samples_per_prompt();
    if k == 0 || (!p.algorithm.has_critic() && k < 2) {
        return Err(check::bad(
            "rollout.samples_per_prompt",
            format!(
                "{} needs at least 2 replies per prompt (its baseline compares a prompt's \
                 replies with each other), got {k}",
                p.algorithm.name()
            ),
        ));
    }
    if !cfg.replies().is_multiple_of(p.minibatch_size) {
        return Err(check::bad(
            "ppo.minibatch_size",
            format!(
                "{} does not divide the iteration's {} replies (rollout.batch_size = {} x \
                 samples_per_prompt = {k}): every minibatch must be full",
                p.minibatch_size,
                cfg.replies(),
                r.batch_size
            ),
        ));
    }
    check::at_least("data.prompt_len", d.prompt_len as u64, 1)?;
    check::finite("ppo.kl_coef", p.kl_coef)?;
    check::finite("ppo.missing_eos_penalty", p.missing_eos_penalty)?;
    check::non_negative("ppo.ptx_coef", p.ptx_coef)?;
    if p.ptx_coef > 0.0 {
        check::at_least("data.ptx_seq_len", d.ptx_seq_len as u64, 1)?;
        check::at_least("data.ptx_batch_size", d.ptx_batch_size as u64, 1)?;
    }
    if let Some(v) = p.value_lr {
        check::positive("ppo.value_lr", v)?;
    }
    method::validate(cfg.method, &cfg.lora, None)?;
    cfg.train.validate("train")
}

/// The lengths PPO needs within the policy's context: a prompt plus its reply, and PPO-ptx's
/// windows.
pub fn check_context(cfg: &PpoConfig, context: usize) -> Result<()> {
    let (prompt, reply) = (cfg.data.prompt_len, cfg.rollout.max_new_tokens);
    if prompt + reply > context {
        return Err(check::bad(
            "data.prompt_len",
            format!(
                "{prompt} + rollout.max_new_tokens {reply} = {} tokens exceed the policy's \
                 context of {context} (max_position_embeddings); lower either",
                prompt + reply
            ),
        ));
    }
    if cfg.ppo.ptx_coef > 0.0 {
        check::fits_context("data.ptx_seq_len", cfg.data.ptx_seq_len, context)?;
    }
    Ok(())
}
