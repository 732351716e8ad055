//! Labels out as exactly the files cria's stages read: demonstrations as chat records for
//! `cria sft`, rankings as K-way `{prompt, responses, ranking}` for `cria rm` and `cria dpo`
//! (ties kept as ties: a list inside `ranking`), and chat thumbs as unpaired
//! `{prompt, completion, label}` records (KTO's layout). Who labelled, their Likert scores and
//! flags ride along in extra fields the readers ignore.
//!
//! Rankings are one record per annotator and prompt, or with `merge` one per prompt: the
//! annotators' orders combined by Tideman's ranked pairs (pairs locked by the size of their
//! majority, none that would close a cycle; answers no locked pair separates stay tied).

use crate::db::Db;
use crate::db::projects::{self, Kind, Project};
use crate::db::tasks::{self, Label};
use crate::error::{LabelError, Result};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// What an export wrote and left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub records: usize,
    /// Rankings with every answer tied (or the same text): nothing to learn from.
    pub all_tied: usize,
}

fn chosen(db: &Db, only: Option<&str>) -> Result<Vec<Project>> {
    let all = db.read(projects::list)?;
    match only {
        None => Ok(all),
        Some(name) => {
            let p: Vec<Project> = all.into_iter().filter(|p| p.name == name).collect();
            if p.is_empty() {
                return Err(LabelError::NotFound(format!("project `{name}`")));
            }
            Ok(p)
        }
    }
}

/// Labels of a project with each prompt's messages and answers.
struct Labelled {
    project: Project,
    labels: Vec<Label>,
    prompts: BTreeMap<i64, (Vec<Value>, Vec<String>)>,
}

fn labelled(db: &Db, project: Project) -> Result<Labelled> {
    db.read(|c| {
        let labels = tasks::labels(c, &project)?;
        let mut prompts = BTreeMap::new();
        for l in &labels {
            if let std::collections::btree_map::Entry::Vacant(e) = prompts.entry(l.prompt) {
                e.insert((
                    projects::messages(c, l.prompt)?,
                    projects::answers(c, l.prompt)?,
                ));
            }
        }
        Ok(Labelled {
            project,
            labels,
            prompts,
        })
    })
}

/// Demonstrations as chat records (`messages` ending with the annotator's reply).
pub fn demonstrations(db: &Db, only: Option<&str>) -> Result<(Vec<Value>, Counts)> {
    let mut out = vec![];
    for p in chosen(db, only)? {
        if p.kind != Kind::Demonstration {
            continue;
        }
        let l = labelled(db, p)?;
        for label in &l.labels {
            let (messages, _) = &l.prompts[&label.prompt];
            let mut conv = messages.clone();
            conv.push(json!({"role": "assistant", "content": label.body["text"]}));
            out.push(json!({
                "messages": conv,
                "annotator": label.user,
                "project": l.project.name,
                "prompt_id": label.prompt,
                "seconds": label.seconds,
            }));
        }
    }
    let records = out.len();
    Ok((
        out,
        Counts {
            records,
            all_tied: 0,
        },
    ))
}

