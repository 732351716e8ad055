//! From a pipeline file to the stages that run: every stage's inputs wired to the outputs of
//! the ones before, and every setting, named file and length checked before the first stage
//! starts.

use super::config::{PipelineConfig, Stage};
use crate::check;
use crate::error::{Result, TrainError};
use crate::method::Method;
use cria_world::WorldSize;
use std::path::PathBuf;

fn or_default(paths: &mut Vec<PathBuf>, default: Option<PathBuf>) {
    if paths.is_empty() {
        paths.extend(default);
    }
}

pub(super) fn size_of(name: &str) -> Result<WorldSize> {
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
    check(cfg, &stages)?;
    Ok(stages)
}

/// Every stage's settings, the files it names that no earlier stage writes, and its lengths
/// against the base model's context; errors name the stage's key (`sft.data.seq_len`).
fn check(cfg: &PipelineConfig, stages: &[Stage]) -> Result<()> {
    let context = base_context(cfg)?;
    for s in stages {
        let name = s.name();
        let in_stage = |e: TrainError| match e {
            TrainError::Setting { key, msg } => TrainError::Setting {
                key: format!("{name}.{key}"),
                msg,
            },
            TrainError::Invalid(msg) => TrainError::Invalid(format!("[{name}] {msg}")),
            other => other,
        };
        settings(s, context).map_err(in_stage)?;
        for (key, path) in inputs(s) {
            if !path.starts_with(&cfg.out) && !path.exists() {
                return Err(check::bad(
                    &format!("{name}.{key}"),
                    format!("{} does not exist", path.display()),
                ));
            }
        }
    }
    Ok(())
}

/// The context of the model the stages train: `init`'s, or the pretrained shape's.
fn base_context(cfg: &PipelineConfig) -> Result<Option<usize>> {
    if let Some(init) = &cfg.init {
        if !init.join("config.json").exists() {
            return Err(check::bad(
                "init",
                format!("{} is not a checkpoint (no config.json)", init.display()),
            ));
        }
        return Ok(Some(cria_core::checkpoint::load_config(init)?.context()));
    }
    Ok(cfg.pretrain.as_ref().map(|p| {
        p.model
            .max_position_embeddings
            .min(cria_core::model::llama::MAX_ROPE_TABLE)
    }))
}

fn settings(s: &Stage, context: Option<usize>) -> Result<()> {
    let fits = |key: &str, len: usize| match context {
        Some(c) => check::fits_context(key, len, c),
        None => Ok(()),
    };
    match s {
        Stage::World(w) => check::unit("disagreement", w.disagreement),
        Stage::Tokenizer(t) => check::at_least("vocab_size", t.vocab_size as u64, 1),
        Stage::Pretrain(p) => p.validate().and(fits("data.seq_len", p.data.seq_len)),
        Stage::Sft(x) => x.validate().and(fits("data.seq_len", x.data.seq_len)),
        Stage::Rm(x) => x.validate().and(fits("data.seq_len", x.data.seq_len)),
        Stage::Dpo(x) => x.validate().and(fits("data.seq_len", x.data.seq_len)),
        Stage::Ppo(x) => x.validate().and(match context {
            Some(c) => crate::stages::ppo::check_context(x, c),
            None => Ok(()),
        }),
        Stage::Eval(e) => e.validate(),
    }
}

/// The files and folders a stage reads, by key.
fn inputs(s: &Stage) -> Vec<(&'static str, PathBuf)> {
    fn many<'a>(
        key: &'static str,
        v: &'a [PathBuf],
    ) -> impl Iterator<Item = (&'static str, PathBuf)> + 'a {
        v.iter().map(move |p| (key, p.clone()))
    }
    fn one<'a>(
        key: &'static str,
        v: &'a Option<PathBuf>,
    ) -> impl Iterator<Item = (&'static str, PathBuf)> + 'a {
        v.iter().map(move |p| (key, p.clone()))
    }
    match s {
        Stage::World(_) => vec![],
        Stage::Tokenizer(t) => many("input", &t.input).collect(),
        Stage::Pretrain(p) => many("data.inputs", &p.data.inputs).collect(),
        Stage::Sft(x) => many("data.train", &x.data.train)
            .chain(many("data.val", &x.data.val))
            .collect(),
        Stage::Rm(x) => many("data.train", &x.data.train)
            .chain(many("data.val", &x.data.val))
            .collect(),
        Stage::Dpo(x) => many("data.train", &x.data.train)
            .chain(many("data.val", &x.data.val))
            .collect(),
        Stage::Ppo(x) => many("data.prompts", &x.data.prompts)
            .chain(many("data.ptx", &x.data.ptx))
            .collect(),
        Stage::Eval(e) => one("facts", &e.facts)
            .chain(one("multiturn", &e.multiturn))
            .chain(one("truthful", &e.truthful))
            .chain(one("harmful", &e.harmful))
            .chain(one("benign", &e.benign))
            .collect(),
    }
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
    sft.data.skip_invalid |= cfg.skip_invalid;
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
        rm.data.skip_invalid |= cfg.skip_invalid;
        prefs(&mut rm.data.train, &mut rm.data.val);
        stages.push(Stage::Rm(Box::new(rm)));
    }
    if let Some(d) = &cfg.dpo {
        let mut d = d.clone();
        d.init = sft_ckpt.clone();
        d.out = out.join("dpo");
        d.data.skip_invalid |= cfg.skip_invalid;
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
        p.data.skip_invalid |= cfg.skip_invalid;
        or_default(&mut p.data.prompts, world_file(cfg, "prompts.jsonl"));
        stages.push(Stage::Ppo(Box::new(p)));
    }
    Ok(())
}
