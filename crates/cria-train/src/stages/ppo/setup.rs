//! What PPO loads once per run: the policy (with its adapter), the reward model and the
//! frozen reference, the tokenizer and chat formats they read, the encoded prompts, the
//! pretraining shards of PPO-ptx, and the fingerprint that refuses a resume under another setup.

use super::config::PpoConfig;
use crate::data::{CorpusSpec, TokenShards};
use crate::error::{Result, TrainError};
use crate::method::{self, Adapted};
use cria_core::generate::GenerateOptions;
use cria_core::hash::{FNV_OFFSET, fnv1a_ids};
use cria_core::sampling::SamplingParams;
use cria_core::tokenizer::Tokenizer;
use cria_core::{Llama, checkpoint, device, fsutil};
use cria_data::chat::{ChatFormat, Message};
use std::path::Path;

/// The four models of InstructGPT's step 3 (the value model starts as the reward model; the
/// critic-free algorithms have none).
pub(super) struct Models {
    pub policy: Llama,
    pub reference: Llama,
    pub reward: Llama,
    pub value: Option<Llama>,
}

/// Everything fixed for the run.
pub(super) struct Setup<'a> {
    pub tok: Tokenizer,
    /// The reward model's chat format (it may render differently from the policy's).
    pub rm_fmt: ChatFormat,
    pub pad: u32,
    /// Each prompt as messages (for the reward model) and as the policy's ids.
    pub prompts: Vec<(Vec<Message>, Vec<u32>)>,
    pub gen_opts: GenerateOptions,
    pub adapted: Adapted<'a>,
    pub fingerprint: String,
}

/// What the run starts from besides its fixed setup: the policy, the reference and the reward
/// model on the inference device, and PPO-ptx's pretraining shards.
pub(super) struct Loaded {
    pub policy: Llama,
    pub reference: Llama,
    pub reward: Llama,
    pub ptx: Option<TokenShards>,
}

/// Loads the models and everything the run keeps fixed.
pub(super) fn load(cfg: &PpoConfig) -> Result<(Setup<'_>, Loaded)> {
    let inf = device::inference_device();
    let mut policy = checkpoint::load_model(&cfg.init, &inf)?;
    method::require_lm(&policy, &cfg.init)?;
    super::config::check_context(cfg, policy.max_len())?;
    let mut tok = checkpoint::load_tokenizer(&cfg.init, &policy.cfg)?;
    let prompting = crate::format::resolve(cfg.data.format, &cfg.init, &mut policy, &mut tok)?;
    if prompting.added_tokens > 0 {
        return Err(TrainError::Invalid(format!(
            "init: {} has no chat template and no cria chat tokens: PPO starts from a model \
             fine-tuned on its chat format; run `cria sft` on it first",
            cfg.init.display()
        )));
    }
    let reward = checkpoint::load_model(&cfg.reward_model, &inf)?;
    method::require_reward_model(&reward, &cfg.reward_model, "reward_model")?;
    check_same_tokenizer(&cfg.init, &cfg.reward_model)?;
    let fmt = prompting.fmt;
    let rm_fmt = ChatFormat::for_checkpoint(&cfg.reward_model, &tok)?;
    let prompts = encode_prompts(cfg, &tok, &fmt)?;
    let ptx = ptx_shards(cfg, &tok)?;
    let adapted = method::apply(&mut policy, cfg.method, &cfg.lora, None, cfg.train.seed)?;
    let gen_opts = GenerateOptions {
        max_new_tokens: cfg.rollout.max_new_tokens,
        sampling: SamplingParams {
            temperature: cfg.rollout.temperature,
            top_k: cfg.rollout.top_k,
            top_p: cfg.rollout.top_p,
            seed: 0,
            ..Default::default()
        },
        stop_ids: fmt.stop_ids(&tok, &policy.cfg.eos_token_id),
    };
    let fingerprint = fingerprint(cfg, &policy, &reward, &prompts, &adapted);
    // The reference: the starting policy (LoRA: the same weights, adapter off).
    let reference = method::without_lora(&policy);
    let setup = Setup {
        pad: tok.pad_id(),
        tok,
        rm_fmt,
        prompts,
        gen_opts,
        adapted,
        fingerprint,
    };
    let loaded = Loaded {
        policy,
        reference,
        reward,
        ptx,
    };
    Ok((setup, loaded))
}

