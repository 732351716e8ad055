//! The answers people rank: for each prompt of a ranking or pairwise project, K different
//! replies sampled from the served model (one prefill, K samples; repeats drawn again),
//! stored together so every annotator ranks the same ones. Runs in the background; prompts
//! become labellable as their answers land (those with at least two different answers).

use crate::db::Db;
use crate::db::projects::{self, Project};
use crate::error::{LabelError, Result};
use cria_core::sampling::SamplingParams;
use cria_serve::{Event, Request, ServedModel};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Extra rounds of sampling for answers that repeat one already drawn.
const REDRAWS: u64 = 4;

/// Up to K different answers to one prompt, sampled as `project` says: one prefill, K
/// samples, and answers that repeat an earlier one drawn again with new seeds (a confident
/// model often says the same thing twice, and ranking an answer against itself teaches
/// nothing). Fewer than K come back when the model keeps repeating itself.
pub fn sample(
    model: &ServedModel,
    project: &Project,
    prompt: i64,
    messages: &[serde_json::Value],
) -> Result<Vec<String>> {
    let ids = model
        .chat_prompt(messages, None)
        .map_err(|e| LabelError::Invalid(format!("prompt {prompt}: {}", e.message)))?;
    let seed = project.sampling.seed.wrapping_add(prompt as u64 * 1000);
    let mut answers: Vec<String> = vec![];
    for round in 0..=REDRAWS {
        let want = project.k - answers.len();
        if want == 0 {
            break;
        }
        let drawn = draw(model, project, prompt, &ids, seed + round * 100, want)?;
        for a in drawn {
            if !answers.contains(&a) && answers.len() < project.k {
                answers.push(a);
            }
        }
    }
    if answers.len() < project.k {
        tracing::warn!(
            prompt,
            distinct = answers.len(),
            k = project.k,
            "the model gave the same answer again and again (a higher sampling temperature gives more different answers)"
        );
    }
    Ok(answers)
}

/// `n` answers from one prefill, sampled with seeds `seed + i`.
fn draw(
    model: &ServedModel,
    project: &Project,
    prompt: i64,
    ids: &[u32],
    seed: u64,
    n: usize,
) -> Result<Vec<String>> {
    let s = &project.sampling;
    let req = Request {
        max_new_tokens: s
            .max_tokens
            .min(model.engine.max_len().saturating_sub(ids.len() + 1)),
        prompt: ids.to_vec(),
        sampling: SamplingParams {
            temperature: s.temperature,
            top_p: s.top_p,
            seed,
            ..Default::default()
        },
        stop_ids: model.stop_ids.clone(),
        model: model.index,
        ..Default::default()
    };
    let rxs = model
        .engine
        .submit_n(req, n)
        .map_err(|e| LabelError::Invalid(format!("prompt {prompt}: {e}")))?;
    rxs.into_iter()
        .map(|rx| {
            let mut ids = vec![];
            for e in rx {
                if let Event::Token { id, .. } = e
                    && !model.stop_ids.contains(&id)
                {
                    ids.push(id);
                }
            }
            model
                .tok
                .decode(&ids, true)
                .map(|t| t.trim().to_string())
                .map_err(|e| LabelError::Invalid(e.to_string()))
        })
        .collect()
}

/// Samples answers for every prompt waiting for them until `stop` is set; checks for new
/// prompts every `poll`. A prompt the model cannot take (its template refuses it, K beyond
/// the engine's slots) is logged and left for an admin, not retried.
pub fn run(db: Arc<Db>, model: Arc<ServedModel>, stop: Arc<AtomicBool>, poll: Duration) {
    let mut failed = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        match step(&db, &model, &mut failed) {
            Ok(0) => std::thread::sleep(poll),
            Ok(n) => tracing::info!(prompts = n, "answers sampled"),
            Err(e) => {
                tracing::error!("sampling answers: {e}");
                std::thread::sleep(poll);
            }
        }
    }
}

/// Samples the answers of up to a batch of waiting prompts, skipping those in `failed` (and
/// adding those that fail); returns how many got theirs.
pub fn step(db: &Db, model: &ServedModel, failed: &mut HashSet<i64>) -> Result<usize> {
    let waiting = db.read(|c| projects::waiting_for_answers(c, 8 + failed.len()))?;
    let mut done = 0;
    let waiting: Vec<_> = waiting
        .into_iter()
        .filter(|w| !failed.contains(&w.0))
        .collect();
    for (prompt, messages, project) in waiting {
        let project = db
            .read(|c| projects::by_id(c, project))?
            .expect("a prompt's project");
        let answers = match sample(model, &project, prompt, &messages) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("project `{}`: no answers for {e}", project.name);
                failed.insert(prompt);
                continue;
            }
        };
        // Another sampler (a second server on the same file) may have been first.
        db.tx(|t| {
            if projects::answers(t, prompt)?.is_empty() {
                projects::add_answers(t, prompt, &answers, &model.id)?;
            }
            Ok(())
        })?;
        done += 1;
    }
    Ok(done)
}
