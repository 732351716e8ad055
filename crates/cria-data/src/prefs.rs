//! Preference data for reward models and DPO, as a JSON list or JSONL (optionally gzipped):
//!
//! - pairs `{prompt, chosen, rejected}`: `prompt` a string or a list of messages, `chosen` and
//!   `rejected` strings or lists of assistant messages;
//! - pairs without a prompt, `{chosen, rejected}` as whole conversations (lists of messages, or
//!   HH-RLHF transcripts `"\n\nHuman: …\n\nAssistant: …"`): the prompt is the turns they share;
//! - K-way rankings `{prompt, responses: [...], ranking: [...]}`, `ranking` the response indices
//!   best first (InstructGPT's labels); a list inside it is a tie (`[2, [0, 1], 3]`: 2 best,
//!   0 and 1 equal, 3 last), as `cria label export` writes a labeller's ties;
//! - UltraFeedback-binarized: `prompt` a string and `chosen`/`rejected` whole conversations
//!   (the prompt turns included; scores and other fields ignored);
//! - LLaMA-Factory's ShareGPT pairs: `conversations` (`from`/`value` turns) with `chosen` and
//!   `rejected` each one `{from, value}` message;
//! - StackExchange-style `{question, response_j, response_k}`, `response_j` preferred.
//!
//! KTO's unpaired `{prompt, completion, label}` is refused: these stages need pairs.
//!
//! Every record becomes a prompt and its responses best first; a malformed one is an error
//! naming the file, line (or record) and field.

use crate::error::{DataError, Result};
use crate::message::{Message, Role};
use crate::records::{At, Rejects, message, read_records, short, turns};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A prompt and two or more responses to it, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Preference {
    /// Ends with a user turn.
    pub prompt: Vec<Message>,
    /// Each one or more turns continuing the prompt, starting and ending with the assistant.
    pub responses: Vec<Vec<Message>>,
    /// Each response's place, `0` the best; equal places are a tie (never fewer than two
    /// places). Non-decreasing, as the responses are best first.
    pub tiers: Vec<usize>,
}

impl Preference {
    /// Responses in a strict order, best first.
    pub fn ordered(prompt: Vec<Message>, responses: Vec<Vec<Message>>) -> Preference {
        let tiers = (0..responses.len()).collect();
        Preference {
            prompt,
            responses,
            tiers,
        }
    }

    /// The (better, worse) pairs of response indices: every pair in different places.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        let n = self.responses.len();
        (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .filter(|&(i, j)| self.tiers[i] < self.tiers[j])
            .collect()
    }
}

/// Reads every preference record of one file.
pub fn read_preferences(path: &Path) -> Result<Vec<Preference>> {
    read_records(path, &mut Rejects::strict(), preference)
}

/// Reads and concatenates several files; none may be empty. Malformed records fail.
pub fn read_all_preferences(paths: &[PathBuf]) -> Result<Vec<Preference>> {
    read_all_preferences_with(paths, &mut Rejects::strict())
}

/// As [`read_all_preferences`], malformed records going to `rejects`.
pub fn read_all_preferences_with(
    paths: &[PathBuf],
    rejects: &mut Rejects,
) -> Result<Vec<Preference>> {
    let mut all = Vec::new();
    for p in paths {
        let v = read_records(p, rejects, preference)?;
        if v.is_empty() {
            return Err(DataError::Empty(format!(
                "{}: no records left to use",
                p.display()
            )));
        }
        all.extend(v);
    }
    Ok(all)
}

fn role_of(r: &str) -> Option<Role> {
    Role::parse(r)
}

/// A prompt: a non-empty string (one user turn) or a list of messages ending with a user turn.
pub(crate) fn prompt_of(at: &At, rec: &Value) -> Result<Vec<Message>> {
    let msgs = match rec.get("prompt") {
        Some(Value::String(s)) => vec![Message::new(Role::User, s.as_str())],
        Some(list @ Value::Array(_)) => turns(at, list, "prompt", "role", "content", role_of)?,
        Some(other) => {
            return Err(at.err(
                "prompt",
                format!(
                    "expected a string or a list of messages, got {}",
                    short(other)
                ),
            ));
        }
        None => return Err(at.err("prompt", "missing")),
    };
    check_prompt(at, "prompt", &msgs)?;
    Ok(msgs)
}

