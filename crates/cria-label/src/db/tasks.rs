//! Assignments and labels: who labels which prompt, and what they said. Each prompt goes to
//! `overlap` annotators (gold items to every one), an annotator never gets the same prompt
//! twice, and sees only their own tasks. Answers are shown in an order shuffled per
//! assignment and without any mark of where they came from; labels are stored in the
//! answers' own order.

use super::now;
use super::projects::{self, Kind, Project};
use crate::error::{LabelError, Result};
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// InstructGPT's metadata flags for an answer.
pub const FLAGS: [&str; 5] = [
    "fails_instruction",
    "inappropriate",
    "made_up_facts",
    "harmful",
    "private_data",
];

/// A task as its annotator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Task {
    pub assignment: i64,
    pub project: String,
    pub kind: Kind,
    pub instructions: String,
    pub messages: Vec<Value>,
    /// The answers in the order this annotator sees them.
    pub answers: Vec<String>,
}

/// The order one assignment shows a prompt's `k` answers in: `order[shown] = stored`.
pub fn order(assignment: i64, k: usize) -> Vec<usize> {
    let mut o: Vec<usize> = (0..k).collect();
    o.shuffle(&mut StdRng::seed_from_u64(assignment as u64));
    o
}

/// The annotator's open task in `project`, or a new one; `None` when nothing is left for them.
pub fn next(t: &Transaction, user: i64, project: &Project) -> Result<Option<Task>> {
    let open: Option<i64> = t
        .query_row(
            "SELECT a.id FROM assignments a JOIN prompts p ON p.id = a.prompt_id
             WHERE a.user_id = ?1 AND p.project_id = ?2 AND a.status = 'open'
             ORDER BY a.id LIMIT 1",
            params![user, project.id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(a) = open {
        return task(t, a, user).map(Some);
    }
    // Prompts ready to label that this annotator has not had and that still need annotators
    // (gold items go to everyone), those already started by others first so that overlapping
    // labels (what agreement is measured on) come early.
    let prompt: Option<i64> = t
        .query_row(
            "SELECT p.id FROM prompts p
             WHERE p.project_id = ?1
               AND (?4 = 0 OR (SELECT COUNT(*) FROM answers x WHERE x.prompt_id = p.id) >= 2)
               AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.prompt_id = p.id AND a.user_id = ?2)
               AND (p.gold IS NOT NULL OR (SELECT COUNT(*) FROM assignments a
                    WHERE a.prompt_id = p.id AND a.status != 'skipped') < ?3)
             ORDER BY CASE WHEN p.gold IS NULL THEN (SELECT COUNT(*) FROM assignments a
                    WHERE a.prompt_id = p.id AND a.status != 'skipped') ELSE 0 END DESC, p.id
             LIMIT 1",
            params![project.id, user, project.overlap as i64, project.kind.samples()],
            |r| r.get(0),
        )
        .optional()?;
    let Some(prompt) = prompt else {
        return Ok(None);
    };
    t.execute(
        "INSERT INTO assignments (prompt_id, user_id, status, shown) VALUES (?1, ?2, 'open', ?3)",
        params![prompt, user, now()],
    )?;
    task(t, t.last_insert_rowid(), user).map(Some)
}

/// The assignment's prompt, project and owner.
fn owner(c: &Connection, assignment: i64) -> Result<(i64, i64, String, i64)> {
    c.query_row(
        "SELECT a.user_id, a.prompt_id, a.status, p.project_id FROM assignments a
         JOIN prompts p ON p.id = a.prompt_id WHERE a.id = ?1",
        params![assignment],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .optional()?
    .ok_or_else(|| LabelError::NotFound(format!("task {assignment}")))
}

/// Task `assignment` as `user` sees it; another person's task is not found (it is not theirs
/// to see, nor to know about).
pub fn task(c: &Connection, assignment: i64, user: i64) -> Result<Task> {
    let (who, prompt, _, project) = owner(c, assignment)?;
    if who != user {
        return Err(LabelError::NotFound(format!("task {assignment}")));
    }
    let project = projects::by_id(c, project)?.expect("a prompt's project");
    let stored = projects::answers(c, prompt)?;
    let answers = order(assignment, stored.len())
        .into_iter()
        .map(|i| stored[i].clone())
        .collect();
    Ok(Task {
        assignment,
        project: project.name,
        kind: project.kind,
        instructions: project.instructions,
        messages: projects::messages(c, prompt)?,
        answers,
    })
}

/// A label as the page sends it: answers by the position they were shown in.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Submission {
    Demonstration {
        text: String,
    },
    /// Each shown answer's place (1 the best; equal places are a tie), its 1–7 score and flags.
    Ranking {
        places: Vec<usize>,
        likert: Vec<u8>,
        flags: Vec<Vec<String>>,
    },
    /// The better of two shown answers (`None`: as good as each other), with optional flags.
    Pairwise {
        preferred: Option<usize>,
        #[serde(default)]
        flags: Vec<Vec<String>>,
    },
    /// Not labelled, with why; `report` marks the prompt itself as a problem (private data,
    /// nonsense) for an admin.
    Skip {
        reason: String,
        #[serde(default)]
        report: bool,
    },
}

/// Longest demonstration accepted, in characters.
const MAX_TEXT: usize = 20_000;

/// Checks a submission against its task and turns it into the stored label (answers in their
/// stored order, places as 0-based tiers).
fn body(s: &Submission, kind: Kind, shown: &[usize]) -> Result<Value> {
    let bad = |m: String| Err(LabelError::Invalid(m));
    let k = shown.len();
    let unshuffle = |per_shown: &[Value]| -> Vec<Value> {
        let mut out = vec![Value::Null; k];
        for (pos, v) in per_shown.iter().enumerate() {
            out[shown[pos]] = v.clone();
        }
        out
    };
    match (s, kind) {
        (Submission::Skip { reason, report }, _) => {
            if reason.trim().is_empty() {
                return bad("reason: say why the task is skipped".into());
            }
            Ok(json!({"skip": reason.trim(), "report": report}))
        }
        (Submission::Demonstration { text }, Kind::Demonstration) => {
            let text = text.trim();
            if text.is_empty() {
                return bad("text: the demonstration is empty".into());
            }
            if text.chars().count() > MAX_TEXT {
                return bad(format!("text: longer than {MAX_TEXT} characters"));
            }
            Ok(json!({ "text": text }))
        }
        (
            Submission::Ranking {
                places,
                likert,
                flags,
            },
            Kind::Ranking,
        ) => {
            if places.len() != k || likert.len() != k || flags.len() != k {
                return bad(format!(
                    "places, likert and flags: one for each of the {k} answers"
                ));
            }
            if let Some(p) = places.iter().find(|&&p| p == 0 || p > k) {
                return bad(format!("places: {p} is not a place from 1 to {k}"));
            }
            if let Some(l) = likert.iter().find(|&&l| !(1..=7).contains(&l)) {
                return bad(format!("likert: {l} is not a score from 1 to 7"));
            }
            check_flags(flags)?;
            let tiers = tiers(places);
            Ok(json!({
                "places": unshuffle(&tiers.iter().map(|&t| json!(t)).collect::<Vec<_>>()),
                "likert": unshuffle(&likert.iter().map(|&l| json!(l)).collect::<Vec<_>>()),
                "flags": unshuffle(&flags.iter().map(|f| json!(f)).collect::<Vec<_>>()),
            }))
        }
        (Submission::Pairwise { preferred, flags }, Kind::Pairwise) => {
            let places = match preferred {
                None => vec![0, 0],
                Some(0) => vec![0, 1],
                Some(1) => vec![1, 0],
                Some(p) => return bad(format!("preferred: {p} is not answer 0 or 1")),
            };
            let flags = if flags.is_empty() {
                vec![vec![]; 2]
            } else {
                flags.clone()
            };
            if flags.len() != 2 {
                return bad("flags: one list for each of the 2 answers".into());
            }
            check_flags(&flags)?;
            Ok(json!({
                "places": unshuffle(&places.iter().map(|&t| json!(t)).collect::<Vec<_>>()),
                "flags": unshuffle(&flags.iter().map(|f| json!(f)).collect::<Vec<_>>()),
            }))
        }
        (_, kind) => bad(format!("this is a {} task", kind.as_str())),
    }
}

fn check_flags(flags: &[Vec<String>]) -> Result<()> {
    for f in flags.iter().flatten() {
        if !FLAGS.contains(&f.as_str()) {
            return Err(LabelError::Invalid(format!(
                "flags: `{f}` is not one of {}",
                FLAGS.join(", ")
            )));
        }
    }
    Ok(())
}

/// Places (1 the best, ties equal, gaps allowed) as dense 0-based tiers: `[3, 1, 3]` is
/// `[1, 0, 1]`.
pub fn tiers(places: &[usize]) -> Vec<usize> {
    let mut distinct: Vec<usize> = places.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    places
        .iter()
        .map(|p| distinct.binary_search(p).expect("a place present"))
        .collect()
}

/// Saves `user`'s label for `assignment`, in the caller's transaction; the task must be theirs
/// and still open. Returns the seconds the task took (from when it was first shown).
pub fn submit(t: &Transaction, user: i64, assignment: i64, s: &Submission) -> Result<f64> {
    let (who, prompt, status, project) = owner(t, assignment)?;
    if who != user {
        return Err(LabelError::NotFound(format!("task {assignment}")));
    }
    if status != "open" {
        return Err(LabelError::Conflict(format!(
            "task {assignment} was submitted already"
        )));
    }
    let project = projects::by_id(t, project)?.expect("a prompt's project");
    let k = projects::answers(t, prompt)?.len();
    let body = body(s, project.kind, &order(assignment, k))?;
    let shown: i64 = t.query_row(
        "SELECT shown FROM assignments WHERE id = ?1",
        params![assignment],
        |r| r.get(0),
    )?;
    let seconds = (now() - shown).max(0) as f64;
    t.execute(
        "INSERT INTO labels (assignment_id, body, seconds, created) VALUES (?1, ?2, ?3, ?4)",
        params![assignment, body.to_string(), seconds, now()],
    )?;
    let status = if matches!(s, Submission::Skip { .. }) {
        "skipped"
    } else {
        "done"
    };
    t.execute(
        "UPDATE assignments SET status = ?1 WHERE id = ?2",
        params![status, assignment],
    )?;
    Ok(seconds)
}

/// How many tasks of a project a person has finished (labelled or skipped).
pub fn count_by(c: &Connection, project: i64, user: i64) -> Result<usize> {
    Ok(c.query_row(
        "SELECT COUNT(*) FROM assignments a JOIN prompts p ON p.id = a.prompt_id
         WHERE p.project_id = ?1 AND a.user_id = ?2 AND a.status != 'open'",
        params![project, user],
        |r| r.get::<_, i64>(0),
    )? as usize)
}

/// One finished label with what quality and export need.
#[derive(Debug, Clone)]
pub struct Label {
    pub prompt: i64,
    pub user: String,
    pub body: Value,
    pub seconds: f64,
    /// The gold item's places, when the prompt is one.
    pub gold: Option<Vec<usize>>,
}

/// Every label (skips left out) of a project, by prompt then annotator.
pub fn labels(c: &Connection, project: &Project) -> Result<Vec<Label>> {
    let mut q = c.prepare(
        "SELECT p.id, u.name, l.body, l.seconds, p.gold FROM labels l
         JOIN assignments a ON a.id = l.assignment_id
         JOIN prompts p ON p.id = a.prompt_id
         JOIN users u ON u.id = a.user_id
         WHERE p.project_id = ?1 AND a.status = 'done'
         ORDER BY p.id, u.name",
    )?;
    let rows = q.query_map(params![project.id], |r| {
        let body: String = r.get(2)?;
        let gold: Option<String> = r.get(4)?;
        Ok(Label {
            prompt: r.get(0)?,
            user: r.get(1)?,
            body: serde_json::from_str(&body).unwrap_or(Value::Null),
            seconds: r.get(3)?,
            gold: gold.and_then(|g| serde_json::from_str(&g).ok()),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Skipped tasks that were reported: (prompt id, annotator, reason).
pub fn reports(c: &Connection, project: &Project) -> Result<Vec<(i64, String, String)>> {
    let mut q = c.prepare(
        "SELECT p.id, u.name, l.body FROM labels l
         JOIN assignments a ON a.id = l.assignment_id
         JOIN prompts p ON p.id = a.prompt_id
         JOIN users u ON u.id = a.user_id
         WHERE p.project_id = ?1 AND a.status = 'skipped'
         ORDER BY l.id",
    )?;
    let rows = q.query_map(params![project.id], |r| {
        let body: String = r.get(2)?;
        Ok((r.get(0)?, r.get(1)?, body))
    })?;
    let mut out = vec![];
    for row in rows {
        let (p, u, body) = row?;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if v["report"] == json!(true) {
            out.push((p, u, v["skip"].as_str().unwrap_or_default().to_string()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_become_dense_tiers() {
        assert_eq!(tiers(&[3, 1, 3]), vec![1, 0, 1]);
        assert_eq!(tiers(&[1, 2, 3, 4]), vec![0, 1, 2, 3]);
        assert_eq!(tiers(&[2, 2]), vec![0, 0]);
    }

    #[test]
    fn a_ranking_is_stored_in_the_answers_own_order() {
        // Shown order: stored answers 2, 0, 1. The annotator puts the first shown best, ties
        // the other two, and scores them 7, 3, 3.
        let shown = [2, 0, 1];
        let s = Submission::Ranking {
            places: vec![1, 2, 2],
            likert: vec![7, 3, 4],
            flags: vec![vec![], vec!["harmful".into()], vec![]],
        };
        let b = body(&s, Kind::Ranking, &shown).unwrap();
        assert_eq!(b["places"], json!([1, 1, 0]));
        assert_eq!(b["likert"], json!([3, 4, 7]));
        assert_eq!(b["flags"], json!([["harmful"], [], []]));
        let bad = Submission::Ranking {
            places: vec![1, 2, 4],
            likert: vec![7, 3, 4],
            flags: vec![vec![]; 3],
        };
        assert!(
            body(&bad, Kind::Ranking, &shown)
                .unwrap_err()
                .to_string()
                .contains("places: 4")
        );
        let wrong_kind = Submission::Demonstration { text: "x".into() };
        assert!(body(&wrong_kind, Kind::Ranking, &shown).is_err());
    }

    #[test]
    fn each_assignment_has_its_own_fixed_order() {
        assert_eq!(order(7, 4), order(7, 4));
        let orders: std::collections::HashSet<Vec<usize>> = (0..20).map(|a| order(a, 4)).collect();
        assert!(orders.len() > 5, "orders vary between assignments");
    }
}