/// The prompts rendered with the reply prompt; those longer than `data.prompt_len` are
/// skipped and counted.
fn encode_prompts(
    cfg: &PpoConfig,
    tok: &Tokenizer,
    fmt: &ChatFormat,
) -> Result<Vec<(Vec<Message>, Vec<u32>)>> {
    let mut rejects = crate::data::rejects(cfg.data.skip_invalid);
    let convs = cria_data::prefs::read_prompts_with(&cfg.data.prompts, &mut rejects)?;
    crate::data::write_rejects(&rejects, &cfg.out)?;
    let mut prompts = Vec::new();
    let mut skipped = 0;
    for c in convs {
        let ids = fmt.encode(&c, tok, true, false)?.ids;
        if ids.len() > cfg.data.prompt_len {
            skipped += 1;
        } else {
            prompts.push((c, ids));
        }
    }
    if prompts.is_empty() {
        return Err(TrainError::Invalid(format!(
            "no prompt fits data.prompt_len = {} tokens ({skipped} skipped)",
            cfg.data.prompt_len
        )));
    }
    tracing::info!(prompts = prompts.len(), skipped, "PPO prompts ready");
    Ok(prompts)
}

/// PPO-ptx's pretraining shards (when `ppo.ptx_coef > 0`).
fn ptx_shards(cfg: &PpoConfig, tok: &Tokenizer) -> Result<Option<TokenShards>> {
    if cfg.ppo.ptx_coef <= 0.0 {
        return Ok(None);
    }
    if cfg.data.ptx.is_empty() {
        return Err(TrainError::Invalid(
            "ppo.ptx_coef > 0 needs data.ptx (pretraining corpus files)".into(),
        ));
    }
    let spec = CorpusSpec {
        inputs: &cfg.data.ptx,
        seq_len: cfg.data.ptx_seq_len,
        val_fraction: 0.01,
        seed: cfg.train.seed,
        batch_size: cfg.data.ptx_batch_size,
    };
    Ok(Some(TokenShards::prepare(
        &spec,
        tok,
        &cfg.out.join("ptx_shards"),
    )?))
}

fn fingerprint(
    cfg: &PpoConfig,
    policy: &Llama,
    reward: &Llama,
    prompts: &[(Vec<Message>, Vec<u32>)],
    adapted: &Adapted<'_>,
) -> String {
    let prompt_hash = prompts.iter().fold(FNV_OFFSET, |h, (_, ids)| {
        fnv1a_ids(ids, h ^ ids.len() as u64)
    });
    format!(
        "ppo policy={} reward={} prompts={} hash={prompt_hash:016x} data={:?} ppo={:?} \
         rollout={:?} method={:?} lora={:?} seed={}",
        serde_json::to_string(&policy.cfg.to_json()).expect("JSON"),
        serde_json::to_string(&reward.cfg.to_json()).expect("JSON"),
        prompts.len(),
        cfg.data,
        cfg.ppo,
        cfg.rollout,
        cfg.method,
        adapted.adapter,
        cfg.train.seed
    )
}

/// The tokenizers of policy and reward model must agree: the reward model reads the policy's
/// replies through the same vocabulary and special tokens.
fn check_same_tokenizer(policy: &Path, reward: &Path) -> Result<()> {
    let read = |d: &Path| -> Result<serde_json::Value> {
        let v = fsutil::read_json(&d.join("tokenizer.json"))?;
        Ok(serde_json::json!([
            v.get("model").and_then(|m| m.get("vocab")),
            v.get("added_tokens"),
        ]))
    };
    if read(policy)? != read(reward)? {
        return Err(TrainError::Invalid(format!(
            "reward_model: {} has a different tokenizer from the policy {} (their vocabularies \
             differ); train the reward model from the same SFT checkpoint",
            reward.join("tokenizer.json").display(),
            policy.join("tokenizer.json").display()
        )));
    }
    Ok(())
}