pub(crate) fn check_prompt(at: &At, field: &str, msgs: &[Message]) -> Result<()> {
    match msgs.last() {
        None => Err(at.err(field, "the prompt is empty")),
        Some(m) if m.role != Role::User => Err(at.err(
            field,
            "the prompt must end with a user turn (the responses answer it)",
        )),
        Some(m) if m.content.trim().is_empty() => Err(at.err(field, "the prompt is empty")),
        Some(_) => Ok(()),
    }
}

/// A response: a non-empty string (one assistant turn), one message object or a list of
/// messages.
fn response_of(at: &At, v: &Value, field: &str) -> Result<Vec<Message>> {
    let msgs = match v {
        Value::String(s) => vec![Message::new(Role::Assistant, s.as_str())],
        list @ Value::Array(_) => turns(at, list, field, "role", "content", role_of)?,
        obj @ Value::Object(_) => vec![one_message(at, obj, field)?],
        other => {
            return Err(at.err(
                field,
                format!(
                    "expected a string or a list of messages, got {}",
                    short(other)
                ),
            ));
        }
    };
    check_response(at, field, &msgs)?;
    Ok(msgs)
}

fn check_response(at: &At, field: &str, msgs: &[Message]) -> Result<()> {
    if msgs.first().map(|m| m.role) != Some(Role::Assistant)
        || msgs.last().map(|m| m.role) != Some(Role::Assistant)
    {
        return Err(at.err(
            field,
            "a response must start and end with an assistant turn",
        ));
    }
    if msgs.iter().any(|m| m.role == Role::System) {
        return Err(at.err(field, "a system turn inside a response"));
    }
    if msgs.last().is_some_and(|m| m.content.trim().is_empty()) {
        return Err(at.err(field, "empty response"));
    }
    Ok(())
}

/// Splits an HH-RLHF transcript (`"\n\nHuman: …\n\nAssistant: …"`) into messages.
pub fn parse_hh(text: &str) -> Option<Vec<Message>> {
    const HUMAN: &str = "\n\nHuman:";
    const ASSISTANT: &str = "\n\nAssistant:";
    let mut rest = text;
    if !rest.starts_with(HUMAN) {
        return None;
    }
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (role, tag) = if rest.starts_with(HUMAN) {
            (Role::User, HUMAN)
        } else if rest.starts_with(ASSISTANT) {
            (Role::Assistant, ASSISTANT)
        } else {
            return None;
        };
        rest = &rest[tag.len()..];
        let end = [rest.find(HUMAN), rest.find(ASSISTANT)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(rest.len());
        out.push(Message::new(role, rest[..end].trim()));
        rest = &rest[end..];
    }
    Some(out)
}

/// A whole conversation given as `chosen` or `rejected` without a separate prompt.
fn conversation_of(at: &At, v: &Value, field: &str) -> Result<Vec<Message>> {
    match v {
        Value::String(s) => parse_hh(s).ok_or_else(|| {
            at.err(
                field,
                "without a `prompt`, chosen and rejected must be conversations: lists of \
                 messages or HH-RLHF transcripts (\"\\n\\nHuman: …\\n\\nAssistant: …\")",
            )
        }),
        list @ Value::Array(_) => turns(at, list, field, "role", "content", role_of),
        other => Err(at.err(
            field,
            format!("expected a conversation, got {}", short(other)),
        )),
    }
}

/// One message object, `{role, content}` or ShareGPT's `{from, value}`.
fn one_message(at: &At, obj: &Value, field: &str) -> Result<Message> {
    if obj.get("from").is_some() {
        message(at, obj, field, "from", "value", &sharegpt_role)
    } else {
        message(at, obj, field, "role", "content", &role_of)
    }
}

pub(crate) fn sharegpt_role(r: &str) -> Option<Role> {
    match r {
        "human" | "user" => Some(Role::User),
        "gpt" | "assistant" => Some(Role::Assistant),
        "system" => Some(Role::System),
        _ => None,
    }
}

/// Whether a conversation-valued field holds the prompt turns too (it starts with a user or
/// system turn), as UltraFeedback's chosen/rejected do.
fn is_whole_conversation(v: &Value) -> bool {
    v.as_array()
        .and_then(|l| l.first())
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        .is_some_and(|r| r != "assistant")
}

