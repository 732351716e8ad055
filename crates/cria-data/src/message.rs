//! A conversation's parts: roles, messages, and a rendered conversation's ids with its loss
//! mask. Every chat format (cria's own, a checkpoint's Jinja template) renders these.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
    pub fn token(self) -> &'static str {
        match self {
            Role::System => cria_core::tokenizer::SYSTEM,
            Role::User => cria_core::tokenizer::USER,
            Role::Assistant => cria_core::tokenizer::ASSISTANT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// Context attached to a user turn (Alpaca's `input`). The Alpaca template gives it its own
    /// section; other formats append it to the content after a blank line ([`Message::text`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Whether the loss trains on this turn when it is the assistant's (OpenAI's `weight` of
    /// 0 keeps a turn as context only).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub train: bool,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            input: None,
            train: true,
        }
    }

    /// The content with any attached input after a blank line.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match &self.input {
            Some(i) if !i.trim().is_empty() => format!("{}\n\n{i}", self.content).into(),
            _ => self.content.as_str().into(),
        }
    }
}

/// Token ids of a rendered conversation and, per id, whether the loss trains on it: the
/// content of assistant turns and the end-of-turn token that closes each (so the model learns
/// to stop), or every id when `train_on_inputs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub train: Vec<bool>,
}
