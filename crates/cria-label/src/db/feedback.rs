//! Feedback from the chat page (`cria serve --feedback-db`): a thumb on a reply, and after a
//! regenerated reply, which of the two is better. Both land in the "chat feedback" project as
//! a prompt (the conversation so far) with its answers and a finished label by the chat user
//! of the caller's API key, so they are counted and exported as every other label is: a
//! comparison is a ranking of K = 2.

use super::projects::{self, Kind, NewProject, Project};
use super::{now, users};
use crate::error::{LabelError, Result};
use rusqlite::{Transaction, params};
use serde_json::{Value, json};

/// The project chat feedback lands in.
pub const PROJECT: &str = "chat feedback";

fn project(t: &Transaction) -> Result<Project> {
    if let Some(p) = projects::by_name(t, PROJECT)? {
        return Ok(p);
    }
    projects::create(
        t,
        &NewProject {
            name: PROJECT.into(),
            kind: Kind::Feedback,
            k: None,
            overlap: 1,
            sampling: Default::default(),
            instructions: "Thumbs and comparisons people gave on the chat page.".into(),
        },
    )
}

/// Stores a finished label on a new prompt of the feedback project.
fn store(
    t: &Transaction,
    key: &str,
    model: &str,
    messages: &[Value],
    answers: &[String],
    body: Value,
) -> Result<i64> {
    if answers.iter().any(|a| a.trim().is_empty()) {
        return Err(LabelError::Invalid("a reply is empty".into()));
    }
    let p = project(t)?;
    let user = users::chat_user(t, key)?;
    t.execute(
        "INSERT INTO prompts (project_id, messages, source, created) VALUES (?1, ?2, ?3, ?4)",
        params![
            p.id,
            Value::from(messages.to_vec()).to_string(),
            format!("chat:{model}"),
            now()
        ],
    )?;
    let prompt = t.last_insert_rowid();
    projects::add_answers(t, prompt, answers, model)?;
    t.execute(
        "INSERT INTO assignments (prompt_id, user_id, status, shown) VALUES (?1, ?2, 'done', ?3)",
        params![prompt, user, now()],
    )?;
    t.execute(
        "INSERT INTO labels (assignment_id, body, seconds, created) VALUES (?1, ?2, 0, ?3)",
        params![t.last_insert_rowid(), body.to_string(), now()],
    )?;
    Ok(prompt)
}

/// A thumb up (`true`) or down on `reply` to `messages`.
pub fn rate(
    t: &Transaction,
    key: &str,
    model: &str,
    messages: &[Value],
    reply: &str,
    up: bool,
) -> Result<i64> {
    let thumb = if up { "up" } else { "down" };
    store(
        t,
        key,
        model,
        messages,
        &[reply.to_string()],
        json!({ "thumb": thumb }),
    )
}

/// Which of two replies to `messages` is better (`None`: as good as each other).
pub fn compare(
    t: &Transaction,
    key: &str,
    model: &str,
    messages: &[Value],
    answers: [String; 2],
    preferred: Option<usize>,
) -> Result<i64> {
    if answers[0] == answers[1] {
        return Err(LabelError::Invalid(
            "the two replies are the same text: there is nothing to compare".into(),
        ));
    }
    let places = match preferred {
        None => [0, 0],
        Some(0) => [0, 1],
        Some(1) => [1, 0],
        Some(p) => {
            return Err(LabelError::Invalid(format!(
                "preferred: {p} is not reply 0 or 1"
            )));
        }
    };
    store(
        t,
        key,
        model,
        messages,
        &answers,
        json!({ "places": places }),
    )
}
