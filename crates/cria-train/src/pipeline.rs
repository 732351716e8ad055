//! `cria pipeline`: the whole recipe from one file. Stages run in order, each reading the one
//! before: world (optional) → tokenizer → pretrain → SFT → reward model → DPO and/or PPO →
//! eval → report. Every stage writes into `out/<stage>`; a stage that finished has a `.done`
//! marker there and is skipped on the next run, and a stage that was killed resumes from its
//! own last checkpoint (each training stage resumes exactly).
//!
//! Omitted sections fall back to defaults; with a `[world]` section every data path defaults
//! to the generated world's files. With a top-level `init` (an existing Hugging Face
//! checkpoint), the tokenizer and pretraining stages are skipped.

use crate::error::{Result, TrainError};
use crate::eval::{EvalInputs, Evaluation, evaluate};
use crate::method::Method;
use crate::metrics::Reporter;
use crate::stages::dpo::DpoConfig;
use crate::stages::ppo::PpoConfig;
use crate::stages::pretrain::PretrainConfig;
use crate::stages::rm::RmConfig;
use crate::stages::sft::SftConfig;
use crate::stages::{dpo, ppo, pretrain, rm, sft};
use cria_world::{World, WorldSize};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorldStage {
    pub seed: u64,
    /// `tiny` or `demo`.
    pub size: String,
    /// Chance the simulated labeller swaps each adjacent pair of a ranking.
    pub disagreement: f64,
}

