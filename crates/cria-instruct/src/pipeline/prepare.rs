//! The last stage: the data `cria sft` trains on (`data.json`, Alpaca's
//! `[{instruction, input, output}]`, duplicates dropped, the seed tasks added as self-instruct
//! does), every candidate with its provenance and fate (`candidates.jsonl`), and the numbers
//! the report shows (`stats.json`). Rebuilt whole from the stage files each time, written
//! atomically.

use super::{Config, Style};
use crate::error::{InstructError, Result};
use crate::seeds::SeedTask;
use crate::store::Log;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the report shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub style: String,
    pub teacher: String,
    pub requests: usize,
    /// Candidate instructions the teacher wrote.
    pub candidates: usize,
    /// Removed candidates by the filter that removed them.
    pub removed: BTreeMap<String, usize>,
    pub kept: usize,
    /// Kept instructions judged classification tasks (self-instruct style).
    pub classification: usize,
    /// Rows of `data.json`, and how many of them are the seed tasks'.
    pub rows: usize,
    pub seed_rows: usize,
    /// Each compared candidate's highest ROUGE-L against the pool at the time.
    pub max_rouge_l: Vec<f64>,
    /// Words of the machine-made rows' instructions, inputs and outputs.
    pub instruction_words: Vec<usize>,
    pub input_words: Vec<usize>,
    pub output_words: Vec<usize>,
    /// The commonest first words of the kept instructions (imperatives: their verbs).
    pub leading_words: Vec<(String, usize)>,
}

fn pretty<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("JSON")
}

fn write_atomic(path: &std::path::Path, text: &str) -> Result<()> {
    cria_core::fsutil::write_atomic(path, text.as_bytes())
        .map_err(|e| InstructError::Invalid(format!("{}: {e}", path.display())))
}

/// A data row: instruction, input, output.
type Row = (String, String, String);

/// The later stages' records by instruction: classification, and instances.
struct Later<'a> {
    clf: HashMap<&'a str, bool>,
    inst: HashMap<&'a str, &'a Value>,
}

/// Builds `data.json`, `candidates.jsonl` and `stats.json` from the stage files.
pub fn run(cfg: &Config, seeds: &[SeedTask], teacher: &str) -> Result<Stats> {
    let (_, requests) = Log::open(&cfg.out.join("requests.jsonl"))?;
    let (_, classified) = Log::open(&cfg.out.join("classified.jsonl"))?;
    let (_, instances) = Log::open(&cfg.out.join("instances.jsonl"))?;
    let later = Later {
        clf: classified
            .iter()
            .filter_map(|r| {
                Some((
                    r["instruction"].as_str()?,
                    r["is_classification"].as_bool()?,
                ))
            })
            .collect(),
        inst: instances
            .iter()
            .filter_map(|r| Some((r["instruction"].as_str()?, &r["instances"])))
            .collect(),
    };
    let mut s = Stats {
        style: cfg.style.as_str().into(),
        teacher: teacher.into(),
        requests: requests.len(),
        ..Default::default()
    };
    let (candidates, mut rows) = fates(cfg, &requests, &later, &mut s);
    let mut seen: HashSet<Row> = HashSet::new();
    rows.retain(|r| seen.insert(r.clone()));
    for (i, input, output) in &rows {
        let words = |t: &str| t.split_whitespace().count();
        s.instruction_words.push(words(i));
        s.input_words.push(words(input));
        s.output_words.push(words(output));
    }
    if cfg.include_seeds {
        let seed_rows = seeds.iter().flat_map(|t| {
            t.instances
                .iter()
                .map(|x| (t.instruction.clone(), x.input.clone(), x.output.clone()))
        });
        for row in seed_rows {
            if seen.insert(row.clone()) {
                rows.push(row);
                s.seed_rows += 1;
            }
        }
    }
    s.rows = rows.len();
    let data: Vec<Value> = rows
        .iter()
        .map(|(i, input, output)| json!({"instruction": i, "input": input, "output": output}))
        .collect();
    write_atomic(&cfg.out.join("data.json"), &pretty(&data))?;
    write_atomic(&cfg.out.join("candidates.jsonl"), &candidates)?;
    write_atomic(&cfg.out.join("stats.json"), &pretty(&s))?;
    Ok(s)
}

/// Every candidate's fate and provenance (`candidates.jsonl`'s lines), the data rows of the
/// kept ones, and the counts of `s`.
fn fates(cfg: &Config, requests: &[Value], later: &Later, s: &mut Stats) -> (String, Vec<Row>) {
    let mut candidates = String::new();
    let mut rows: Vec<Row> = vec![];
    let mut firsts: HashMap<String, usize> = HashMap::new();
    for r in requests {
        for c in r["candidates"].as_array().into_iter().flatten() {
            s.candidates += 1;
            let text = c["instruction"].as_str().unwrap_or_default();
            if let Some(x) = c["max_rouge_l"].as_f64() {
                s.max_rouge_l.push(x);
            }
            let (mut fate, mut stage) = (c["removed"].clone(), "instructions");
            if fate.is_null() {
                let mine = instance_rows(cfg, c, text, &later.inst);
                if mine.is_empty() {
                    (fate, stage) = (json!("no_instances"), "instances");
                } else {
                    s.kept += 1;
                    s.classification += usize::from(later.clf.get(text) == Some(&true));
                    if let Some(w) = text.split_whitespace().next() {
                        *firsts.entry(w.to_lowercase()).or_default() += 1;
                    }
                    rows.extend(mine);
                }
            }
            if let Some(why) = fate.as_str() {
                *s.removed.entry(why.to_string()).or_default() += 1;
            }
            let mut rec = json!({
                "instruction": text, "input": c["input"], "output": c["output"],
                "removed": fate, "stage": stage, "request": r["request"], "teacher": r["teacher"],
                "prompt_seeds": r["prompt_seeds"], "prompt_machine": r["prompt_machine"],
            });
            if !c["most_similar"].is_null() {
                rec["max_rouge_l"] = c["max_rouge_l"].clone();
                rec["most_similar"] = c["most_similar"].clone();
            }
            if let Some(&b) = later.clf.get(text) {
                rec["is_classification"] = json!(b);
            }
            candidates.push_str(&rec.to_string());
            candidates.push('\n');
        }
    }
    let mut top: Vec<(String, usize)> = firsts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(20);
    s.leading_words = top;
    (candidates, rows)
}

/// The data rows a kept candidate gives: its instances (self-instruct), or itself (Alpaca).
fn instance_rows(cfg: &Config, c: &Value, text: &str, inst: &HashMap<&str, &Value>) -> Vec<Row> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    match cfg.style {
        Style::Alpaca => {
            let output = s(&c["output"]);
            if output.trim().is_empty() || s(&c["input"]) == output {
                return vec![];
            }
            vec![(text.to_string(), s(&c["input"]), output)]
        }
        Style::SelfInstruct => inst
            .get(text)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .map(|x| (text.to_string(), s(&x["input"]), s(&x["output"])))
            .collect(),
    }
}
