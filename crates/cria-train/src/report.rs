//! The pipeline's report card (`report.md`): what each training stage did (from its metrics
//! file) and every evaluation metric for each model, base → SFT → DPO/PPO.

use crate::error::Result;
use crate::eval::Report;
use crate::pipeline::Stage;
use std::fmt::Write as _;
use std::path::Path;

/// Lines of a stage's `metrics.jsonl`.
pub fn metrics(out: &Path, stage: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join(stage).join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn last_of(rows: &[serde_json::Value], key: &str) -> Option<f64> {
    rows.iter()
        .rev()
        .find_map(|r| r.get(key).and_then(|v| v.as_f64()))
}

fn first_of(rows: &[serde_json::Value], key: &str) -> Option<f64> {
    rows.iter()
        .find_map(|r| r.get(key).and_then(|v| v.as_f64()))
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.3}"))
}

/// What each stage shows, as (label, first, last) rows of its metrics.
fn stage_lines(out: &Path, stage: &str) -> Vec<(String, Option<f64>, Option<f64>)> {
    let rows = metrics(out, stage);
    let keys: &[(&str, &str)] = match stage {
        "pretrain" | "sft" => &[("loss", "training loss"), ("val_loss", "validation loss")],
        "rm" => &[
            ("loss", "ranking loss"),
            ("val_accuracy", "held-out pair accuracy"),
        ],
        "dpo" => &[
            ("loss", "DPO loss"),
            ("val_reward_accuracy", "held-out reward accuracy"),
            ("reward_margin", "implicit reward margin"),
        ],
        "ppo" => &[
            ("reward", "mean reward"),
            ("kl", "KL to SFT (nats/reply)"),
            ("entropy", "entropy"),
            ("reply_len", "reply length"),
        ],
        _ => &[],
    };
    keys.iter()
        .map(|(k, label)| (label.to_string(), first_of(&rows, k), last_of(&rows, k)))
        .collect()
}

/// Writes `report.md` into `out`.
pub fn write(out: &Path, stages: &[Stage], results: &[(String, Report)]) -> Result<()> {
    let mut md = String::from("# cria report card\n\n## Stages\n\n");
    md.push_str("| stage | what | first | last |\n|---|---|---:|---:|\n");
    for s in stages {
        for (label, first, last) in stage_lines(out, s.name()) {
            let _ = writeln!(
                md,
                "| {} | {label} | {} | {} |",
                s.name(),
                fmt(first),
                fmt(last)
            );
        }
    }
    md.push_str("\n## Evaluation\n\n| metric |");
    for (name, _) in results {
        let _ = write!(md, " {name} |");
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(results.len()));
    md.push('\n');
    let mut keys: Vec<&String> = results.iter().flat_map(|(_, r)| r.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let _ = write!(md, "| {k} |");
        for (_, r) in results {
            let _ = write!(md, " {} |", fmt(r.get(k).copied()));
        }
        md.push('\n');
    }
    md.push_str(
        "\nReading it: `fact_*` on held-out questions (normalised exact match, and the answer \
         contained in the reply); `truthful_mc1/mc2` multiple choice by likelihood; \
         `refusal_rate` on harmful prompts and `over_refusal_rate` on benign look-alikes; \
         `reward_mean` and `win_rate` (over the SFT model) judged by the reward model; \
         `perplexity` on held-out pretraining text (the alignment tax); `kl_to_reference` to \
         the SFT model, nats per reply.\n",
    );
    if let Some((name, _)) = results.last() {
        let dir = out.join(name).join("checkpoint");
        let _ = writeln!(
            md,
            "\nChat with the {name} model:\n\n```sh\ncria chat --model {}\n```",
            dir.display()
        );
    }
    cria_core::fsutil::write_atomic(&out.join("report.md"), md.as_bytes())?;
    Ok(())
}
