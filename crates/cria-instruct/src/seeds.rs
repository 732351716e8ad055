//! Seed tasks in the self-instruct format (one JSON object a line: `id`, `name`, `instruction`,
//! `instances` of `{input, output}`, `is_classification`), as the published seed file and the
//! project's own company seeds are written. A bad line is an error naming the file, the line
//! and the field.

use crate::error::{InstructError, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub input: String,
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedTask {
    pub id: String,
    pub name: String,
    pub instruction: String,
    pub instances: Vec<Instance>,
    pub is_classification: bool,
}

/// Reads a seed file; every task must have an instruction, at least one instance with an
/// output, and an id no other task has.
pub fn read_seeds(path: &Path) -> Result<Vec<SeedTask>> {
    let text = std::fs::read_to_string(path).map_err(|e| InstructError::io(path, e))?;
    let mut out: Vec<SeedTask> = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |field: &str, msg: String| InstructError::Seed {
            path: path.to_path_buf(),
            line: i + 1,
            field: field.to_string(),
            msg,
        };
        let v: Value =
            serde_json::from_str(line).map_err(|e| err("(line)", format!("invalid JSON: {e}")))?;
        let s = |k: &str| -> Result<String> {
            match v.get(k) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(err(k, format!("expected a string, got {other}"))),
                None => Err(err(k, "missing".into())),
            }
        };
        let instruction = s("instruction")?;
        if instruction.trim().is_empty() {
            return Err(err("instruction", "empty".into()));
        }
        let id = s("id")?;
        if out.iter().any(|t| t.id == id) {
            return Err(err("id", format!("`{id}` is given twice")));
        }
        let list = v
            .get("instances")
            .and_then(Value::as_array)
            .ok_or_else(|| err("instances", "expected a list of {input, output}".into()))?;
        let mut instances = vec![];
        for (j, x) in list.iter().enumerate() {
            let field = |k: &str| -> Result<String> {
                x.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| err(&format!("instances[{j}].{k}"), "expected a string".into()))
            };
            instances.push(Instance {
                input: field("input")?,
                output: field("output")?,
            });
        }
        if instances.is_empty() || instances[0].output.trim().is_empty() {
            return Err(err(
                "instances",
                "at least one instance with an output".into(),
            ));
        }
        let is_classification = v
            .get("is_classification")
            .and_then(Value::as_bool)
            .ok_or_else(|| err("is_classification", "expected true or false".into()))?;
        out.push(SeedTask {
            id,
            name: s("name").unwrap_or_default(),
            instruction,
            instances,
            is_classification,
        });
    }
    if out.is_empty() {
        return Err(InstructError::Invalid(format!(
            "{}: no seed tasks in it",
            path.display()
        )));
    }
    Ok(out)
}