pub(crate) fn preference(at: &At, rec: &Value) -> Result<Preference> {
    if !rec.is_object() {
        return Err(at.err("(record)", "expected a JSON object"));
    }
    let p = if let Some(responses) = rec.get("responses") {
        ranking(at, rec, responses)?
    } else if rec.get("chosen").is_some() || rec.get("rejected").is_some() {
        pair(at, rec)?
    } else if rec.get("response_j").is_some() || rec.get("response_k").is_some() {
        let field = |k: &str| rec.get(k).ok_or_else(|| at.err(k, "missing"));
        let question = field("question")?
            .as_str()
            .ok_or_else(|| at.err("question", "expected a string"))?;
        let prompt = vec![Message::new(Role::User, question)];
        check_prompt(at, "question", &prompt)?;
        Preference::ordered(
            prompt,
            vec![
                response_of(at, field("response_j")?, "response_j")?,
                response_of(at, field("response_k")?, "response_k")?,
            ],
        )
    } else if rec.get("label").is_some() {
        return Err(at.err(
            "label",
            "unpaired feedback (KTO's {prompt, completion, label}): the reward model and DPO \
             learn from pairs or rankings of answers to the same prompt; pair the desirable and \
             undesirable completions of each prompt first",
        ));
    } else {
        return Err(at.err(
            "(record)",
            "not a preference record: expected `chosen`/`rejected` (with or without `prompt`), \
             `prompt`/`responses`/`ranking` or `question`/`response_j`/`response_k`",
        ));
    };
    distinct(at, &p)?;
    Ok(p)
}

/// A chosen/rejected pair in any of its layouts.
fn pair(at: &At, rec: &Value) -> Result<Preference> {
    let chosen = rec
        .get("chosen")
        .ok_or_else(|| at.err("chosen", "missing"))?;
    let rejected = rec
        .get("rejected")
        .ok_or_else(|| at.err("rejected", "missing"))?;
    if let Some(list) = rec.get("conversations") {
        // LLaMA-Factory: the prompt as ShareGPT turns, each answer one message.
        let prompt = turns(at, list, "conversations", "from", "value", sharegpt_role)?;
        check_prompt(at, "conversations", &prompt)?;
        return Ok(Preference::ordered(
            prompt,
            vec![
                response_of(at, chosen, "chosen")?,
                response_of(at, rejected, "rejected")?,
            ],
        ));
    }
    if rec.get("prompt").is_some() && !is_whole_conversation(chosen) {
        return Ok(Preference::ordered(
            prompt_of(at, rec)?,
            vec![
                response_of(at, chosen, "chosen")?,
                response_of(at, rejected, "rejected")?,
            ],
        ));
    }
    // Whole conversations (TRL's implicit prompt, HH-RLHF, UltraFeedback's lists).
    implicit(at, chosen, rejected)
}

