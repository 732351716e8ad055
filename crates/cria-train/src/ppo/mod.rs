//! `cria ppo`: reinforcement learning from the reward model (InstructGPT step 3). Each iteration
//! samples replies to a batch of prompts with the policy (one left-padded batch, KV cache),
//! scores them with the reward model, subtracts a per-token KL penalty `β (log π - log π_sft)`
//! against the frozen SFT policy, estimates advantages with GAE against a value model
//! (initialised from the reward model), and runs epochs of minibatch updates of the clipped
//! policy and value losses; optionally mixed with the pretraining loss (PPO-ptx).
//!
//! Memory: the policy trains; the reference is the policy's starting weights (with LoRA, the
//! same weights with the adapter off, so nothing is copied); the reward model is frozen; the
//! value model trains. Checkpoints are written between iterations and hold everything a resume
//! needs (policy, value model, both optimizers, β); rollout seeds derive from the seed and the
//! iteration, so a resumed run draws the same replies.

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::losses::{gae, kl_penalised_rewards, ppo_policy_loss, ppo_value_loss, whiten};
use crate::optim::{AdamW, AdamWParams, clip_factor, global_norm};
use crate::prefs::{Layout, Row, make_batch};
use crate::pretrain::{DataConfig, PretrainConfig, PretrainData};
use crate::schedule::lr_at;
use crate::sft::{Method, Trainable};
use crate::state::{OPTIMIZER_FILE, optimizer_tensors, read_optimizer_file};
use crate::trainer::{
    Batch, DataSource, Metrics, Reporter, RunDir, StepLog, append_metrics, batch_loss, input_ids,
    set_flat, truncate_metrics,
};
use cria_core::checkpoint::{self, SaveExtras};
use cria_core::config::{Head, ModelConfig};
use cria_core::generate::{Finish, GenerateOptions, generate_batch};
use cria_core::nn::AdapterConfig;
use cria_core::nn::lora::{is_lora_param, mix};
use cria_core::params::{ParamMut, Params, to_vec};
use cria_core::sampling::SamplingParams;
use cria_core::tokenizer::PAD;
use cria_core::weights::{VarBuilder, WeightMap};
use cria_core::{Device, Int, Llama, Tensor, TensorData, device, fsutil};
use cria_data::chat::{ChatFormat, Message, Role};
use cria_data::shards::Order;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod config;
use config::validate;
pub use config::{PpoConfig, PpoDataConfig, PpoParams, RolloutConfig};

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
}

/// One iteration's replies and the per-token quantities PPO needs, `B*T` each (row-major over
/// the right-padded batch of prompt + reply).
struct Buffer {
    batch: Batch,
    mask: Vec<f32>,
    old_logp: Vec<f32>,
    old_values: Vec<f32>,
    adv: Vec<f32>,
    returns: Vec<f32>,
}

/// Log-probability of every target token under the sampling distribution (logits divided by
/// the rollout temperature).
fn token_logps(model: &Llama, batch: &Batch, device: &Device, temperature: f64) -> Tensor<2> {
    logps_and_logits(model, batch, device, temperature).0
}

/// Log-probability of every target token, and the (tempered) logits they come from.
fn logps_and_logits(
    model: &Llama,
    batch: &Batch,
    device: &Device,
    temperature: f64,
) -> (Tensor<2>, Tensor<3>) {
    let mut logits = model.forward(input_ids(batch, device), None);
    if temperature != 1.0 {
        logits = logits / temperature;
    }
    let targets = Tensor::<2, Int>::from_data(
        TensorData::new(
            batch.targets.iter().map(|&x| x as i64).collect::<Vec<_>>(),
            [batch.b, batch.t],
        ),
        device,
    );
    (
        cria_core::model::token_logprobs(logits.clone(), targets),
        logits,
    )
}

/// Mean entropy (nats) of the next-token distributions at masked positions (no gradient).
fn entropy(logits: Tensor<3>, mask: &[f32]) -> f64 {
    let lp = burn::tensor::activation::log_softmax(logits.detach(), 2);
    let h = (lp.clone().exp() * lp).sum_dim(2).neg();
    let h = to_vec(h);
    let n = mask.iter().sum::<f32>().max(1.0) as f64;
    h.iter()
        .zip(mask)
        .map(|(a, m)| (*a * *m) as f64)
        .sum::<f64>()
        / n
}

