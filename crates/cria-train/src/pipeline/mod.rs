//! `cria pipeline`: the whole recipe from one file. Stages run in order, each reading the one
//! before: world (optional) → tokenizer → pretrain → SFT → reward model → DPO and/or PPO →
//! eval → report. Every stage writes into `out/<stage>`; a stage that finished has a `.done`
//! marker there and is skipped on the next run, and a stage that was killed resumes from its
//! own last checkpoint (each training stage resumes exactly).
//!
//! Omitted sections fall back to defaults; with a `[world]` section every data path defaults
//! to the generated world's files. With a top-level `init` (an existing Hugging Face
//! checkpoint), the tokenizer and pretraining stages are skipped.

mod config;
mod plan;

pub use config::{EvalStage, PipelineConfig, Stage, TokenizerStage, WorldStage};
pub use plan::plan;

use crate::error::Result;
use crate::eval::{EvalInputs, Evaluation, evaluate};
use crate::method::Method;
use crate::metrics::Reporter;
use crate::stages::{dpo, ppo, pretrain, rm, sft};
use cria_world::World;
use serde::Serialize;
use std::path::{Path, PathBuf};

const DONE: &str = ".done";

/// Whether a stage already finished in an earlier run.
pub fn is_done(out: &Path, stage: &Stage) -> bool {
    out.join(stage.name()).join(DONE).exists()
}

fn mark_done(out: &Path, stage: &Stage) -> Result<()> {
    let dir = out.join(stage.name());
    std::fs::create_dir_all(&dir).map_err(|e| cria_core::CoreError::io(&dir, e))?;
    cria_core::fsutil::write_atomic(&dir.join(DONE), b"")?;
    Ok(())
}

/// Models the eval stage measures, in order: (name, checkpoint, adapter).
pub fn models(cfg: &PipelineConfig, stages: &[Stage]) -> Vec<(String, PathBuf, Option<PathBuf>)> {
    let out = &cfg.out;
    let base = cfg
        .init
        .clone()
        .unwrap_or_else(|| out.join("pretrain/checkpoint"));
    let mut m = vec![("base".to_string(), base.clone(), None)];
    for s in stages {
        let (name, ckpt) = match s {
            Stage::Sft(_) => ("sft", out.join("sft/checkpoint")),
            Stage::Dpo(d) => {
                let c = out.join("dpo/checkpoint");
                if d.method == Method::Lora {
                    m.push(("dpo".into(), out.join("sft/checkpoint"), Some(c)));
                    continue;
                }
                ("dpo", c)
            }
            Stage::Ppo(p) => {
                let c = out.join("ppo/checkpoint");
                if p.method == Method::Lora {
                    m.push(("ppo".into(), out.join("sft/checkpoint"), Some(c)));
                    continue;
                }
                ("ppo", c)
            }
            _ => continue,
        };
        m.push((name.to_string(), ckpt, None));
    }
    m
}

/// Evaluates every model of the pipeline; writes `eval/<model>.json` and
/// `eval/<model>-replies.jsonl`.
fn run_eval(cfg: &PipelineConfig, stages: &[Stage], e: &EvalStage) -> Result<()> {
    let out = &cfg.out;
    let world = cfg.world.as_ref().map(|_| out.join("world/eval"));
    let ws = |given: &Option<PathBuf>, n: &str| {
        given
            .clone()
            .or_else(|| world.as_ref().map(|w| w.join(n)).filter(|p| p.exists()))
    };
    let multiturn = ws(&e.multiturn, "multiturn.jsonl");
    let (facts, truthful, harmful, benign) = (
        ws(&e.facts, "facts.jsonl"),
        ws(&e.truthful, "truthful.csv"),
        ws(&e.harmful, "harmful.jsonl"),
        ws(&e.benign, "benign.jsonl"),
    );
    // Reward, win rate and KL are measured on the models' replies to the held-out prompts.
    let prompted = facts.is_some() || benign.is_some();
    if !prompted {
        tracing::warn!(
            "no held-out questions or benign prompts (eval.facts, eval.benign or a [world]): \
             reward, win rate and KL are not measured"
        );
    }
    let has_rm = prompted && stages.iter().any(|s| matches!(s, Stage::Rm(_)));
    let sft = out.join("sft/checkpoint");
    // The alignment tax: perplexity on the pretraining corpus's held-out tokens.
    let val = out.join("pretrain/data/val.bin");
    let corpus_ids = if val.exists() {
        let f = cria_data::shards::TokenFile::open(&val, e.seq_len)?;
        let ids: Vec<u32> = (0..f.num_sequences()).flat_map(|i| f.sequence(i)).collect();
        (!ids.is_empty()).then_some(ids)
    } else {
        None
    };
    for (name, ckpt, adapter) in models(cfg, stages) {
        let inputs = EvalInputs {
            facts: facts.clone(),
            multiturn: multiturn.clone(),
            truthful: truthful.clone(),
            harmful: harmful.clone(),
            benign: benign.clone(),
            reward_model: has_rm.then(|| out.join("rm/checkpoint")),
            against: has_rm.then(|| (sft.clone(), None)),
            corpus_ids: corpus_ids.clone(),
            seq_len: e.seq_len,
            reference: prompted.then(|| sft.clone()),
            kl_samples: e.kl_samples,
            max_new_tokens: e.max_new_tokens,
            format: Default::default(),
        };
        tracing::info!(model = %name, "evaluating");
        let r = evaluate(&ckpt, adapter.as_deref(), &inputs)?;
        r.write(&out.join("eval"), &name)?;
    }
    Ok(())
}

