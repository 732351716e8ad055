//! Evaluation sets: question/answer files (JSONL `{question, answer}` or `{question, answers}`,
//! or `{messages, answers}`: a conversation whose last user turn is the question)
//! and multiple-choice questions in TruthfulQA's CSV layout (`Question`, `Best Answer`,
//! `Correct Answers`, `Incorrect Answers`, the answer lists separated by `;`). Errors name the
//! file, line and field.

use crate::error::{DataError, Result};
use crate::message::Role;
use crate::records::{At, Rejects, read_records, string};
use serde_json::Value;
use std::path::Path;

/// A question and the answers that count as right.
#[derive(Debug, Clone, PartialEq)]
pub struct Qa {
    pub question: String,
    pub answers: Vec<String>,
    /// The turns before the question (a conversation's earlier exchanges), if any.
    pub context: Vec<crate::message::Message>,
}

/// Reads a question/answer file.
pub fn read_qa(path: &Path) -> Result<Vec<Qa>> {
    let rows = read_records(path, &mut Rejects::strict(), |at: &At, rec: &Value| {
        let (question, context) = match rec.get("messages") {
            Some(list) => {
                let mut turns =
                    crate::records::turns(at, list, "messages", "role", "content", Role::parse)?;
                match turns.pop() {
                    Some(last) if last.role == Role::User && !last.content.trim().is_empty() => {
                        (last.content, turns)
                    }
                    _ => {
                        return Err(at.err(
                            "messages",
                            "the conversation must end with the user's question",
                        ));
                    }
                }
            }
            None => (string(at, rec, "question", "question")?.to_string(), vec![]),
        };
        let answers = match (rec.get("answer"), rec.get("answers")) {
            (Some(_), _) => vec![string(at, rec, "answer", "answer")?.to_string()],
            (None, Some(Value::Array(list))) => list
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| at.err(&format!("answers[{i}]"), "expected a string"))
                })
                .collect::<Result<Vec<_>>>()?,
            _ => return Err(at.err("answer", "missing (give `answer` or `answers`)")),
        };
        if answers.iter().all(|a| a.trim().is_empty()) {
            return Err(at.err("answer", "empty"));
        }
        Ok(Qa {
            question,
            answers,
            context,
        })
    })?;
    if rows.is_empty() {
        return Err(DataError::Empty(format!(
            "{}: no questions",
            path.display()
        )));
    }
    Ok(rows)
}

/// A multiple-choice question: the best answer, all true answers (the best among them) and
/// the false ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Mc {
    pub question: String,
    pub best: String,
    pub correct: Vec<String>,
    pub incorrect: Vec<String>,
}

/// Reads a TruthfulQA-layout CSV.
pub fn read_truthful(path: &Path) -> Result<Vec<Mc>> {
    let err = |line: usize, msg: String| DataError::Record {
        path: path.to_path_buf(),
        line: Some(line),
        msg,
    };
    let bytes = crate::corpus::read_bytes(path)?;
    let mut r = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(bytes.as_slice());
    let headers = r
        .headers()
        .map_err(|e| err(1, format!("CSV header: {e}")))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| err(1, format!("no `{name}` column")))
    };
    let (q, best, good, bad) = (
        col("Question")?,
        col("Best Answer")?,
        col("Correct Answers")?,
        col("Incorrect Answers")?,
    );
    let split = |s: &str| -> Vec<String> {
        s.split(';')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    };
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            err(line, format!("invalid CSV: {e}"))
        })?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        let field = |i: usize, name: &str| -> Result<String> {
            let v = rec.get(i).unwrap_or("").trim().to_string();
            if v.is_empty() {
                return Err(err(line, format!("field `{name}`: empty")));
            }
            Ok(v)
        };
        let best = field(best, "Best Answer")?;
        let mut correct = split(&field(good, "Correct Answers")?);
        if !correct.contains(&best) {
            correct.insert(0, best.clone());
        }
        out.push(Mc {
            question: field(q, "Question")?,
            best,
            correct,
            incorrect: split(&field(bad, "Incorrect Answers")?),
        });
    }
    if out.is_empty() {
        return Err(DataError::Empty(format!(
            "{}: no questions",
            path.display()
        )));
    }
    Ok(out)
}