/// `ranking` as the reader takes it: answer indices best first, a tie as a list.
pub fn ranking_field(tiers: &[usize]) -> Value {
    let top = tiers.iter().copied().max().unwrap_or(0);
    let groups: Vec<Value> = (0..=top)
        .map(|t| {
            (0..tiers.len())
                .filter(|&i| tiers[i] == t)
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .map(|g| if g.len() == 1 { json!(g[0]) } else { json!(g) })
        .collect();
    Value::Array(groups)
}

/// Answers with their places, an answer whose text repeats an earlier one dropped (keeping the
/// better place): the readers refuse identical responses. `None` when fewer than two places
/// are left.
fn distinct(answers: &[String], tiers: &[usize]) -> Option<(Vec<String>, Vec<usize>, Vec<usize>)> {
    let mut idx: Vec<usize> = (0..answers.len()).collect();
    idx.sort_by_key(|&i| (tiers[i], i));
    let mut keep: Vec<usize> = vec![];
    for i in idx {
        if !keep.iter().any(|&k| answers[k] == answers[i]) {
            keep.push(i);
        }
    }
    keep.sort_unstable();
    let places: Vec<usize> = keep.iter().map(|&i| tiers[i]).collect();
    let dense = tasks::tiers(&places);
    if dense.iter().all(|&t| t == 0) {
        return None;
    }
    Some((
        keep.iter().map(|&i| answers[i].clone()).collect(),
        dense,
        keep,
    ))
}

/// Rankings of every ranking, pairwise and feedback project: one record per annotator and
/// prompt, or per prompt with `merge`.
pub fn rankings(db: &Db, only: Option<&str>, merge: bool) -> Result<(Vec<Value>, Counts)> {
    let mut out = vec![];
    let mut counts = Counts::default();
    for p in chosen(db, only)? {
        if p.kind == Kind::Demonstration {
            continue;
        }
        let l = labelled(db, p)?;
        let ranked: Vec<&Label> = l
            .labels
            .iter()
            .filter(|x| x.body["places"].is_array())
            .collect();
        let mut by_prompt: BTreeMap<i64, Vec<&Label>> = BTreeMap::new();
        for x in ranked {
            by_prompt.entry(x.prompt).or_default().push(x);
        }
        for (prompt, labels) in by_prompt {
            let (messages, answers) = &l.prompts[&prompt];
            let votes: Vec<Vec<usize>> = labels.iter().map(|x| places_of(x)).collect();
            let groups: Vec<(Vec<usize>, Vec<&Label>)> = if merge {
                vec![(ranked_pairs(answers.len(), &votes), labels.clone())]
            } else {
                votes
                    .into_iter()
                    .zip(labels.iter().map(|x| vec![*x]))
                    .collect()
            };
            for (tiers, by) in groups {
                let Some((responses, tiers, kept)) = distinct(answers, &tiers) else {
                    counts.all_tied += 1;
                    continue;
                };
                let per = |key: &str| -> Value {
                    by.iter()
                        .map(|x| {
                            let v = x.body[key].as_array().cloned().unwrap_or_default();
                            Value::Array(
                                kept.iter()
                                    .map(|&i| v.get(i).cloned().unwrap_or(Value::Null))
                                    .collect(),
                            )
                        })
                        .collect()
                };
                let mut rec = json!({
                    "prompt": messages,
                    "responses": responses,
                    "ranking": ranking_field(&tiers),
                    "project": l.project.name,
                    "prompt_id": prompt,
                });
                if merge {
                    rec["annotators"] = by.iter().map(|x| json!(x.user)).collect();
                    rec["likert"] = per("likert");
                    rec["flags"] = per("flags");
                } else {
                    rec["annotator"] = json!(by[0].user);
                    rec["likert"] = per("likert")[0].clone();
                    rec["flags"] = per("flags")[0].clone();
                }
                out.push(rec);
            }
        }
    }
    counts.records = out.len();
    Ok((out, counts))
}

fn places_of(l: &Label) -> Vec<usize> {
    l.body["places"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(0) as usize).collect())
        .unwrap_or_default()
}

/// Tideman's ranked pairs over `votes` (each a list of places, lower is better) of `n`
/// answers: the combined places, ties where no locked pair separates answers.
pub fn ranked_pairs(n: usize, votes: &[Vec<usize>]) -> Vec<usize> {
    let mut wins = vec![vec![0usize; n]; n];
    for v in votes {
        for i in 0..n {
            for j in 0..n {
                if v[i] < v[j] {
                    wins[i][j] += 1;
                }
            }
        }
    }
    // Majorities, strongest first (more votes for the winner, then fewer for the loser).
    let mut pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .filter(|&(i, j)| wins[i][j] > wins[j][i])
        .collect();
    pairs.sort_by_key(|&(i, j)| (std::cmp::Reverse(wins[i][j]), wins[j][i], i, j));
    let mut locked = vec![vec![false; n]; n];
    for (i, j) in pairs {
        if !reaches(&locked, j, i) {
            locked[i][j] = true;
        }
    }
    // Places by layers: answers nothing unplaced beats.
    let mut place = vec![usize::MAX; n];
    let mut level = 0;
    while place.contains(&usize::MAX) {
        let layer: Vec<usize> = (0..n)
            .filter(|&j| place[j] == usize::MAX)
            .filter(|&j| (0..n).all(|i| place[i] != usize::MAX || !locked[i][j]))
            .collect();
        for j in layer {
            place[j] = level;
        }
        level += 1;
    }
    place
}

/// Whether `to` is reachable from `from` along locked pairs.
fn reaches(locked: &[Vec<bool>], from: usize, to: usize) -> bool {
    let mut seen = vec![false; locked.len()];
    let mut stack = vec![from];
    while let Some(x) = stack.pop() {
        if x == to {
            return true;
        }
        if std::mem::replace(&mut seen[x], true) {
            continue;
        }
        stack.extend((0..locked.len()).filter(|&y| locked[x][y]));
    }
    false
}

/// Thumbs from the chat page as `{prompt, completion, label}`.
pub fn ratings(db: &Db) -> Result<(Vec<Value>, Counts)> {
    let mut out = vec![];
    for p in chosen(db, None)? {
        if p.kind != Kind::Feedback {
            continue;
        }
        let l = labelled(db, p)?;
        for x in &l.labels {
            let Some(thumb) = x.body["thumb"].as_str() else {
                continue;
            };
            let (messages, answers) = &l.prompts[&x.prompt];
            out.push(json!({
                "prompt": messages,
                "completion": [{"role": "assistant", "content": answers[0]}],
                "label": thumb == "up",
                "annotator": x.user,
                "prompt_id": x.prompt,
            }));
        }
    }
    let records = out.len();
    Ok((
        out,
        Counts {
            records,
            all_tied: 0,
        },
    ))
}

/// Writes records as JSONL, atomically (a temporary file renamed over the target).
pub fn write_jsonl(path: &Path, records: &[Value]) -> Result<()> {
    let mut text = String::new();
    for r in records {
        text.push_str(&r.to_string());
        text.push('\n');
    }
    cria_core::fsutil::write_atomic(path, text.as_bytes())
        .map_err(|e| LabelError::Invalid(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_are_lists_in_the_ranking() {
        assert_eq!(ranking_field(&[1, 0, 1, 2]), json!([1, [0, 2], 3]));
        assert_eq!(ranking_field(&[0, 1]), json!([0, 1]));
    }

    #[test]
    fn repeated_answers_keep_their_better_place() {
        let a: Vec<String> = ["x", "y", "x"].map(String::from).to_vec();
        let (texts, tiers, kept) = distinct(&a, &[2, 1, 0]).unwrap();
        assert_eq!(texts, ["y", "x"]);
        assert_eq!(tiers, [1, 0]);
        assert_eq!(kept, [1, 2]);
        let same = vec!["x".to_string(), "x".to_string()];
        assert!(distinct(&same, &[0, 1]).is_none(), "one text left");
    }

    #[test]
    fn ranked_pairs_follow_the_majority_and_break_cycles_by_strength() {
        // Two of three put 0 over 1 over 2.
        let votes = vec![vec![0, 1, 2], vec![0, 1, 2], vec![2, 1, 0]];
        assert_eq!(ranked_pairs(3, &votes), vec![0, 1, 2]);
        // A Condorcet cycle: 0>1 (4-1), 1>2 (3-2), 2>0 (3-2). 0>1 is locked first, then
        // 1>2 (before 2>0 by index); 2>0 would close the cycle and is not.
        let cycle = vec![
            vec![0, 1, 2],
            vec![0, 1, 2],
            vec![1, 2, 0],
            vec![1, 2, 0],
            vec![2, 0, 1],
        ];
        assert_eq!(ranked_pairs(3, &cycle), vec![0, 1, 2]);
        // An even split stays a tie.
        assert_eq!(ranked_pairs(2, &[vec![0, 1], vec![1, 0]]), vec![0, 0]);
    }
}
