//! Stage 1: new instructions from the teacher, filtered, kept when no pool instruction is as
//! similar as the threshold (ROUGE-L F). One line of `requests.jsonl` per request, in order:
//! its prompt's seeds, every candidate with the filter that removed it or its most similar pool
//! instructions. A rerun replays the lines (rebuilding the pool) and asks on from the next
//! request, with the same seeded choices.

use super::{Config, Style, ask_all};
use crate::error::{InstructError, Result};
use crate::filters::Removed;
use crate::prompts;
use crate::rouge::Pool;
use crate::seeds::SeedTask;
use crate::store::Log;
use crate::teacher::{Api, Ask, Teacher};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

/// One candidate task as stage 1 saw it.
#[derive(Debug, Clone)]
pub struct Kept {
    pub instruction: String,
    pub input: String,
    pub output: String,
}

/// The request `r`'s prompt: which seeds and machine instructions it shows, and its text.
fn prompt(
    cfg: &Config,
    r: u64,
    seeds: &[SeedTask],
    machine: &[Kept],
) -> (Vec<String>, Vec<String>, String) {
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ r.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    match cfg.style {
        Style::SelfInstruct => {
            let m: Vec<&Kept> = machine.choose_multiple(&mut rng, 2).collect();
            let s: Vec<&SeedTask> = seeds.choose_multiple(&mut rng, 8 - m.len()).collect();
            let mut shown: Vec<String> = m.iter().map(|k| k.instruction.clone()).collect();
            shown.extend(s.iter().map(|t| t.instruction.clone()));
            shown.shuffle(&mut rng);
            let ids = s.iter().map(|t| t.id.clone()).collect();
            let from_machine = m.iter().map(|k| k.instruction.clone()).collect();
            (ids, from_machine, prompts::instruction_list(&shown))
        }
        Style::Alpaca => {
            let s: Vec<&SeedTask> = seeds.choose_multiple(&mut rng, 3).collect();
            let demos: Vec<(String, String, String)> = s
                .iter()
                .map(|t| {
                    (
                        t.instruction.clone(),
                        t.instances[0].input.clone(),
                        t.instances[0].output.clone(),
                    )
                })
                .collect();
            let ids = s.iter().map(|t| t.id.clone()).collect();
            (ids, vec![], prompts::alpaca(&demos, 20))
        }
    }
}

/// The published sampling of each style.
fn ask(cfg: &Config, r: u64, text: String, api: Api) -> Ask {
    let text = match api {
        Api::Chat => format!("{text}{}", prompts::CHAT_CONTINUE),
        Api::Completions => text,
    };
    match cfg.style {
        Style::SelfInstruct => Ask {
            prompt: text,
            max_tokens: cfg.tokens(1024),
            temperature: 0.7,
            top_p: 0.5,
            presence_penalty: 2.0,
            stop: vec!["\n\n".into(), "\n16".into(), "16.".into(), "16 .".into()],
            seed: cfg.seed.wrapping_add(r),
        },
        Style::Alpaca => Ask {
            prompt: text,
            max_tokens: cfg.tokens(3072),
            temperature: 1.0,
            top_p: 1.0,
            presence_penalty: 0.0,
            stop: vec!["\n20".into(), "20.".into()],
            seed: cfg.seed.wrapping_add(r),
        },
    }
}

/// The candidates of one reply: (instruction, input, output) or why it was removed before
/// any comparison.
fn candidates(cfg: &Config, reply: &str, cut: bool) -> Vec<(Kept, Option<Removed>)> {
    let kept = |i: String, input: String, output: String| Kept {
        instruction: i,
        input,
        output,
    };
    let mut out = vec![];
    match cfg.style {
        Style::SelfInstruct => {
            let (items, dropped) = prompts::parse_list(reply, cut);
            for i in items {
                let why = cfg.filters.check(&i);
                out.push((kept(i, String::new(), String::new()), why));
            }
            if let Some(d) = dropped {
                out.push((
                    kept(d, String::new(), String::new()),
                    Some(Removed::Truncated),
                ));
            }
        }
        Style::Alpaca => {
            let items = prompts::parse_alpaca(reply, 4, false);
            let last = items.len().saturating_sub(1);
            for (n, item) in items.into_iter().enumerate() {
                match item {
                    _ if cut && n == last => out.push((
                        kept(String::new(), String::new(), String::new()),
                        Some(Removed::Truncated),
                    )),
                    None => out.push((
                        kept(String::new(), String::new(), String::new()),
                        Some(Removed::Malformed),
                    )),
                    Some((i, input, output)) => {
                        let why = cfg.filters.check(&i);
                        out.push((kept(i, input, output), why));
                    }
                }
            }
        }
    }
    out
}

