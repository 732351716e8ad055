//! Instruction and chat data: Alpaca `{instruction, input, output}`, chat `{"messages":
//! [{role, content}]}` (OpenAI/TRL), ShareGPT `{"conversations": [{from, value}]}` and
//! `{prompt, completion}`, as a JSON list or JSONL, optionally gzipped. Every record becomes a
//! list of messages; a malformed record is an error naming the file, the line (JSONL) or
//! record number (JSON list), and the field.

use crate::error::{DataError, Result};
use crate::message::{Message, Role};
use crate::records::{At, Rejects, read_records, short, string, turns};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Reads every conversation of one file.
pub fn read_conversations(path: &Path) -> Result<Vec<Vec<Message>>> {
    read_records(path, &mut Rejects::strict(), conversation)
}

/// Reads and concatenates several files; none may be empty. Malformed records fail.
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<Message>>> {
    read_all_with(paths, &mut Rejects::strict())
}

/// As [`read_all`], malformed records going to `rejects` (which fails or skips them).
pub fn read_all_with(paths: &[PathBuf], rejects: &mut Rejects) -> Result<Vec<Vec<Message>>> {
    let mut all = Vec::new();
    for p in paths {
        let c = read_records(p, rejects, conversation)?;
        if c.is_empty() {
            return Err(DataError::Empty(format!(
                "{}: no records left to use",
                p.display()
            )));
        }
        all.extend(c);
    }
    Ok(all)
}

fn conversation(at: &At, rec: &Value) -> Result<Vec<Message>> {
    if !rec.is_object() {
        return Err(at.err("(record)", "expected a JSON object"));
    }
    // KTO's unpaired feedback: a completion marked undesirable must not be learned.
    match rec.get("label") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            return Err(at.err(
                "label",
                "an undesirable completion (KTO's `label: false`): supervised fine-tuning \
                 would learn it; keep only `label: true` records",
            ));
        }
        Some(other) => {
            return Err(at.err(
                "label",
                format!("expected true or false, got {}", short(other)),
            ));
        }
    }
    let msgs = if let Some(list) = rec.get("messages") {
        turns(at, list, "messages", "role", "content", Role::parse)?
    } else if rec.get("chosen").is_some() || rec.get("responses").is_some() {
        return Err(at.err(
            "(record)",
            "a preference record (chosen/rejected or a ranking): SFT trains on demonstrations; \
             give it to `cria rm` or `cria dpo`, or SFT on the chosen answers",
        ));
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
        prompt_completion(at, rec)?
    } else {
        return Err(at.err(
            "(record)",
            "not a known format: expected `messages`, `conversations`, `instruction`/`output` or `prompt`/`completion`",
        ));
    };
    validate(at, &msgs)?;
    Ok(msgs)
}

/// `{prompt, completion}`: each a string, or (TRL's conversational form) a list of messages.
fn prompt_completion(at: &At, rec: &Value) -> Result<Vec<Message>> {
    let part = |field: &str, role: Role| -> Result<Vec<Message>> {
        match rec.get(field) {
            Some(Value::String(s)) => Ok(vec![Message::new(role, s.as_str())]),
            Some(list @ Value::Array(_)) => turns(at, list, field, "role", "content", Role::parse),
            Some(other) => Err(at.err(
                field,
                format!(
                    "expected a string or a list of messages, got {}",
                    short(other)
                ),
            )),
            None => Err(at.err(field, "missing")),
        }
    };
    let mut msgs = part("prompt", Role::User)?;
    msgs.extend(part("completion", Role::Assistant)?);
    Ok(msgs)
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
