//! Projects, their prompts and the answers sampled for them. A project is one kind of task:
//! writing demonstrations, ranking K sampled answers, or comparing two; `overlap` says how many
//! annotators see each prompt (what inter-annotator agreement is measured on).

use super::now;
use crate::error::{LabelError, Result};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Write the reply a good assistant would give (InstructGPT's demonstrations).
    Demonstration,
    /// Score and order K sampled answers (InstructGPT's comparisons).
    Ranking,
    /// Choose the better of two answers.
    Pairwise,
    /// Thumbs and "which is better?" from the chat page.
    Feedback,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Demonstration => "demonstration",
            Kind::Ranking => "ranking",
            Kind::Pairwise => "pairwise",
            Kind::Feedback => "feedback",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "demonstration" => Some(Kind::Demonstration),
            "ranking" => Some(Kind::Ranking),
            "pairwise" => Some(Kind::Pairwise),
            "feedback" => Some(Kind::Feedback),
            _ => None,
        }
    }

    /// Whether its prompts need sampled answers before anyone can label them.
    pub fn samples(self) -> bool {
        matches!(self, Kind::Ranking | Kind::Pairwise)
    }
}

/// How the answers to rank are sampled (one prefill, K samples, seeds `seed + i`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sampling {
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub max_tokens: usize,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        // InstructGPT sampled its comparison answers from the policy at temperature 1.
        Sampling {
            temperature: 1.0,
            top_p: Some(0.95),
            max_tokens: 256,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub id: i64,
    pub name: String,
    pub kind: Kind,
    /// Answers per prompt (2 for pairwise, 0 for demonstrations).
    pub k: usize,
    pub overlap: usize,
    pub sampling: Sampling,
    /// Guidelines shown to annotators above every task.
    pub instructions: String,
}

/// What an admin asks for when creating a project.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    pub name: String,
    pub kind: Kind,
    #[serde(default)]
    pub k: Option<usize>,
    #[serde(default = "one")]
    pub overlap: usize,
    #[serde(default)]
    pub sampling: Sampling,
    #[serde(default)]
    pub instructions: String,
}

fn one() -> usize {
    1
}

impl NewProject {
    /// The project's K after the range checks (2–9 answers to rank, 2 to compare).
    pub fn check(&self) -> Result<usize> {
        let bad = |m: String| Err(LabelError::Invalid(m));
        if self.name.trim().is_empty() || self.name.len() > 100 {
            return bad("name: 1 to 100 characters".into());
        }
        if !(1..=50).contains(&self.overlap) {
            return bad(format!(
                "overlap {}: annotators per prompt, 1 to 50",
                self.overlap
            ));
        }
        let s = &self.sampling;
        if !(0.0..=2.0).contains(&s.temperature) {
            return bad(format!("sampling.temperature {}: 0 to 2", s.temperature));
        }
        if s.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return bad("sampling.top_p: above 0, at most 1".into());
        }
        if !(1..=8192).contains(&s.max_tokens) {
            return bad(format!("sampling.max_tokens {}: 1 to 8192", s.max_tokens));
        }
        match (self.kind, self.k) {
            (Kind::Ranking, Some(k)) if (2..=9).contains(&k) => Ok(k),
            (Kind::Ranking, Some(k)) => bad(format!("k {k}: rank 2 to 9 answers")),
            (Kind::Ranking, None) => Ok(4),
            (Kind::Pairwise | Kind::Feedback, None | Some(2)) => Ok(2),
            (Kind::Pairwise | Kind::Feedback, Some(k)) => {
                bad(format!("k {k}: a pairwise project compares 2 answers"))
            }
            (Kind::Demonstration, None | Some(0)) => Ok(0),
            (Kind::Demonstration, Some(k)) => bad(format!(
                "k {k}: demonstrations are written, not sampled (leave k out)"
            )),
        }
    }
}

fn project(r: &rusqlite::Row) -> rusqlite::Result<Project> {
    let kind: String = r.get(2)?;
    let sampling: String = r.get(5)?;
    Ok(Project {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: Kind::parse(&kind).unwrap_or(Kind::Feedback),
        k: r.get::<_, i64>(3)? as usize,
        overlap: r.get::<_, i64>(4)? as usize,
        sampling: serde_json::from_str(&sampling).unwrap_or_default(),
        instructions: r.get(6)?,
    })
}

const COLUMNS: &str = "id, name, kind, k, overlap, sampling, instructions";

pub fn create(t: &Transaction, p: &NewProject) -> Result<Project> {
    let k = p.check()?;
    if by_name(t, &p.name)?.is_some() {
        return Err(LabelError::Invalid(format!(
            "a project named `{}` exists already",
            p.name
        )));
    }
    let sampling = serde_json::to_string(&p.sampling).expect("JSON");
    t.execute(
        "INSERT INTO projects (name, kind, k, overlap, sampling, instructions, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            p.name,
            p.kind.as_str(),
            k as i64,
            p.overlap as i64,
            sampling,
            p.instructions,
            now()
        ],
    )?;
    Ok(by_id(t, t.last_insert_rowid())?.expect("just inserted"))
}

pub fn by_name(c: &Connection, name: &str) -> Result<Option<Project>> {
    Ok(c.query_row(
        &format!("SELECT {COLUMNS} FROM projects WHERE name = ?1"),
        params![name],
        project,
    )
    .optional()?)
}

pub fn by_id(c: &Connection, id: i64) -> Result<Option<Project>> {
    Ok(c.query_row(
        &format!("SELECT {COLUMNS} FROM projects WHERE id = ?1"),
        params![id],
        project,
    )
    .optional()?)
}