/// The pool (seeds and kept instructions) and the kept instructions, rebuilt from an earlier
/// run's requests.
fn replay(
    cfg: &Config,
    seeds: &[SeedTask],
    done: &[Value],
    path: &std::path::Path,
) -> Result<(Pool, Vec<Kept>)> {
    let mut pool = Pool::new();
    for s in seeds {
        pool.add(&s.instruction);
    }
    let mut machine: Vec<Kept> = vec![];
    for rec in done {
        if rec["style"] != cfg.style.as_str() {
            return Err(InstructError::Invalid(format!(
                "{}: these requests were made in the {} style; use another --out for a {} run",
                path.display(),
                rec["style"],
                cfg.style.as_str()
            )));
        }
        for c in rec["candidates"].as_array().into_iter().flatten() {
            if c["removed"].is_null() {
                let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                let k = Kept {
                    instruction: text("instruction"),
                    input: text("input"),
                    output: text("output"),
                };
                pool.add(&k.instruction);
                machine.push(k);
            }
        }
    }
    if !done.is_empty() {
        tracing::info!(
            requests = done.len(),
            kept = machine.len(),
            "continuing from {}",
            path.display()
        );
    }
    Ok((pool, machine))
}

/// Runs stage 1 until `cfg.count` instructions are kept; returns them.
pub async fn run(cfg: &Config, seeds: &[SeedTask], teacher: &Teacher) -> Result<Vec<Kept>> {
    let path = cfg.out.join("requests.jsonl");
    let (mut log, done) = Log::open(&path)?;
    let (mut pool, mut machine) = replay(cfg, seeds, &done, &path)?;
    let mut r = done.len() as u64;
    let mut empty_rounds = 0;
    while machine.len() < cfg.count {
        let before = machine.len();
        let lines = round(cfg, r, seeds, teacher, &mut pool, &mut machine).await?;
        r += lines.len() as u64;
        log.append(&lines)?;
        tracing::info!(
            requests = r,
            kept = machine.len(),
            of = cfg.count,
            "instructions: {} new this round",
            machine.len() - before
        );
        empty_rounds = if machine.len() == before {
            empty_rounds + 1
        } else {
            0
        };
        if empty_rounds >= 20 {
            return Err(InstructError::Invalid(format!(
                "20 rounds of requests in a row gave no instruction that passed the filters \
                 (see {}): the teacher's replies are not numbered lists of tasks",
                path.display()
            )));
        }
    }
    machine.truncate(cfg.count);
    Ok(machine)
}

/// One round: `concurrency` requests from request `r` on, answered together, then their
/// candidates judged in request order; returns the requests' records.
async fn round(
    cfg: &Config,
    r: u64,
    seeds: &[SeedTask],
    teacher: &Teacher,
    pool: &mut Pool,
    machine: &mut Vec<Kept>,
) -> Result<Vec<Value>> {
    let n = cfg.concurrency.max(1) as u64;
    let prompts: Vec<_> = (r..r + n).map(|i| prompt(cfg, i, seeds, machine)).collect();
    let asks: Vec<Ask> = prompts
        .iter()
        .zip(r..)
        .map(|(p, i)| ask(cfg, i, p.2.clone(), teacher.api()))
        .collect();
    let answers = ask_all(teacher, &asks, cfg.concurrency).await?;
    let mut lines = vec![];
    for ((ids, from_machine, _), (answer, i)) in
        prompts.into_iter().zip(answers.into_iter().zip(r..))
    {
        let cands: Vec<Value> = candidates(cfg, &answer.text, answer.cut)
            .into_iter()
            .map(|(k, why)| judge(cfg, pool, machine, k, why))
            .collect();
        lines.push(json!({
            "request": i,
            "style": cfg.style.as_str(),
            "teacher": teacher.name(),
            "prompt_seeds": ids,
            "prompt_machine": from_machine,
            "cut": answer.cut,
            "candidates": cands,
        }));
    }
    Ok(lines)
}

/// A candidate's fate: removed by a filter, too similar to the pool, or kept (and added).
fn judge(
    cfg: &Config,
    pool: &mut Pool,
    machine: &mut Vec<Kept>,
    k: Kept,
    why: Option<Removed>,
) -> Value {
    let mut c = json!({"instruction": k.instruction, "input": k.input, "output": k.output});
    if let Some(w) = why {
        c["removed"] = json!(w.as_str());
        return c;
    }
    let ids = pool.vocab.encode(&k.instruction);
    let best = pool.most_similar(&ids, 10);
    let top = best.first().map_or(0.0, |s| s.score);
    c["max_rouge_l"] = json!(top);
    c["most_similar"] = best
        .iter()
        .map(|s| json!([pool.original(s.index), s.score]))
        .collect();
    if top > cfg.similarity {
        c["removed"] = json!(Removed::Similar.as_str());
    } else if machine.len() < cfg.count {
        c["removed"] = Value::Null;
        pool.add(&k.instruction);
        machine.push(k);
    } else {
        // Enough are kept already: the rest of the round is not needed.
        c["removed"] = json!("over_count");
    }
    c
}
