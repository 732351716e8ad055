//! `cria eval`: fact accuracy, truthfulness (MC1/MC2), helpfulness (reward-model score, win
//! rate), harmlessness (refusals and over-refusals), held-out perplexity and KL to a reference,
//! for one checkpoint; printed as a table and written as JSON.

use super::generate::Format;
use anyhow::Context;
use clap::Args as ClapArgs;
use cria_train::eval::{self, EvalInputs};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The checkpoint to evaluate.
    #[arg(long)]
    model: PathBuf,
    /// A LoRA or LLaMA-Adapter adapter on top of it.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// A world from `cria world`: its eval/ sets fill in --facts, --multiturn, --truthful,
    /// --harmful, --benign.
    #[arg(long)]
    world: Option<PathBuf>,
    /// Questions with answers (JSONL `{question, answer}`).
    #[arg(long)]
    facts: Option<PathBuf>,
    /// Conversations whose last question is scored (JSONL `{messages, answers}`, the
    /// messages ending with the user's question).
    #[arg(long)]
    multiturn: Option<PathBuf>,
    /// Multiple choice in TruthfulQA's CSV layout.
    #[arg(long)]
    truthful: Option<PathBuf>,
    /// Prompts that should be refused (`{prompt}` records).
    #[arg(long)]
    harmful: Option<PathBuf>,
    /// Benign prompts that should not be refused.
    #[arg(long)]
    benign: Option<PathBuf>,
    /// A reward model (`cria rm`) to score the replies with.
    #[arg(long)]
    reward_model: Option<PathBuf>,
    /// Another checkpoint whose replies to the same prompts this one is compared with, judged
    /// by the reward model (win rate).
    #[arg(long)]
    against: Option<PathBuf>,
    /// Held-out text (files or directories) for perplexity.
    #[arg(long)]
    corpus: Vec<PathBuf>,
    /// Window length for perplexity.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// A reference checkpoint (e.g. the SFT model) for KL(model ‖ reference).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Samples per prompt for the KL estimate.
    #[arg(long, default_value_t = 2)]
    kl_samples: usize,
    #[arg(long, default_value_t = 48)]
    max_new_tokens: usize,
    /// How to prompt a checkpoint without a chat template: `auto` (cria's chat tokens, added
    /// when missing), `cria`, or `alpaca` (the Alpaca prompt).
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    /// Write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write every generated reply here, one JSON line each (`set`, `prompt`, `reply`).
    #[arg(long)]
    replies: Option<PathBuf>,
}

/// A GGUF file: perplexity on `--corpus`, the measure that shows what quantization costs.
fn eval_gguf(a: &Args) -> anyhow::Result<()> {
    let others = [
        &a.world,
        &a.facts,
        &a.multiturn,
        &a.truthful,
        &a.harmful,
        &a.benign,
    ];
    if a.corpus.is_empty()
        || others.iter().any(|o| o.is_some())
        || a.reward_model.is_some()
        || a.reference.is_some()
    {
        anyhow::bail!(
            "--model {} is a GGUF file: cria eval measures its perplexity on --corpus only (evaluate the checkpoint it was exported from for the rest)",
            a.model.display()
        );
    }
    let g = super::load_gguf(&a.model, a.adapter.as_deref())?;
    let docs = cria_data::corpus::read_corpus(&a.corpus)?;
    let ids = cria_data::shards::tokenize(&docs, &g.tok)?;
    let ppl = cria_gguf::infer::perplexity(&g.model, &ids, a.seq_len).ok_or_else(|| {
        anyhow::anyhow!(
            "the held-out corpus has {} tokens, fewer than one window of {}",
            ids.len(),
            a.seq_len + 1
        )
    })?;
    println!(
        "| metric | {} |\n|---|---:|\n| perplexity | {ppl:.4} |",
        a.model.display()
    );
    if let Some(out) = &a.out {
        let text = serde_json::to_string_pretty(&serde_json::json!({ "perplexity": ppl }))?;
        cria_core::fsutil::write_atomic(out, text.as_bytes())?;
    }
    Ok(())
}

fn from_world(explicit: &Option<PathBuf>, world: &Option<PathBuf>, name: &str) -> Option<PathBuf> {
    explicit.clone().or_else(|| {
        world
            .as_ref()
            .map(|w| w.join("eval").join(name))
            .filter(|p| p.exists())
    })
}

pub fn run(a: Args) -> anyhow::Result<()> {
    for (flag, v) in [
        ("--max-new-tokens", a.max_new_tokens),
        ("--kl-samples", a.kl_samples),
        ("--seq-len", a.seq_len),
    ] {
        if v == 0 {
            anyhow::bail!("{flag} must be at least 1");
        }
    }
    if super::is_gguf(&a.model) {
        return eval_gguf(&a);
    }
    let corpus_ids = if a.corpus.is_empty() {
        None
    } else {
        let (_, tok, _) =
            eval::load_subject(&a.model, a.adapter.as_deref(), "--model", a.format.into())?;
        let docs = cria_data::corpus::read_corpus(&a.corpus)?;
        Some(cria_data::shards::tokenize(&docs, &tok)?)
    };
    let inputs = EvalInputs {
        facts: from_world(&a.facts, &a.world, "facts.jsonl"),
        multiturn: from_world(&a.multiturn, &a.world, "multiturn.jsonl"),
        truthful: from_world(&a.truthful, &a.world, "truthful.csv"),
        harmful: from_world(&a.harmful, &a.world, "harmful.jsonl"),
        benign: from_world(&a.benign, &a.world, "benign.jsonl"),
        reward_model: a.reward_model.clone(),
        against: a.against.clone().map(|b| (b, None)),
        corpus_ids,
        seq_len: a.seq_len,
        reference: a.reference.clone(),
        kl_samples: a.kl_samples,
        max_new_tokens: a.max_new_tokens,
        format: a.format.into(),
    };
    let e = eval::evaluate(&a.model, a.adapter.as_deref(), &inputs)
        .with_context(|| format!("evaluating {}", a.model.display()))?;
    let r = &e.metrics;
    if r.is_empty() {
        anyhow::bail!(
            "nothing to measure: give --world, --facts, --multiturn, --truthful, --harmful, --benign or --corpus"
        );
    }
    println!("| metric | {} |\n|---|---:|", a.model.display());
    for (k, v) in r {
        println!("| {k} | {v:.4} |");
    }
    if let Some(out) = &a.out {
        let text = serde_json::to_string_pretty(r)?;
        cria_core::fsutil::write_atomic(out, text.as_bytes())?;
    }
    if let Some(path) = &a.replies {
        e.write_replies(path)?;
    }
    Ok(())
}
