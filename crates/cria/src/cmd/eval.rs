//! `cria eval`: fact accuracy, truthfulness (MC1/MC2), helpfulness (reward-model score, win
//! rate), harmlessness (refusals and over-refusals), held-out perplexity and KL to a reference,
//! for one checkpoint; printed as a table and written as JSON.

use anyhow::Context;
use clap::Args as ClapArgs;
use cria_core::checkpoint;
use cria_data::chat::ChatFormat;
use cria_train::eval::{self, Report, Subject};
use std::path::{Path, PathBuf};

#[derive(ClapArgs)]
pub struct Args {
    /// The checkpoint to evaluate.
    #[arg(long)]
    model: PathBuf,
    /// A LoRA or LLaMA-Adapter adapter on top of it.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// A world from `cria world`: its eval/ sets fill in --facts, --truthful, --harmful, --benign.
    #[arg(long)]
    world: Option<PathBuf>,
    /// Questions with answers (JSONL `{question, answer}`).
    #[arg(long)]
    facts: Option<PathBuf>,
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
    /// Write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn from_world(explicit: &Option<PathBuf>, world: &Option<PathBuf>, name: &str) -> Option<PathBuf> {
    explicit.clone().or_else(|| {
        world
            .as_ref()
            .map(|w| w.join("eval").join(name))
            .filter(|p| p.exists())
    })
}

fn prompt_strings(path: &Path) -> anyhow::Result<Vec<String>> {
    Ok(cria_data::prefs::read_prompts(&[path.to_path_buf()])?
        .into_iter()
        .map(|c| c.last().map(|m| m.content.clone()).unwrap_or_default())
        .collect())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (model, tok) = super::load_for_inference(&a.model, a.adapter.as_deref())?;
    let fmt = ChatFormat::for_checkpoint(a.adapter.as_deref().unwrap_or(&a.model), &tok)?;
    let s = Subject {
        model: &model,
        tok: &tok,
        fmt: &fmt,
    };
    let facts = from_world(&a.facts, &a.world, "facts.jsonl");
    let truthful = from_world(&a.truthful, &a.world, "truthful.csv");
    let harmful = from_world(&a.harmful, &a.world, "harmful.jsonl");
    let benign = from_world(&a.benign, &a.world, "benign.jsonl");
    let mut r = Report::new();
    // Prompts and replies the reward model judges: the factual and the benign ones.
    let (mut judged_prompts, mut judged_replies) = (vec![], vec![]);
    if let Some(p) = &facts {
        let qa = cria_data::evalsets::read_qa(p)?;
        let (em, contains, replies) = eval::facts(&s, &qa, a.max_new_tokens)?;
        r.insert("fact_exact_match".into(), em);
        r.insert("fact_contains".into(), contains);
        judged_prompts.extend(qa.into_iter().map(|q| q.question));
        judged_replies.extend(replies);
    }
    if let Some(p) = &truthful {
        let mc = cria_data::evalsets::read_truthful(p)?;
        let (mc1, mc2) = eval::truthful(&s, &mc)?;
        r.insert("truthful_mc1".into(), mc1);
        r.insert("truthful_mc2".into(), mc2);
    }
    if let Some(p) = &harmful {
        let prompts = prompt_strings(p)?;
        r.insert(
            "refusal_rate".into(),
            eval::refusals(&s, &prompts, a.max_new_tokens)?.0,
        );
    }
    if let Some(p) = &benign {
        let prompts = prompt_strings(p)?;
        let (rate, replies) = eval::refusals(&s, &prompts, a.max_new_tokens)?;
        r.insert("over_refusal_rate".into(), rate);
        judged_prompts.extend(prompts);
        judged_replies.extend(replies);
    }
    if let Some(rm_dir) = &a.reward_model {
        if judged_prompts.is_empty() {
            anyhow::bail!("--reward-model scores replies to --facts or --benign prompts; give one");
        }
        let dev = cria_core::device::inference_device();
        let rm = checkpoint::load_model(rm_dir, &dev)
            .with_context(|| format!("loading {}", rm_dir.display()))?;
        let rm_fmt = ChatFormat::for_checkpoint(rm_dir, &tok)?;
        let mine = eval::rewards(&rm, &rm_fmt, &tok, &judged_prompts, &judged_replies)?;
        let mean = mine.iter().map(|x| *x as f64).sum::<f64>() / mine.len() as f64;
        r.insert("reward_mean".into(), mean);
        if let Some(b) = &a.against {
            let (other, otok) = super::load_for_inference(b, None)?;
            let ofmt = ChatFormat::for_checkpoint(b, &otok)?;
            let os = Subject {
                model: &other,
                tok: &otok,
                fmt: &ofmt,
            };
            let theirs_replies = os.replies(&judged_prompts, a.max_new_tokens, 16)?;
            let theirs = eval::rewards(&rm, &rm_fmt, &tok, &judged_prompts, &theirs_replies)?;
            r.insert("win_rate".into(), eval::win_rate(&mine, &theirs));
        }
    } else if a.against.is_some() {
        anyhow::bail!("--against needs --reward-model to judge the two models' replies");
    }
    if !a.corpus.is_empty() {
        let docs = cria_data::corpus::read_corpus(&a.corpus)?;
        let ids = cria_data::shards::tokenize(&docs, &tok)?;
        r.insert(
            "perplexity".into(),
            eval::perplexity(&model, &ids, a.seq_len)?,
        );
    }
    if let Some(ref_dir) = &a.reference {
        let prompts: Vec<String> = judged_prompts.iter().take(32).cloned().collect();
        if prompts.is_empty() {
            anyhow::bail!("--reference samples replies to --facts or --benign prompts; give one");
        }
        let reference = checkpoint::load_model(ref_dir, &cria_core::device::inference_device())
            .with_context(|| format!("loading {}", ref_dir.display()))?;
        let kl = eval::kl_to(&s, &reference, &prompts, a.kl_samples, a.max_new_tokens)?;
        r.insert("kl_to_reference".into(), kl);
    }
    if r.is_empty() {
        anyhow::bail!(
            "nothing to measure: give --world, --facts, --truthful, --harmful, --benign or --corpus"
        );
    }
    println!("| metric | {} |\n|---|---:|", a.model.display());
    for (k, v) in &r {
        println!("| {k} | {v:.4} |");
    }
    if let Some(out) = &a.out {
        let text = serde_json::to_string_pretty(&r)?;
        cria_core::fsutil::write_atomic(out, text.as_bytes())?;
    }
    Ok(())
}
