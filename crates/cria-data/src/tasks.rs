//! Prompts to label (`cria label import`): any file of prompts cria reads elsewhere — records
//! with a `prompt` (a string or messages), chat records (`messages` or ShareGPT
//! `conversations`; turns after the last user turn are dropped: annotators write or rank new
//! replies), Alpaca and self-instruct output (`instruction`, `input`; any `output` is dropped)
//! — and K-way rankings `{prompt, responses, ranking}`, which become gold items: their answers
//! are shown as given and the ranking is the reference annotators are measured against.

use crate::error::Result;
use crate::message::{Message, Role};
use crate::records::{At, Rejects, read_records, string, turns};
use serde_json::Value;
use std::path::Path;

/// One prompt to label.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelPrompt {
    /// Ends with a user turn.
    pub messages: Vec<Message>,
    /// A gold item's answers (single assistant turns) and each one's place (0 the best).
    pub gold: Option<(Vec<String>, Vec<usize>)>,
    /// Where it came from: `file:line` (or `file:record N` in a JSON list).
    pub source: String,
}

/// Reads every prompt of a file; a malformed record is an error naming the file, line and
/// field.
pub fn read_label_prompts(path: &Path) -> Result<Vec<LabelPrompt>> {
    read_records(path, &mut Rejects::strict(), |at, rec| {
        let (messages, gold) = prompt(at, rec)?;
        let source = match (at.line, at.record) {
            (Some(l), _) => format!("{}:{l}", path.display()),
            (None, Some(r)) => format!("{}:record {r}", path.display()),
            (None, None) => path.display().to_string(),
        };
        Ok(LabelPrompt {
            messages,
            gold,
            source,
        })
    })
}

type Parsed = (Vec<Message>, Option<(Vec<String>, Vec<usize>)>);

fn prompt(at: &At, rec: &Value) -> Result<Parsed> {
    if !rec.is_object() {
        return Err(at.err("(record)", "expected a JSON object"));
    }
    if rec.get("responses").is_some() {
        let p = crate::prefs::preference(at, rec)?;
        let answers = p
            .responses
            .iter()
            .enumerate()
            .map(|(i, r)| match r.as_slice() {
                [one] => Ok(one.content.clone()),
                _ => Err(at.err(
                    &format!("responses[{i}]"),
                    "a gold answer is one assistant turn",
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok((p.prompt, Some((answers, p.tiers))));
    }
    if rec.get("messages").is_some()
        || rec.get("conversations").is_some()
        || rec.get("instruction").is_some()
    {
        let mut m = if let Some(list) = rec.get("messages") {
            turns(at, list, "messages", "role", "content", Role::parse)?
        } else if let Some(list) = rec.get("conversations") {
            turns(
                at,
                list,
                "conversations",
                "from",
                "value",
                crate::prefs::sharegpt_role,
            )?
        } else {
            // Alpaca and self-instruct: the instruction and its input (any output is dropped).
            let mut user = Message::new(Role::User, string(at, rec, "instruction", "instruction")?);
            if let Some(input) = rec.get("input").filter(|v| !v.is_null()) {
                let input = input
                    .as_str()
                    .ok_or_else(|| at.err("input", "expected a string"))?;
                user.input = Some(input.to_string()).filter(|i| !i.trim().is_empty());
            }
            vec![user]
        };
        let end = m
            .iter()
            .rposition(|x| x.role == Role::User)
            .ok_or_else(|| at.err("messages", "no user turn to answer"))?;
        m.truncate(end + 1);
        crate::prefs::check_prompt(at, "messages", &m)?;
        return Ok((m, None));
    }
    if rec.get("prompt").is_some() {
        return Ok((crate::prefs::prompt_of(at, rec)?, None));
    }
    Err(at.err(
        "(record)",
        "not a prompt: expected `prompt`, `messages`, `conversations`, `instruction` or a \
         ranking (`prompt`, `responses`, `ranking`)",
    ))
}
