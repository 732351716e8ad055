//! `cria self-instruct`: instruction data from a handful of seed tasks with a teacher the
//! company runs itself — an OpenAI-compatible endpoint inside its network (`cria serve`, vLLM)
//! or a checkpoint in this process. Writes Alpaca JSON for `cria sft`, every candidate with
//! its provenance, and a report (Markdown + SVG) of what was filtered and why.

use super::generate::Format;
use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};
use cria_instruct::pipeline::{self, Config, Style, prepare::Stats};
use cria_instruct::teacher::{Api, HttpTeacher, LocalTeacher, Teacher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum StyleArg {
    /// Wang et al. 2022: instructions, then classification, then instances.
    SelfInstruct,
    /// Stanford Alpaca: 20 whole tasks per request from 3 seed demonstrations.
    Alpaca,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ApiArg {
    /// `/v1/completions`: the teacher continues the prompt (as published).
    Completions,
    /// `/v1/chat/completions`: the prompt as one user message, for chat-only servers.
    Chat,
}

#[derive(ClapArgs)]
pub struct Args {
    /// Seed tasks in the self-instruct format (JSONL: id, name, instruction, instances,
    /// is_classification), e.g. examples/self-instruct/company_seed_tasks.jsonl.
    #[arg(long)]
    seeds: PathBuf,
    /// The teacher: an OpenAI-compatible API root (`http://10.0.0.5:8000/v1`, a `cria serve`
    /// or vLLM inside your network), or a checkpoint directory run in this process.
    #[arg(long, value_name = "URL|DIR")]
    teacher: String,
    /// The teacher's model name (needed when the server has several).
    #[arg(long)]
    teacher_model: Option<String>,
    /// The environment variable holding the teacher's API key (keys are never given on the
    /// command line, where other users of the machine could read them).
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
    /// Which API the prompts go through.
    #[arg(long, value_enum, default_value = "completions")]
    api: ApiArg,
    /// Where the run's files go; a rerun with the same directory continues it.
    #[arg(long)]
    out: PathBuf,
    /// Machine-written instructions to keep.
    #[arg(long)]
    count: usize,
    #[arg(long, value_enum, default_value = "self-instruct")]
    style: StyleArg,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 5)]
    concurrency: usize,
    /// A candidate whose ROUGE-L F with any instruction already in the pool exceeds this is
    /// dropped.
    #[arg(long, default_value_t = 0.7)]
    similarity: f64,
    /// Seed of the prompts' choice of examples and of sampling.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// A cap on every request's max_tokens (for small teachers).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Tries of a request that fails with 429, 5xx, a timeout or a lost connection.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Seconds before a request times out.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Leave the seed tasks out of data.json (self-instruct adds them; Alpaca does not).
    #[arg(long)]
    no_seed_tasks: bool,
    /// How to prompt a local checkpoint without a chat template (with `--api chat`).
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&a.similarity) {
        anyhow::bail!("--similarity {}: a ROUGE-L F-measure, 0 to 1", a.similarity);
    }
    if a.count == 0 || a.concurrency == 0 {
        anyhow::bail!("--count and --concurrency must be at least 1");
    }
    let seeds = cria_instruct::seeds::read_seeds(&a.seeds)?;
    let style = match a.style {
        StyleArg::SelfInstruct => Style::SelfInstruct,
        StyleArg::Alpaca => Style::Alpaca,
    };
    let need = if style == Style::Alpaca { 3 } else { 8 };
    if seeds.len() < need {
        anyhow::bail!(
            "{}: {} seed tasks; the {} prompts show {need}",
            a.seeds.display(),
            seeds.len(),
            style.as_str()
        );
    }
    let mut cfg = Config::new(style, a.count, a.out.clone());
    cfg.concurrency = a.concurrency;
    cfg.similarity = a.similarity;
    cfg.seed = a.seed;
    cfg.max_tokens = a.max_tokens;
    cfg.include_seeds = cfg.include_seeds && !a.no_seed_tasks;
    let rt = super::runtime()?;
    let stats = rt.block_on(async {
        let teacher = teacher(&a).await?;
        eprintln!(
            "cria self-instruct: {} seed tasks, teacher {}, {} style, keeping {} instructions in {}",
            seeds.len(),
            teacher.name(),
            style.as_str(),
            a.count,
            a.out.display()
        );
        anyhow::Ok(pipeline::run(&cfg, &seeds, &teacher).await?)
    })?;
    report(&a.out, &stats, cfg.similarity)?;
    println!(
        "{}: {} rows ({} from the seed tasks) for `cria sft`; {} of {} candidate instructions kept; report: {}",
        a.out.join("data.json").display(),
        stats.rows,
        stats.seed_rows,
        stats.kept,
        stats.candidates,
        a.out.join("report.md").display()
    );
    Ok(())
}