/// The responses of a preference must differ.
fn distinct(at: &At, p: &Preference) -> Result<()> {
    for (i, r) in p.responses.iter().enumerate() {
        if let Some(j) = p.responses[..i].iter().position(|o| o == r) {
            let field = if p.responses.len() == 2 {
                "rejected".to_string()
            } else {
                format!("responses[{i}]")
            };
            return Err(at.err(
                &field,
                format!(
                    "identical to {}: a preference needs different responses",
                    if p.responses.len() == 2 {
                        "chosen".to_string()
                    } else {
                        format!("responses[{j}]")
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// Chosen and rejected as whole conversations: the prompt is what they share.
fn implicit(at: &At, chosen: &Value, rejected: &Value) -> Result<Preference> {
    let c = conversation_of(at, chosen, "chosen")?;
    let r = conversation_of(at, rejected, "rejected")?;
    let shared = c.iter().zip(&r).take_while(|(a, b)| a == b).count();
    // Responses start at an assistant turn: back off to the last user turn of the shared part.
    let split = c[..shared]
        .iter()
        .rposition(|m| m.role == Role::User)
        .map(|i| i + 1)
        .ok_or_else(|| at.err("chosen", "chosen and rejected share no user turn to answer"))?;
    let prompt = c[..split].to_vec();
    check_prompt(at, "chosen", &prompt)?;
    let (cr, rr) = (c[split..].to_vec(), r[split..].to_vec());
    check_response(at, "chosen", &cr)?;
    check_response(at, "rejected", &rr)?;
    Ok(Preference::ordered(prompt, vec![cr, rr]))
}

fn ranking(at: &At, rec: &Value, responses: &Value) -> Result<Preference> {
    let prompt = prompt_of(at, rec)?;
    let list = responses
        .as_array()
        .ok_or_else(|| at.err("responses", "expected a list of responses"))?;
    if list.len() < 2 {
        return Err(at.err("responses", "a ranking needs at least two responses"));
    }
    let given: Vec<Vec<Message>> = list
        .iter()
        .enumerate()
        .map(|(i, v)| response_of(at, v, &format!("responses[{i}]")))
        .collect::<Result<_>>()?;
    let order = rec
        .get("ranking")
        .ok_or_else(|| at.err("ranking", "missing (response indices, best first)"))?
        .as_array()
        .ok_or_else(|| at.err("ranking", "expected a list of response indices, best first"))?;
    let mut seen = vec![false; given.len()];
    let (mut ranked, mut tiers) = (Vec::with_capacity(given.len()), vec![]);
    for (pos, v) in order.iter().enumerate() {
        let field = format!("ranking[{pos}]");
        // A list is a tie: its responses share one place.
        let group: Vec<&Value> = match v {
            Value::Array(tied) if tied.is_empty() => {
                return Err(at.err(&field, "an empty tie (list of equal responses)"));
            }
            Value::Array(tied) => tied.iter().collect(),
            one => vec![one],
        };
        for v in group {
            let i = v
                .as_u64()
                .map(|i| i as usize)
                .filter(|&i| i < given.len())
                .ok_or_else(|| {
                    at.err(
                        &field,
                        format!("expected an index below {}, got {v}", given.len()),
                    )
                })?;
            if seen[i] {
                return Err(at.err(&field, format!("index {i} is repeated")));
            }
            seen[i] = true;
            ranked.push(given[i].clone());
            tiers.push(pos);
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(at.err(
            "ranking",
            format!("response {missing} is missing from the ranking"),
        ));
    }
    if order.len() < 2 {
        return Err(at.err(
            "ranking",
            "every response is tied: a ranking needs at least two places",
        ));
    }
    Ok(Preference {
        prompt,
        responses: ranked,
        tiers,
    })
}

/// A prompt set for RL: records with a `prompt` (string or messages), `messages` whose last
/// turn is the user's, or preference pairs whose prompt is implicit (the turns chosen and
/// rejected share); anything else in the record is ignored.
pub fn read_prompts(paths: &[PathBuf]) -> Result<Vec<Vec<Message>>> {
    read_prompts_with(paths, &mut Rejects::strict())
}

/// As [`read_prompts`], malformed records going to `rejects`.
pub fn read_prompts_with(paths: &[PathBuf], rejects: &mut Rejects) -> Result<Vec<Vec<Message>>> {
    let mut all = Vec::new();
    for p in paths {
        let v = read_records(p, rejects, |at, rec| {
            if rec.get("prompt").is_some() {
                prompt_of(at, rec)
            } else if let Some(list) = rec.get("messages") {
                let m = turns(at, list, "messages", "role", "content", role_of)?;
                check_prompt(at, "messages", &m)?;
                Ok(m)
            } else if let Some(list) = rec.get("conversations") {
                let m = turns(at, list, "conversations", "from", "value", sharegpt_role)?;
                check_prompt(at, "conversations", &m)?;
                Ok(m)
            } else if let Some(q) = rec.get("question").and_then(Value::as_str) {
                let m = vec![Message::new(Role::User, q)];
                check_prompt(at, "question", &m)?;
                Ok(m)
            } else if let Some(chosen) = rec.get("chosen") {
                // A pair without a prompt: the chosen conversation up to its last user turn
                // (the answers themselves are not needed, so they are not checked).
                let c = conversation_of(at, chosen, "chosen")?;
                let end = c
                    .iter()
                    .rposition(|m| m.role == Role::User)
                    .map(|i| i + 1)
                    .ok_or_else(|| at.err("chosen", "no user turn to answer"))?;
                let prompt = c[..end].to_vec();
                check_prompt(at, "chosen", &prompt)?;
                Ok(prompt)
            } else {
                Err(at.err("prompt", "missing"))
            }
        })?;
        all.extend(v);
    }
    if all.is_empty() {
        return Err(DataError::Empty(
            "the prompt set is empty: name files with `prompt` records".into(),
        ));
    }
    Ok(all)
}