pub fn list(c: &Connection) -> Result<Vec<Project>> {
    let mut q = c.prepare(&format!("SELECT {COLUMNS} FROM projects ORDER BY id"))?;
    let rows = q.query_map([], project)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A prompt to label: the conversation so far (OpenAI-style `{role, content}` messages ending
/// with the user's turn), and, for gold items, the answers given with their reference
/// ranking (each answer's place, ties equal).
#[derive(Debug, Clone, PartialEq)]
pub struct NewPrompt {
    pub messages: Vec<Value>,
    pub gold: Option<Gold>,
    /// Where it came from (`file:line`).
    pub source: String,
}

/// A gold item's fixed answers and the places an expert gave them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gold {
    pub answers: Vec<String>,
    pub places: Vec<usize>,
}

/// Adds prompts to a project; gold items bring their answers with them. Returns how many.
pub fn add_prompts(t: &Transaction, project: &Project, prompts: &[NewPrompt]) -> Result<usize> {
    for p in prompts {
        if let Some(g) = &p.gold {
            if !project.kind.samples() {
                return Err(LabelError::Invalid(format!(
                    "{}: a gold ranking belongs in a ranking or pairwise project, not in `{}` ({})",
                    p.source,
                    project.name,
                    project.kind.as_str()
                )));
            }
            if g.answers.len() != project.k {
                return Err(LabelError::Invalid(format!(
                    "{}: the gold item has {} answers; project `{}` ranks {}",
                    p.source,
                    g.answers.len(),
                    project.name,
                    project.k
                )));
            }
        }
        let messages = serde_json::to_string(&p.messages).expect("JSON");
        let gold = p
            .gold
            .as_ref()
            .map(|g| serde_json::to_string(&g.places).expect("JSON"));
        t.execute(
            "INSERT INTO prompts (project_id, messages, gold, source, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![project.id, messages, gold, p.source, now()],
        )?;
        if let Some(g) = &p.gold {
            add_answers(t, t.last_insert_rowid(), &g.answers, "gold")?;
        }
    }
    Ok(prompts.len())
}

/// Stores the answers sampled for a prompt (all K at once).
pub fn add_answers(t: &Transaction, prompt: i64, texts: &[String], model: &str) -> Result<()> {
    for (i, text) in texts.iter().enumerate() {
        t.execute(
            "INSERT INTO answers (prompt_id, idx, text, model) VALUES (?1, ?2, ?3, ?4)",
            params![prompt, i as i64, text, model],
        )?;
    }
    Ok(())
}

/// Prompts of sampling projects still without their answers: (prompt id, messages, project).
pub fn waiting_for_answers(c: &Connection, limit: usize) -> Result<Vec<(i64, Vec<Value>, i64)>> {
    let mut q = c.prepare(
        "SELECT p.id, p.messages, p.project_id FROM prompts p JOIN projects j ON j.id = p.project_id
         WHERE j.kind IN ('ranking', 'pairwise')
           AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.prompt_id = p.id)
         ORDER BY p.id LIMIT ?1",
    )?;
    let rows = q.query_map(params![limit as i64], |r| {
        let m: String = r.get(1)?;
        Ok((
            r.get(0)?,
            serde_json::from_str(&m).unwrap_or_default(),
            r.get(2)?,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A prompt's messages.
pub fn messages(c: &Connection, prompt: i64) -> Result<Vec<Value>> {
    let m: String = c.query_row(
        "SELECT messages FROM prompts WHERE id = ?1",
        params![prompt],
        |r| r.get(0),
    )?;
    Ok(serde_json::from_str(&m).unwrap_or_default())
}

/// A prompt's answers, in their stored order.
pub fn answers(c: &Connection, prompt: i64) -> Result<Vec<String>> {
    let mut q = c.prepare("SELECT text FROM answers WHERE prompt_id = ?1 ORDER BY idx")?;
    let rows = q.query_map(params![prompt], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How far a project is: prompts, those ready to label (for rankings: with two or more
/// different answers), and labels done and skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Progress {
    pub prompts: usize,
    pub ready: usize,
    pub gold: usize,
    pub done: usize,
    pub skipped: usize,
    pub open: usize,
}

pub fn progress(c: &Connection, project: &Project) -> Result<Progress> {
    let count = |sql: &str| -> Result<usize> {
        Ok(c.query_row(sql, params![project.id], |r| r.get::<_, i64>(0))? as usize)
    };
    let ready = if project.kind.samples() {
        count(
            "SELECT COUNT(*) FROM prompts p WHERE p.project_id = ?1
             AND (SELECT COUNT(*) FROM answers a WHERE a.prompt_id = p.id) >= 2",
        )?
    } else {
        count("SELECT COUNT(*) FROM prompts WHERE project_id = ?1")?
    };
    let status = |s: &str| -> Result<usize> {
        Ok(c.query_row(
            "SELECT COUNT(*) FROM assignments a JOIN prompts p ON p.id = a.prompt_id
             WHERE p.project_id = ?1 AND a.status = ?2",
            params![project.id, s],
            |r| r.get::<_, i64>(0),
        )? as usize)
    };
    Ok(Progress {
        prompts: count("SELECT COUNT(*) FROM prompts WHERE project_id = ?1")?,
        ready,
        gold: count("SELECT COUNT(*) FROM prompts WHERE project_id = ?1 AND gold IS NOT NULL")?,
        done: status("done")?,
        skipped: status("skipped")?,
        open: status("open")?,
    })
}
