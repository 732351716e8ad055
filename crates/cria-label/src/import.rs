//! Prompts into a project, from any prompt file cria reads ([`cria_data::tasks`]); rankings
//! become gold items. A file goes in whole or not at all (one transaction).

use crate::db::Db;
use crate::db::projects::{self, Gold, NewPrompt, Project};
use crate::error::{LabelError, Result};
use serde_json::{Value, json};
use std::path::Path;

/// The prompts of `path`, as the database stores them.
pub fn read(path: &Path) -> Result<Vec<NewPrompt>> {
    let prompts = cria_data::tasks::read_label_prompts(path)
        .map_err(|e| LabelError::Invalid(e.to_string()))?;
    if prompts.is_empty() {
        return Err(LabelError::Invalid(format!(
            "{}: no prompts in it",
            path.display()
        )));
    }
    Ok(prompts
        .into_iter()
        .map(|p| NewPrompt {
            messages: p
                .messages
                .iter()
                .map(|m| json!({"role": m.role, "content": m.text()}))
                .collect::<Vec<Value>>(),
            gold: p.gold.map(|(answers, places)| Gold { answers, places }),
            source: p.source,
        })
        .collect())
}

/// Adds the prompts of `path` to `project`; returns how many.
pub fn import(db: &Db, project: &Project, path: &Path) -> Result<usize> {
    let prompts = read(path)?;
    db.tx(|t| projects::add_prompts(t, project, &prompts))
}
