//! Instruction and chat data: Alpaca `{instruction, input, output}`, chat `{"messages":
//! [{role, content}]}` (OpenAI/TRL), ShareGPT `{"conversations": [{from, value}]}` and
//! `{prompt, completion}`, as a JSON list or JSONL, optionally gzipped. Every record becomes a
//! list of messages; a malformed record is an error naming the file, the line (JSONL) or
//! record number (JSON list), and the field.

use crate::corpus::{read_bytes, to_utf8};
use crate::error::{DataError, Result};
use crate::message::{Message, Role};
use serde_json::Value;
use std::path::Path;

/// Where a record sits, for error messages.
pub(crate) struct At<'a> {
    pub path: &'a Path,
    pub line: usize,
    pub record: Option<usize>,
}

impl At<'_> {
    pub(crate) fn err(&self, field: &str, msg: impl std::fmt::Display) -> DataError {
        let what = match self.record {
            Some(r) => format!("record {r}: field `{field}`: {msg}"),
            None => format!("field `{field}`: {msg}"),
        };
        DataError::Record {
            path: self.path.to_path_buf(),
            line: self.line,
            msg: what,
        }
    }
}

pub(crate) fn string<'v>(at: &At, obj: &'v Value, field: &str, path: &str) -> Result<&'v str> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(at.err(path, format!("expected a string, got {other}"))),
        None => Err(at.err(path, "missing")),
    }
}

/// Reads every conversation of one file.
pub fn read_conversations(path: &Path) -> Result<Vec<Vec<Message>>> {
    read_records(path, conversation)
}

/// Reads one JSON list or JSONL file (optionally gzipped), turning each record into a `T`.
pub(crate) fn read_records<T>(
    path: &Path,
    parse: impl Fn(&At, &Value) -> Result<T>,
) -> Result<Vec<T>> {
    let text = to_utf8(path, read_bytes(path)?)?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(&text).map_err(|e| DataError::Record {
            path: path.to_path_buf(),
            line: e.line(),
            msg: format!("invalid JSON: {e}"),
        })?;
        let items = v.as_array().expect("starts with [");
        items
            .iter()
            .enumerate()
            .map(|(i, rec)| {
                let at = At {
                    path,
                    line: 0,
                    record: Some(i + 1),
                };
                parse(&at, rec)
            })
            .collect()
    } else {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = At {
                path,
                line: i + 1,
                record: None,
            };
            let rec: Value = serde_json::from_str(line).map_err(|e| DataError::Record {
                path: path.to_path_buf(),
                line: i + 1,
                msg: format!("invalid JSON: {e}"),
            })?;
            out.push(parse(&at, &rec)?);
        }
        Ok(out)
    }
}

/// Reads and concatenates several files; none may be empty.
pub fn read_all(paths: &[std::path::PathBuf]) -> Result<Vec<Vec<Message>>> {
    let mut all = Vec::new();
    for p in paths {
        let c = read_conversations(p)?;
        if c.is_empty() {
            return Err(DataError::Empty(format!("{}: no records", p.display())));
        }
        all.extend(c);
    }
    Ok(all)
}

fn conversation(at: &At, rec: &Value) -> Result<Vec<Message>> {
    if !rec.is_object() {
        return Err(at.err("(record)", "expected a JSON object"));
    }
    let msgs = if let Some(list) = rec.get("messages") {
        turns(at, list, "messages", "role", "content", Role::parse)?
    } else if let Some(list) = rec.get("conversations") {
        turns(at, list, "conversations", "from", "value", |r| match r {
            "human" | "user" => Some(Role::User),
            "gpt" | "assistant" => Some(Role::Assistant),
            "system" => Some(Role::System),
            _ => None,
        })?
    } else if rec.get("instruction").is_some() {
        let instruction = string(at, rec, "instruction", "instruction")?;
        let input = match rec.get("input") {
            None | Some(Value::Null) => "",
            Some(_) => string(at, rec, "input", "input")?,
        };
        let mut user = Message::new(Role::User, instruction);
        if !input.trim().is_empty() {
            user.input = Some(input.to_string());
        }
        vec![
            user,
            Message::new(Role::Assistant, string(at, rec, "output", "output")?),
        ]
    } else if rec.get("prompt").is_some() {
        vec![
            Message::new(Role::User, string(at, rec, "prompt", "prompt")?),
            Message::new(
                Role::Assistant,
                string(at, rec, "completion", "completion")?,
            ),
        ]
    } else {
        return Err(at.err(
            "(record)",
            "not a known format: expected `messages`, `conversations`, `instruction`/`output` or `prompt`/`completion`",
        ));
    };
    validate(at, &msgs)?;
    Ok(msgs)
}

pub(crate) fn turns(
    at: &At,
    list: &Value,
    field: &str,
    role_key: &str,
    content_key: &str,
    role_of: impl Fn(&str) -> Option<Role>,
) -> Result<Vec<Message>> {
    let items = list
        .as_array()
        .ok_or_else(|| at.err(field, "expected a list of turns"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, turn)| {
            let name = |k: &str| format!("{field}[{i}].{k}");
            let role = string(at, turn, role_key, &name(role_key))?;
            let role = role_of(role)
                .ok_or_else(|| at.err(&name(role_key), format!("unknown role `{role}`")))?;
            let content = string(at, turn, content_key, &name(content_key))?;
            Ok(Message::new(role, content))
        })
        .collect()
}

/// A conversation must end on a non-empty assistant turn, with a system turn only first.
fn validate(at: &At, msgs: &[Message]) -> Result<()> {
    let Some(last) = msgs.last() else {
        return Err(at.err("messages", "the conversation is empty"));
    };
    for (i, m) in msgs.iter().enumerate() {
        if m.role == Role::System && i != 0 {
            return Err(at.err(
                &format!("messages[{i}].role"),
                "a system turn may only come first",
            ));
        }
        if m.role == Role::Assistant && m.content.trim().is_empty() {
            return Err(at.err(&format!("messages[{i}].content"), "empty assistant turn"));
        }
    }
    if last.role != Role::Assistant {
        return Err(at.err(
            &format!("messages[{}].role", msgs.len() - 1),
            "the conversation ends on a user turn: there is no reply to learn",
        ));
    }
    Ok(())
}
