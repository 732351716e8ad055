//! Stages 2 and 3 of self-instruct: whether each kept instruction is a classification task
//! (few-shot, temperature 0), then its instances — label first for classification tasks, so
//! every label gets an input rather than only the likeliest one, input first for the rest.
//! A line per instruction in `classified.jsonl` and `instances.jsonl`; a rerun asks only about
//! instructions without one.

use super::instructions::Kept;
use super::{Config, ask_all};
use crate::error::Result;
use crate::prompts;
use crate::seeds::SeedTask;
use crate::store::Log;
use crate::teacher::{Api, Ask, Teacher};
use serde_json::{Value, json};
use std::collections::HashSet;

fn chat(api: Api, text: String, how: &str) -> String {
    match api {
        Api::Completions => text,
        Api::Chat => format!("{text}\n\n({how})"),
    }
}

/// Seed tasks shown as examples: `n` of each kind, in file order (a fixed prompt).
fn examples(seeds: &[SeedTask], classification: Option<bool>, n: usize) -> Vec<&SeedTask> {
    match classification {
        Some(c) => seeds
            .iter()
            .filter(|t| t.is_classification == c)
            .take(n)
            .collect(),
        None => {
            let mut e: Vec<&SeedTask> = examples(seeds, Some(true), n / 2);
            e.extend(examples(seeds, Some(false), n - e.len()));
            e
        }
    }
}

/// Stage 2: classification or not, for every kept instruction without an answer yet.
pub async fn classify(
    cfg: &Config,
    seeds: &[SeedTask],
    teacher: &Teacher,
    kept: &[Kept],
) -> Result<()> {
    let path = cfg.out.join("classified.jsonl");
    let (mut log, done) = Log::open(&path)?;
    let seen: HashSet<String> = done
        .iter()
        .filter_map(|r| r["instruction"].as_str().map(String::from))
        .collect();
    let todo: Vec<&Kept> = kept
        .iter()
        .filter(|k| !seen.contains(&k.instruction))
        .collect();
    let shots = examples(seeds, None, 12);
    for chunk in todo.chunks(cfg.concurrency.max(1) * 4) {
        let asks: Vec<Ask> = chunk
            .iter()
            .map(|k| Ask {
                prompt: chat(
                    teacher.api(),
                    prompts::is_classification(&shots, &k.instruction),
                    "answer Yes or No",
                ),
                max_tokens: cfg.tokens(3),
                temperature: 0.0,
                top_p: 1.0,
                presence_penalty: 0.0,
                stop: vec!["\n".into(), "Task:".into()],
                seed: cfg.seed,
            })
            .collect();
        let answers = ask_all(teacher, &asks, cfg.concurrency).await?;
        let lines: Vec<Value> = chunk
            .iter()
            .zip(answers)
            .map(|(k, a)| {
                json!({
                    "instruction": k.instruction,
                    "is_classification": prompts::parse_yes(&a.text),
                    "reply": a.text,
                })
            })
            .collect();
        log.append(&lines)?;
        tracing::info!(
            done = seen.len() + lines.len(),
            of = kept.len(),
            "classified"
        );
    }
    Ok(())
}

/// Stage 3: instances for every classified instruction without them yet.
pub async fn generate(cfg: &Config, seeds: &[SeedTask], teacher: &Teacher) -> Result<()> {
    let (_, classified) = Log::open(&cfg.out.join("classified.jsonl"))?;
    let path = cfg.out.join("instances.jsonl");
    let (mut log, done) = Log::open(&path)?;
    let seen: HashSet<String> = done
        .iter()
        .filter_map(|r| r["instruction"].as_str().map(String::from))
        .collect();
    let todo: Vec<(String, bool)> = classified
        .iter()
        .filter_map(|r| {
            Some((
                r["instruction"].as_str()?.to_string(),
                r["is_classification"].as_bool()?,
            ))
        })
        .filter(|(i, _)| !seen.contains(i))
        .collect();
    let (clf, free) = (
        examples(seeds, Some(true), 3),
        examples(seeds, Some(false), 3),
    );
    let total = seen.len() + todo.len();
    let mut n = seen.len();
    for chunk in todo.chunks(cfg.concurrency.max(1) * 4) {
        let asks: Vec<Ask> = chunk
            .iter()
            .map(|(inst, is_clf)| Ask {
                prompt: if *is_clf {
                    chat(
                        teacher.api(),
                        prompts::output_first(&clf, inst),
                        "continue with `Class label:` and `Input:` lines",
                    )
                } else {
                    chat(
                        teacher.api(),
                        prompts::input_first(&free, inst),
                        "continue with `Input:` and `Output:` examples",
                    )
                },
                max_tokens: cfg.tokens(if *is_clf { 300 } else { 350 }),
                temperature: 0.0,
                top_p: 1.0,
                presence_penalty: 1.5,
                stop: vec![format!("Example {}", cfg.max_instances + 1), "Task:".into()],
                seed: cfg.seed,
            })
            .collect();
        let answers = ask_all(teacher, &asks, cfg.concurrency).await?;
        let lines: Vec<Value> = chunk
            .iter()
            .zip(answers)
            .map(|((inst, is_clf), a)| {
                let raw = if *is_clf {
                    prompts::parse_output_first(&a.text, a.cut)
                } else {
                    prompts::parse_input_first(&a.text, a.cut)
                };
                let parsed = raw.len();
                let kept = prompts::clean_instances(raw, cfg.max_instances);
                json!({
                    "instruction": inst,
                    "is_classification": is_clf,
                    "reply": a.text,
                    "cut": a.cut,
                    "parsed": parsed,
                    "instances": kept,
                })
            })
            .collect();
        n += lines.len();
        log.append(&lines)?;
        tracing::info!(done = n, of = total, "instances");
    }
    Ok(())
}