impl Default for WorldStage {
    fn default() -> Self {
        WorldStage {
            seed: 1,
            size: "demo".into(),
            disagreement: 0.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerStage {
    /// Corpus files or directories (default: the world's corpus).
    pub input: Vec<PathBuf>,
    pub vocab_size: usize,
    pub min_frequency: u64,
}

impl Default for TokenizerStage {
    fn default() -> Self {
        TokenizerStage {
            input: vec![],
            vocab_size: 2048,
            min_frequency: 2,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalStage {
    pub max_new_tokens: usize,
    pub kl_samples: usize,
    /// Window for the held-out perplexity (on the pretraining validation tokens).
    pub seq_len: usize,
    /// The report's bound on an aligned model's KL to SFT (nats per reply).
    pub max_kl: f64,
    /// Held-out sets (default: the world's `eval/` files): questions with answers
    /// (`{question, answer(s)}`), a TruthfulQA-layout CSV, harmful and benign prompts.
    pub facts: Option<PathBuf>,
    pub truthful: Option<PathBuf>,
    pub harmful: Option<PathBuf>,
    pub benign: Option<PathBuf>,
}

impl Default for EvalStage {
    fn default() -> Self {
        EvalStage {
            max_new_tokens: 48,
            kl_samples: 2,
            seq_len: 128,
            max_kl: 10.0,
            facts: None,
            truthful: None,
            harmful: None,
            benign: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Every stage writes into a directory of its own under this one.
    pub out: PathBuf,
    /// Start from this Hugging Face checkpoint: no tokenizer or pretraining stage.
    pub init: Option<PathBuf>,
    pub world: Option<WorldStage>,
    pub tokenizer: Option<TokenizerStage>,
    pub pretrain: Option<PretrainConfig>,
    pub sft: Option<SftConfig>,
    pub rm: Option<RmConfig>,
    pub dpo: Option<DpoConfig>,
    pub ppo: Option<PpoConfig>,
    pub eval: Option<EvalStage>,
}

/// One stage of a resolved plan.
pub enum Stage {
    World(WorldStage),
    Tokenizer(TokenizerStage),
    Pretrain(Box<PretrainConfig>),
    Sft(Box<SftConfig>),
    Rm(Box<RmConfig>),
    Dpo(Box<DpoConfig>),
    Ppo(Box<PpoConfig>),
    Eval(EvalStage),
}

impl Stage {
    pub fn name(&self) -> &'static str {
        match self {
            Stage::World(_) => "world",
            Stage::Tokenizer(_) => "tokenizer",
            Stage::Pretrain(_) => "pretrain",
            Stage::Sft(_) => "sft",
            Stage::Rm(_) => "rm",
            Stage::Dpo(_) => "dpo",
            Stage::Ppo(_) => "ppo",
            Stage::Eval(_) => "eval",
        }
    }
}

const DONE: &str = ".done";

fn or_default(paths: &mut Vec<PathBuf>, default: Option<PathBuf>) {
    if paths.is_empty() {
        paths.extend(default);
    }
}

fn size_of(name: &str) -> Result<WorldSize> {
    match name {
        "tiny" => Ok(WorldSize::TINY),
        "demo" => Ok(WorldSize::DEMO),
        other => Err(TrainError::Invalid(format!(
            "world.size `{other}`: expected `tiny` or `demo`"
        ))),
    }
}

/// A file of the generated world (`None` without a `[world]` section).
fn world_file(cfg: &PipelineConfig, name: &str) -> Option<PathBuf> {
    cfg.world.as_ref().map(|_| cfg.out.join("world").join(name))
}

/// The stages a config asks for, with every stage's inputs wired to the previous outputs.
pub fn plan(cfg: &PipelineConfig) -> Result<Vec<Stage>> {
    if cfg.out.as_os_str().is_empty() {
        return Err(TrainError::Invalid(
            "out: name the pipeline's directory".into(),
        ));
    }
    let mut stages = Vec::new();
    if let Some(w) = &cfg.world {
        size_of(&w.size)?;
        stages.push(Stage::World(w.clone()));
    }
    let base = plan_base(cfg, &mut stages)?;
    plan_sft(cfg, base, &mut stages)?;
    plan_preferences(cfg, &mut stages)?;
    stages.push(Stage::Eval(cfg.eval.clone().unwrap_or_default()));
    Ok(stages)
}

/// The base model: `init`, or a tokenizer and a model pretrained on the corpus.
fn plan_base(cfg: &PipelineConfig, stages: &mut Vec<Stage>) -> Result<PathBuf> {
    if let Some(init) = &cfg.init {
        return Ok(init.clone());
    }
    let out = &cfg.out;
    let mut t = cfg.tokenizer.clone().unwrap_or_default();
    or_default(&mut t.input, world_file(cfg, "corpus"));
    if t.input.is_empty() {
        return Err(TrainError::Invalid(
            "tokenizer.input: name a corpus (or add a [world] section)".into(),
        ));
    }
    let corpus = t.input.clone();
    stages.push(Stage::Tokenizer(t));
    let mut p = cfg.pretrain.clone().ok_or_else(|| {
        TrainError::Invalid("[pretrain]: describe the model to pretrain (or give `init`)".into())
    })?;
    p.out = out.join("pretrain");
    p.tokenizer = Some(out.join("tokenizer"));
    if p.data.inputs.is_empty() {
        p.data.inputs = corpus;
    }
    stages.push(Stage::Pretrain(Box::new(p)));
    Ok(out.join("pretrain/checkpoint"))
}

fn plan_sft(cfg: &PipelineConfig, base: PathBuf, stages: &mut Vec<Stage>) -> Result<()> {
    let mut sft = cfg.sft.clone().ok_or_else(|| {
        TrainError::Invalid("[sft]: the instruction-tuning stage is required".into())
    })?;
    sft.init = base;
    sft.out = cfg.out.join("sft");
    or_default(&mut sft.data.train, world_file(cfg, "sft.jsonl"));
    or_default(&mut sft.data.val, world_file(cfg, "sft-val.jsonl"));
    let sft_is_adapter = sft.method != Method::Full;
    if sft_is_adapter && (cfg.rm.is_some() || cfg.dpo.is_some() || cfg.ppo.is_some()) {
        return Err(TrainError::Invalid(
            "sft.method: the preference stages start from a full SFT checkpoint; use \
             method = \"full\" (or export a merged one and give it as `init`)"
                .into(),
        ));
    }
    stages.push(Stage::Sft(Box::new(sft)));
    Ok(())
}

/// The reward model, DPO and PPO, each starting from the SFT checkpoint.
fn plan_preferences(cfg: &PipelineConfig, stages: &mut Vec<Stage>) -> Result<()> {
    let out = &cfg.out;
    let sft_ckpt = out.join("sft/checkpoint");
    let prefs = |train: &mut Vec<PathBuf>, val: &mut Vec<PathBuf>| {
        or_default(train, world_file(cfg, "prefs.jsonl"));
        or_default(val, world_file(cfg, "prefs-val.jsonl"));
    };
    if let Some(rm) = &cfg.rm {
        let mut rm = rm.clone();
        rm.init = sft_ckpt.clone();
        rm.out = out.join("rm");
        prefs(&mut rm.data.train, &mut rm.data.val);
        stages.push(Stage::Rm(Box::new(rm)));
    }
    if let Some(d) = &cfg.dpo {
        let mut d = d.clone();
        d.init = sft_ckpt.clone();
        d.out = out.join("dpo");
        prefs(&mut d.data.train, &mut d.data.val);
        stages.push(Stage::Dpo(Box::new(d)));
    }
    if let Some(p) = &cfg.ppo {
        if cfg.rm.is_none() {
            return Err(TrainError::Invalid(
                "[ppo] needs a [rm] stage to train its reward model".into(),
            ));
        }
        let mut p = p.clone();
        p.init = sft_ckpt;
        p.reward_model = out.join("rm/checkpoint");
        p.out = out.join("ppo");
        or_default(&mut p.data.prompts, world_file(cfg, "prompts.jsonl"));
        stages.push(Stage::Ppo(Box::new(p)));
    }
    Ok(())
}

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
            let size = size_of(&w.size)?;
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