/// Rows `idx` of a buffer as a batch (trimmed to their longest row) and their token quantities.
fn slice(buf: &Buffer, idx: &[usize]) -> (Batch, [Vec<f32>; 5]) {
    let t = buf.batch.t;
    let len = |r: usize| buf.batch.aux.lengths[r];
    let w = idx.iter().map(|&r| len(r)).max().unwrap_or(1).max(1);
    let mut b = Batch {
        b: idx.len(),
        t: w,
        ..Default::default()
    };
    let mut cols: [Vec<f32>; 5] = Default::default();
    for &r in idx {
        let range = r * t..r * t + w;
        b.inputs.extend_from_slice(&buf.batch.inputs[range.clone()]);
        b.targets
            .extend_from_slice(&buf.batch.targets[range.clone()]);
        b.aux.lengths.push(len(r));
        for (c, src) in cols.iter_mut().zip([
            &buf.mask,
            &buf.old_logp,
            &buf.old_values,
            &buf.adv,
            &buf.returns,
        ]) {
            c.extend_from_slice(&src[range.clone()]);
        }
    }
    (b, cols)
}

/// Everything loaded once per run.
struct Models {
    policy: Llama,
    reference: Llama,
    reward: Llama,
    value: Llama,
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

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs PPO; returns the checkpoint directory.
pub fn run(cfg: &PpoConfig, resolved: String, rep: &mut dyn Reporter) -> Result<PathBuf> {
    let p = &cfg.ppo;
    if cfg.method == Method::LlamaAdapter {
        return Err(TrainError::Invalid(
            "method: PPO trains `full` or `lora`".into(),
        ));
    }
    if cfg.reward_model.as_os_str().is_empty() {
        return Err(TrainError::Invalid(
            "reward_model: name the reward-model checkpoint (`cria rm`)".into(),
        ));
    }
    validate(cfg)?;
    let inf = device::inference_device();
    let train_dev = device::training_device();
    let mut policy = checkpoint::load_model(&cfg.init, &inf)?;
    crate::sft::require_lm(&policy, &cfg.init)?;
    let tok = checkpoint::load_tokenizer(&cfg.init, &policy.cfg)?;
    let reward = checkpoint::load_model(&cfg.reward_model, &inf)?;
    if reward.cfg.head != Head::Score {
        return Err(TrainError::Invalid(format!(
            "reward_model: {} is a language model, not a reward model (train one with `cria rm`)",
            cfg.reward_model.display()
        )));
    }
    check_same_tokenizer(&cfg.init, &cfg.reward_model)?;
    let fmt = ChatFormat::for_checkpoint(&cfg.init, &tok)?;
    let rm_fmt = ChatFormat::for_checkpoint(&cfg.reward_model, &tok)?;
    let pad = tok.token_to_id(PAD).or(tok.eos_id).unwrap_or(0);
    let stop_ids = fmt.stop_ids(&tok, &policy.cfg.eos_token_id);

    let convs = cria_data::prefs::read_prompts(&cfg.data.prompts)?;
    let mut prompts: Vec<(Vec<Message>, Vec<u32>)> = Vec::new();
    let mut skipped = 0;
    let max_prompt = cfg.data.prompt_len.min(policy.max_len().saturating_sub(1));
    for c in convs {
        let ids = fmt.encode(&c, &tok, true, false)?.ids;
        if ids.len() > max_prompt {
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

    let mut ptx = if p.ptx_coef > 0.0 {
        if cfg.data.ptx.is_empty() {
            return Err(TrainError::Invalid(
                "ppo.ptx_coef > 0 needs data.ptx (pretraining corpus files)".into(),
            ));
        }
        let pc = PretrainConfig {
            data: DataConfig {
                inputs: cfg.data.ptx.clone(),
                seq_len: cfg.data.ptx_seq_len,
                val_fraction: 0.01,
            },
            train: TrainConfig {
                seed: cfg.train.seed,
                batch_size: cfg.data.ptx_batch_size,
                ..TrainConfig::default()
            },
            ..Default::default()
        };
        Some(PretrainData::prepare(
            &pc,
            &tok,
            &cfg.out.join("ptx_shards"),
        )?)
    } else {
        None
    };

    let (adapter, trainable): (Option<AdapterConfig<'_>>, Option<&Trainable>) = match cfg.method {
        Method::Lora => {
            policy.add_lora(&cfg.lora, cfg.train.seed)?;
            (Some(AdapterConfig::Lora(&cfg.lora)), Some(&is_lora_param))
        }
        _ => (None, None),
    };
    let prompt_hash = prompts
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, (_, ids)| {
            let bytes: Vec<u8> = ids.iter().flat_map(|x| x.to_le_bytes()).collect();
            crate::pretrain::fnv1a(&bytes, h ^ ids.len() as u64)
        });
    let fingerprint = format!(
        "ppo policy={} reward={} prompts={} hash={prompt_hash:016x} data={:?} ppo={:?} \
         rollout={:?} method={:?} lora={:?} seed={}",
        serde_json::to_string(&policy.cfg.to_json()).expect("JSON"),
        serde_json::to_string(&reward.cfg.to_json()).expect("JSON"),
        prompts.len(),
        cfg.data,
        p,
        cfg.rollout,
        cfg.method,
        adapter,
        cfg.train.seed
    );
    let run = RunDir {
        root: cfg.out.clone(),
    };
    std::fs::create_dir_all(&run.root).map_err(|e| cria_core::CoreError::io(&run.root, e))?;
    let ckpt = run.checkpoint();
    fsutil::recover_dir(&ckpt)?;

    // The reference: the starting policy (LoRA: the same weights, adapter off).
    let mut reference = policy.clone();
    for layer in &mut reference.layers {
        for (_, lin) in layer.projections_mut() {
            lin.lora = None;
        }
    }
    let (mut m, mut opt, mut vopt, mut st) =
        if ckpt.join(STATE_FILE).exists() {
            let st: PpoState = serde_json::from_slice(&fsutil::read(&ckpt.join(STATE_FILE))?)
                .map_err(|e| TrainError::Resume {
                    path: ckpt.join(STATE_FILE),
                    msg: format!("corrupt PPO state: {e}"),
                })?;
            if st.fingerprint != fingerprint {
                return Err(TrainError::Resume {
                    path: ckpt.join(STATE_FILE),
                    msg: "the checkpoint was made with a different setup; start a new run \
                      directory or restore the original config"
                        .into(),
                });
            }
            let policy = match adapter {
                None => checkpoint::load_model(&ckpt, &inf)?,
                Some(_) => {
                    let mut b = checkpoint::load_model(&cfg.init, &inf)?;
                    b.load_adapter(&ckpt)?;
                    b
                }
            };
            tracing::info!(iteration = st.iteration, "resuming PPO");
            let models = Models {
                policy,
                reference,
                value: load_value(&ckpt, &inf)?,
                reward,
            };
            (
                models,
                read_optimizer_file(&ckpt.join(OPTIMIZER_FILE))?,
                read_optimizer_file(&ckpt.join(VALUE_OPTIMIZER))?,
                st,
            )
        } else {
            let value = reward.clone();
            (
                Models {
                    policy,
                    reference,
                    reward,
                    value,
                },
                AdamW::default(),
                AdamW::default(),
                PpoState {
                    iteration: 0,
                    beta: p.kl_coef,
                    replies_seen: 0,
                    ptx_cursor: 0,
                    fingerprint: fingerprint.clone(),
                },
            )
        };
    truncate_metrics(&run.metrics(), st.iteration)?;
    let all = |_: &str| true;
    let trainable: &Trainable = trainable.unwrap_or(&all);
    m.policy = m.policy.to_device(&train_dev).require_grad_where(trainable);
    m.value = m.value.to_device(&train_dev).require_grad();
    let hp = AdamWParams {
        beta1: cfg.train.beta1,
        beta2: cfg.train.beta2,
        eps: cfg.train.eps,
        weight_decay: cfg.train.weight_decay,
    };
    let mut order = Order::new(cfg.train.seed, prompts.len());
    let sampling = SamplingParams {
        temperature: cfg.rollout.temperature,
        top_k: cfg.rollout.top_k,
        top_p: cfg.rollout.top_p,
        seed: 0,
    };
    let gen_opts = GenerateOptions {
        max_new_tokens: cfg.rollout.max_new_tokens,
        sampling,
        stop_ids,
    };
    rep.start(st.iteration, cfg.train.steps);
    let started = Instant::now();
    while st.iteration < cfg.train.steps {
        let t0 = Instant::now();
        let k = st.iteration;
        let bs = cfg.rollout.batch_size as u64;
        let chosen: Vec<usize> = (0..bs).map(|j| order.index(k * bs + j)).collect();
        let key = mix(cfg.train.seed ^ mix(k));
        let seeds: Vec<u64> = (0..chosen.len() as u64)
            .map(|j| key.wrapping_add(j))
            .collect();

        // Roll out with the current policy (no graph).
        let pol_inf = m.policy.clone().to_device(&inf);
        let prompt_ids: Vec<Vec<u32>> = chosen.iter().map(|&i| prompts[i].1.clone()).collect();
        let replies = generate_batch(&pol_inf, &prompt_ids, &gen_opts, &seeds, pad)?;
        let t_rollout = t0.elapsed().as_secs_f64();

        // Score each reply as the reward model reads a conversation.
        let mut convs = Vec::with_capacity(chosen.len());
        for (&i, (reply, _)) in chosen.iter().zip(&replies) {
            let text = tok.decode(reply, true)?;
            let mut c = prompts[i].0.clone();
            c.push(Message::new(Role::Assistant, text.trim()));
            convs.push(c);
        }
        let raw = crate::rm::score_conversations(&m.reward, &rm_fmt, &tok, &convs, 16)?;
        let mut scores: Vec<f32> = raw.clone();
        if p.whiten_rewards {
            let mask = vec![true; scores.len()];
            whiten(&mut scores, &mask, false);
        }
        let finished: Vec<bool> = replies.iter().map(|(_, f)| *f == Finish::Stop).collect();
        for (s, f) in scores.iter_mut().zip(&finished) {
            *s = s.clamp(-p.reward_clip as f32, p.reward_clip as f32);
            if !f {
                *s -= p.missing_eos_penalty as f32;
            }
        }

        let t_score = t0.elapsed().as_secs_f64() - t_rollout;
        // Per-token log-probs (policy, reference), values, KL-penalised rewards and GAE.
        let groups: Vec<Vec<Row>> = prompt_ids
            .iter()
            .zip(&replies)
            .map(|(pr, (reply, _))| {
                let ids: Vec<u32> = pr.iter().chain(reply).copied().collect();
                let response = (0..ids.len()).map(|x| x >= pr.len()).collect();
                vec![Row {
                    ids,
                    response,
                    ref_logp: 0.0,
                }]
            })
            .collect();
        let batch = make_batch(groups.iter(), pad, Layout::Tokens);
        let mask: Vec<f32> = batch.weights.clone().expect("token layout");
        let temp = cfg.rollout.temperature;
        let old_logp = to_vec(token_logps(&pol_inf, &batch, &inf, temp));
        let ref_logp = to_vec(token_logps(&m.reference, &batch, &inf, temp));
        let val_inf = m.value.clone().to_device(&inf);
        let old_values = to_vec(val_inf.scores(input_ids(&batch, &inf)));
        let t = batch.t;
        let (mut adv, mut returns) = (vec![0f32; mask.len()], vec![0f32; mask.len()]);
        let (mut kl_sum, mut reply_tokens) = (0.0f64, 0usize);
        for (r, &score) in scores.iter().enumerate() {
            let pos: Vec<usize> = (r * t..(r + 1) * t).filter(|&i| mask[i] > 0.0).collect();
            if pos.is_empty() {
                continue;
            }
            let pick = |v: &[f32]| pos.iter().map(|&i| v[i]).collect::<Vec<f32>>();
            let (lp, rl, vals) = (pick(&old_logp), pick(&ref_logp), pick(&old_values));
            kl_sum += lp
                .iter()
                .zip(&rl)
                .map(|(a, b)| (*a - *b) as f64)
                .sum::<f64>();
            reply_tokens += pos.len();
            let rewards = kl_penalised_rewards(&lp, &rl, score, st.beta);
            let (a, ret) = gae(&rewards, &vals, p.gamma, p.lam);
            for ((&i, a), ret) in pos.iter().zip(a).zip(ret) {
                adv[i] = a;
                returns[i] = ret;
            }
        }
        let maskb: Vec<bool> = mask.iter().map(|x| *x > 0.0).collect();
        whiten(&mut adv, &maskb, true);
        let kl = kl_sum / batch.b as f64;
        let buf = Buffer {
            batch,
            mask,
            old_logp,
            old_values,
            adv,
            returns,
        };

        let t_prepare = t0.elapsed().as_secs_f64() - t_rollout - t_score;
        // Epochs of minibatch updates.
        let lr = lr_at(&cfg.train, k);
        let vlr = p.value_lr.unwrap_or(cfg.train.lr) * lr / cfg.train.lr.max(f64::MIN_POSITIVE);
        let mut acc = Metrics::new();
        let mut updates = 0usize;
        let (mut last_norm, mut ent_sum) = (0.0f64, 0.0f64);
        for epoch in 0..p.epochs {
            let mut rows = Order::new(key ^ mix(epoch as u64 + 1), buf.batch.b);
            let perm: Vec<usize> = (0..buf.batch.b as u64).map(|x| rows.index(x)).collect();
            for mb in perm.chunks(p.minibatch_size) {
                let (b, [mk, olp, ov, ad, ret]) = slice(&buf, mb);
                let (logp, logits) = logps_and_logits(&m.policy, &b, &train_dev, temp);
                if epoch == 0 {
                    ent_sum += entropy(logits, &mk) * mb.len() as f64;
                }
                let (mut loss, pm) = ppo_policy_loss(logp, &olp, &ad, &mk, p.clip_range);
                let pg = loss.clone().into_scalar::<f32>() as f64;
                if let Some(data) = ptx.as_mut() {
                    let pb = data.train_batch(st.ptx_cursor)?;
                    st.ptx_cursor += 1;
                    let l = batch_loss(&m.policy, &pb, &train_dev);
                    *acc.entry("ptx_loss".into()).or_default() +=
                        l.clone().into_scalar::<f32>() as f64;
                    loss = loss + l * p.ptx_coef;
                }
                if !pg.is_finite() {
                    return Err(TrainError::NonFinite {
                        step: k + 1,
                        value: format!("{pg}"),
                        checkpoint: ckpt.clone(),
                    });
                }
                last_norm = update(&mut m.policy, &mut opt, loss, trainable, lr, &hp, cfg)?;
                let values = m.value.scores(input_ids(&b, &train_dev));
                let (vloss, vm) = ppo_value_loss(values, &ov, &ret, &mk, p.value_clip_range);
                let vl = vloss.clone().into_scalar::<f32>() as f64;
                update(&mut m.value, &mut vopt, vloss, &all, vlr, &hp, cfg)?;
                for (k2, v) in pm.into_iter().chain(vm) {
                    *acc.entry(k2).or_default() += v;
                }
                *acc.entry("policy_loss".into()).or_default() += pg;
                *acc.entry("value_loss".into()).or_default() += vl;
                updates += 1;
            }
        }
        for v in acc.values_mut() {
            *v /= updates.max(1) as f64;
        }
        // Where the iteration's time went: sampling, reward-model scoring, the old/reference
        // log-probs and values with GAE, and the updates.
        let total = t0.elapsed().as_secs_f64();
        acc.insert("time_rollout_s".into(), t_rollout);
        acc.insert("time_score_s".into(), t_score);
        acc.insert("time_prepare_s".into(), t_prepare);
        acc.insert(
            "time_update_s".into(),
            total - t_rollout - t_score - t_prepare,
        );
        // Adaptive KL controller: β moves toward the target, at most ±20% of the error.
        if let Some(target) = p.target_kl {
            let err = (kl / target - 1.0).clamp(-0.2, 0.2);
            st.beta *= 1.0 + err * buf.batch.b as f64 / p.kl_horizon;
        }
        st.iteration += 1;
        st.replies_seen += buf.batch.b as u64;
        let n = buf.batch.b as f64;
        let mean = |v: &[f32]| v.iter().map(|x| *x as f64).sum::<f64>() / n;
        let reply_len = replies.iter().map(|(r, _)| r.len() as f64).sum::<f64>() / n;
        let mut metrics = acc;
        metrics.insert("reward".into(), mean(&raw));
        metrics.insert("kl".into(), kl);
        metrics.insert("beta".into(), st.beta);
        metrics.insert("entropy".into(), ent_sum / n);
        metrics.insert("reply_len".into(), reply_len);
        metrics.insert(
            "finished".into(),
            finished.iter().filter(|f| **f).count() as f64 / n,
        );
        if let Some(rss) = peak_rss_mib() {
            metrics.insert("peak_rss_mib".into(), rss);
        }
        let log = StepLog {
            step: st.iteration,
            loss: metrics["policy_loss"],
            lr,
            grad_norm: last_norm,
            tokens_per_s: reply_tokens as f64 / t0.elapsed().as_secs_f64(),
            tokens_seen: st.replies_seen,
            elapsed_s: started.elapsed().as_secs_f64(),
            val_loss: None,
            metrics,
        };
        append_metrics(&run.metrics(), &log)?;
        rep.step(&log);
        let last = st.iteration == cfg.train.steps;
        if last || (cfg.train.save_every > 0 && st.iteration % cfg.train.save_every == 0) {
            save(&m, &opt, &vopt, &st, cfg, &resolved, adapter, &ckpt, &inf)?;
            rep.saved(st.iteration, &ckpt);
        }
    }
    Ok(ckpt)
}

/// Backward, global-norm clipping and an AdamW step of the parameters `trainable` accepts;
/// returns the gradient norm before clipping.
fn update(
    model: &mut Llama,
    opt: &mut AdamW,
    loss: Tensor<1>,
    trainable: &Trainable,
    lr: f64,
    hp: &AdamWParams,
    cfg: &PpoConfig,
) -> Result<f64> {
    let grads = loss.backward();
    let mut g: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut probe = model.clone();
    probe.visit("", &mut |name, p| {
        if !trainable(name) {
            return;
        }
        let v = match &p {
            ParamMut::Vector(t) => t.grad(&grads).map(to_vec),
            ParamMut::Matrix { t, .. } => t.grad(&grads).map(to_vec),
        };
        if let Some(v) = v {
            g.insert(name.to_string(), v);
        }
    });
    let norm = global_norm(&g.values().map(|x| x.as_slice()).collect::<Vec<_>>());
    if !norm.is_finite() {
        return Err(TrainError::Invalid(format!(
            "non-finite gradient norm {norm}; lower train.lr or raise ppo.kl_coef"
        )));
    }
    let factor = clip_factor(norm, cfg.train.grad_clip) as f32;
    let device = model.device();
    opt.begin_step();
    model.visit("", &mut |name, p| {
        let Some(grad) = g.get_mut(name) else {
            return;
        };
        if factor != 1.0 {
            grad.iter_mut().for_each(|x| *x *= factor);
        }
        let decay = matches!(p, ParamMut::Matrix { .. });
        let mut values = to_vec(p.flat());
        opt.update(name, &mut values, grad, lr, hp, decay);
        set_flat(p, values, &device);
    });
    Ok(norm)
}

#[allow(clippy::too_many_arguments)]
fn save(
    m: &Models,
    opt: &AdamW,
    vopt: &AdamW,
    st: &PpoState,
    cfg: &PpoConfig,
    resolved: &str,
    adapter: Option<AdapterConfig<'_>>,
    ckpt: &Path,
    inf: &Device,
) -> Result<()> {
    let policy = m.policy.clone().to_device(inf);
    let value = m.value.clone().to_device(inf);
    let value_cfg = serde_json::to_vec_pretty(&value.cfg.to_json()).expect("JSON");
    let extras = SaveExtras {
        tokenizer_from: Some(&cfg.init),
        files: vec![
            (
                STATE_FILE.to_string(),
                serde_json::to_vec_pretty(st).expect("JSON"),
            ),
            ("ppo.toml".to_string(), resolved.as_bytes().to_vec()),
            (VALUE_CONFIG.to_string(), value_cfg),
        ],
        tensors: vec![
            (OPTIMIZER_FILE.to_string(), optimizer_tensors(opt)),
            (VALUE_OPTIMIZER.to_string(), optimizer_tensors(vopt)),
            (VALUE_WEIGHTS.to_string(), checkpoint::named_tensors(&value)),
        ],
        adapter: adapter.map(|a| (a, cfg.init.to_str().unwrap_or_default())),
    };
    checkpoint::save(&policy, ckpt, extras)?;
    Ok(())
}