async fn teacher(a: &Args) -> anyhow::Result<Teacher> {
    let api = match a.api {
        ApiArg::Completions => Api::Completions,
        ApiArg::Chat => Api::Chat,
    };
    if a.teacher.contains("://") {
        let key = match &a.api_key_env {
            Some(var) => Some(std::env::var(var).with_context(|| {
                format!("--api-key-env {var}: the environment variable is not set")
            })?),
            None => None,
        };
        match cria_instruct::teacher::is_private(&a.teacher).await {
            Some(true) => {}
            Some(false) => tracing::warn!(
                "the teacher {} is not on this machine or a private network: your seed tasks \
                 and the prompts built from them leave it",
                a.teacher
            ),
            None => tracing::warn!("cannot resolve the teacher's host in {}", a.teacher),
        }
        let t = HttpTeacher::connect(
            &a.teacher,
            a.teacher_model.as_deref(),
            key,
            api,
            a.retries,
            Duration::from_secs(a.timeout),
        )
        .await?;
        return Ok(Teacher::Http(t));
    }
    let dir = Path::new(&a.teacher);
    if !dir.join("config.json").exists() {
        anyhow::bail!(
            "--teacher {}: neither an http:// URL nor a checkpoint directory (no config.json)",
            a.teacher
        );
    }
    let cfg = cria_serve::EngineConfig {
        parallel: a.concurrency,
        queue: 1024,
        ..Default::default()
    };
    let name = a.teacher_model.clone().unwrap_or_else(|| "teacher".into());
    let model = super::serve::load_one(&name, dir, a.format, &cfg)?;
    Ok(Teacher::Local(LocalTeacher {
        model: Arc::new(model),
        api,
    }))
}

/// `report.md` and its plots: what was kept and removed by which filter, the ROUGE-L
/// distribution against the pool, lengths, and the commonest leading words.
fn report(out: &Path, s: &Stats, threshold: f64) -> anyhow::Result<()> {
    plots(out, s, threshold)?;
    std::fs::write(out.join("report.md"), markdown(s, threshold))?;
    Ok(())
}

/// Counts of `v` in word-length bins.
fn lengths(v: &[usize]) -> Vec<(String, f64)> {
    let edges = [0, 5, 10, 20, 40, 80, 160, usize::MAX];
    edges
        .windows(2)
        .map(|w| {
            let label = if w[1] == usize::MAX {
                format!("{}+", w[0])
            } else {
                format!("{}-{}", w[0], w[1] - 1)
            };
            (
                label,
                v.iter().filter(|&&x| x >= w[0] && x < w[1]).count() as f64,
            )
        })
        .collect()
}

fn plots(out: &Path, s: &Stats, threshold: f64) -> anyhow::Result<()> {
    use crate::report::bar_chart;
    let bins = 10;
    let mut hist = vec![0usize; bins];
    for &x in &s.max_rouge_l {
        hist[((x * bins as f64) as usize).min(bins - 1)] += 1;
    }
    let rouge: Vec<(String, f64)> = hist
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("{:.1}", i as f64 / bins as f64), n as f64))
        .collect();
    let verbs: Vec<(String, f64)> = s
        .leading_words
        .iter()
        .take(15)
        .map(|(w, n)| (w.clone(), *n as f64))
        .collect();
    let charts = [
        (
            "rouge_l.svg",
            bar_chart(
                &format!("Highest ROUGE-L against the pool (threshold {threshold})"),
                "ROUGE-L F (bin start)",
                &rouge,
            ),
        ),
        (
            "instruction_words.svg",
            bar_chart(
                "Words per instruction",
                "words",
                &lengths(&s.instruction_words),
            ),
        ),
        (
            "output_words.svg",
            bar_chart("Words per output", "words", &lengths(&s.output_words)),
        ),
        (
            "leading_words.svg",
            bar_chart("Commonest first words", "", &verbs),
        ),
    ];
    for (name, svg) in charts {
        std::fs::write(out.join(name), svg).with_context(|| format!("writing {name}"))?;
    }
    Ok(())
}

fn markdown(s: &Stats, threshold: f64) -> String {
    let mut md = format!(
        "# Self-instruct run\n\nStyle {}, teacher {}: {} requests, {} candidate instructions, **{} kept** \
         ({} judged classification tasks). `data.json` has {} rows, {} of them from the seed tasks.\n\n\
         ## Kept and removed\n\n| filter | candidates |\n|---|---:|\n| kept | {} |\n",
        s.style,
        s.teacher,
        s.requests,
        s.candidates,
        s.kept,
        s.classification,
        s.rows,
        s.seed_rows,
        s.kept
    );
    for (why, n) in &s.removed {
        md.push_str(&format!("| {why} | {n} |\n"));
    }
    md.push_str(&format!(
        "\n## Similarity to the pool\n\nEach candidate that passed the other filters was compared with every \
         instruction in the pool (the seeds and those kept before it); above {threshold} it was dropped.\n\n\
         ![ROUGE-L](rouge_l.svg)\n\n## Lengths\n\n![Instruction words](instruction_words.svg)\n\n\
         ![Output words](output_words.svg)\n\n## Commonest first words of the kept instructions\n\n\
         ![First words](leading_words.svg)\n\n| word | instructions |\n|---|---:|\n"
    ));
    for (w, n) in &s.leading_words {
        md.push_str(&format!("| {w} | {n} |\n"));
    }
    md.push_str(
        "\nFiles: `data.json` (Alpaca JSON for `cria sft`), `candidates.jsonl` (every candidate with its \
         prompt's seeds, the teacher, the stage and filter that removed it, and its most similar pool \
         instructions), `requests.jsonl`, `classified.jsonl`, `instances.jsonl` (the stages' records).\n",
    );
    md
}