/// Runs one stage.
fn run_stage(
    cfg: &PipelineConfig,
    stages: &[Stage],
    stage: &Stage,
    rep: &mut dyn Reporter,
) -> Result<()> {
    let out = &cfg.out;
    match stage {
        Stage::World(w) => {
            let size = plan::size_of(&w.size)?;
            World::generate(w.seed, size)
                .write(&out.join("world"), size, w.seed, w.disagreement)
                .map_err(|e| cria_core::CoreError::io(out.join("world"), e))?;
        }
        Stage::Tokenizer(t) => {
            let docs = cria_data::corpus::read_corpus(&t.input)?;
            let opts = cria_core::tokenizer::TrainOptions {
                vocab_size: t.vocab_size,
                min_frequency: t.min_frequency,
            };
            cria_core::tokenizer::train(
                docs.into_iter().map(|d| d.text),
                &opts,
                &out.join("tokenizer"),
            )?;
        }
        Stage::Pretrain(p) => {
            pretrain::run(p, resolved(p.as_ref()), rep)?;
        }
        Stage::Sft(s) => {
            sft::run(s, resolved(s.as_ref()), rep)?;
        }
        Stage::Rm(r) => {
            rm::run(r, resolved(r.as_ref()), rep)?;
        }
        Stage::Dpo(d) => {
            dpo::run(d, resolved(d.as_ref()), rep)?;
        }
        Stage::Ppo(p) => {
            ppo::run(p, resolved(p.as_ref()), rep)?;
        }
        Stage::Eval(e) => {
            run_eval(cfg, stages, e)?;
        }
    }
    Ok(())
}

/// A stage config as the TOML it keeps beside its checkpoints.
fn resolved<T: Serialize>(v: &T) -> String {
    toml::to_string_pretty(v).unwrap_or_default()
}

/// What `pipeline plan` prints: one line per stage with its status.
pub fn describe(cfg: &PipelineConfig) -> Result<Vec<String>> {
    let stages = plan(cfg)?;
    Ok(stages
        .iter()
        .map(|s| {
            let status = if is_done(&cfg.out, s) {
                "done, skipped".to_string()
            } else if let Some(step) = resume_point(&cfg.out, s) {
                format!("resumes at step {step}")
            } else {
                "runs".to_string()
            };
            format!(
                "{:<10} {:<16} -> {}",
                s.name(),
                status,
                cfg.out.join(s.name()).display()
            )
        })
        .collect())
}

/// The step a killed training stage would resume from, if it checkpointed.
fn resume_point(out: &Path, s: &Stage) -> Option<u64> {
    let dir = out.join(s.name()).join("checkpoint");
    let (file, key) = match s {
        Stage::Ppo(_) => (ppo::STATE_FILE, "iteration"),
        _ => (crate::state::STATE_FILE, "step"),
    };
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?[key].as_u64()
}

/// What a finished pipeline has to show: its stages, and every model's evaluation (base,
/// SFT, DPO, PPO, in that order) for the report card.
pub struct Outcome {
    pub stages: Vec<Stage>,
    pub results: Vec<(String, Evaluation)>,
}

/// Runs every stage not yet done; `on_stage` is told when each starts or is skipped. The
/// evaluations come from this run or, when the eval stage was done earlier, from its files.
pub fn run(
    cfg: &PipelineConfig,
    rep: &mut dyn Reporter,
    on_stage: &mut dyn FnMut(&str, bool),
) -> Result<Outcome> {
    let stages = plan(cfg)?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| cria_core::CoreError::io(&cfg.out, e))?;
    for s in &stages {
        if is_done(&cfg.out, s) {
            on_stage(s.name(), true);
            continue;
        }
        on_stage(s.name(), false);
        run_stage(cfg, &stages, s, rep)?;
        mark_done(&cfg.out, s)?;
    }
    let results = models(cfg, &stages)
        .into_iter()
        .map(|(name, _, _)| {
            Ok((
                name.clone(),
                Evaluation::read(&cfg.out.join("eval"), &name)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Outcome { stages, results })
}
