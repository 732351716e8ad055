//! The self-instruct pipeline (Wang et al. 2022), each stage resumable and inspectable in the
//! output directory:
//!
//! 1. [`instructions`]: prompts of 8 instructions (6 seed, 2 machine-made once there are
//!    some) for the teacher to continue, the published filters, and ROUGE-L against the pool
//!    (`requests.jsonl`, a line per request with every candidate and its fate);
//! 2. [`instances`]: classification or not (few-shot, temperature 0; `classified.jsonl`), then
//!    instances — label first for classification tasks, input first for the rest, at most 5
//!    (`instances.jsonl`);
//! 3. [`prepare`]: ambiguous, duplicate, empty and input-equals-output instances dropped, the
//!    seed tasks added, written as Alpaca JSON (`data.json`) that `cria sft` reads, with every
//!    candidate's provenance (`candidates.jsonl`) and the numbers for the report.
//!
//! `Style::Alpaca` runs Stanford Alpaca's variant instead: 20 whole tasks (instruction, input,
//! output) per request from 3 seed demonstrations, its longer word list, no separate
//! classification or instance stage.

pub mod instances;
pub mod instructions;
pub mod prepare;

use crate::error::Result;
use crate::filters::Filters;
use crate::seeds::SeedTask;
use crate::teacher::{Answer, Ask, Teacher};
use futures_util::stream::{self, StreamExt};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    SelfInstruct,
    Alpaca,
}

impl Style {
    pub fn as_str(self) -> &'static str {
        match self {
            Style::SelfInstruct => "self-instruct",
            Style::Alpaca => "alpaca",
        }
    }
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub style: Style,
    /// Machine instructions to keep.
    pub count: usize,
    pub out: PathBuf,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// A candidate more similar than this (ROUGE-L F) to any pool instruction is dropped.
    pub similarity: f64,
    pub filters: Filters,
    pub seed: u64,
    /// Instances kept per task.
    pub max_instances: usize,
    /// A cap on every request's `max_tokens` (for small teachers); the published values apply
    /// below it.
    pub max_tokens: Option<usize>,
    /// Add the seed tasks to the data (as self-instruct does; Alpaca's data is machine-made
    /// only).
    pub include_seeds: bool,
}

impl Config {
    pub fn new(style: Style, count: usize, out: PathBuf) -> Config {
        Config {
            style,
            count,
            out,
            concurrency: 5,
            similarity: 0.7,
            filters: match style {
                Style::SelfInstruct => Filters::self_instruct(),
                Style::Alpaca => Filters::alpaca(),
            },
            seed: 42,
            max_instances: 5,
            max_tokens: None,
            include_seeds: style == Style::SelfInstruct,
        }
    }

    fn tokens(&self, published: usize) -> usize {
        self.max_tokens.map_or(published, |m| m.min(published))
    }
}

/// Asks every question, `concurrency` at a time, answers in the order asked.
pub(crate) async fn ask_all(
    teacher: &Teacher,
    asks: &[Ask],
    concurrency: usize,
) -> Result<Vec<Answer>> {
    stream::iter(asks)
        .map(|a| teacher.ask(a))
        .buffered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Runs every stage (each continuing where an earlier run stopped); returns the report's
/// numbers.
pub async fn run(cfg: &Config, seeds: &[SeedTask], teacher: &Teacher) -> Result<prepare::Stats> {
    std::fs::create_dir_all(&cfg.out).map_err(|e| crate::error::InstructError::io(&cfg.out, e))?;
    let kept = instructions::run(cfg, seeds, teacher).await?;
    if cfg.style == Style::SelfInstruct {
        instances::classify(cfg, seeds, teacher, &kept).await?;
        instances::generate(cfg, seeds, teacher).await?;
    }
    prepare::run(cfg, seeds, &teacher.name())
}
