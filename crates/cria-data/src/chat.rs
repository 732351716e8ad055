//! Conversations and cria's chat format.
//!
//! A conversation renders as
//! `<|begin_of_text|><|role|>\n{content}<|end_of_turn|>\n` per message, and a reply is prompted
//! with `<|assistant|>\n`. The same format is written as a Jinja `chat_template` into
//! `tokenizer_config.json` ([`CHAT_TEMPLATE`]), so transformers' `apply_chat_template` renders
//! the same tokens. Rendering here tokenises the text between special tokens piece by piece
//! (which is what a tokenizer does with added tokens) so the loss mask knows which ids belong
//! to assistant replies.

use cria_core::tokenizer::{self, Tokenizer};
use serde::{Deserialize, Serialize};

/// The chat format as a Jinja template, for `tokenizer_config.json`.
pub const CHAT_TEMPLATE: &str = include_str!("chat_template.jinja");

/// The Stanford Alpaca prompt (with and without an input) as a Jinja template: a system turn
/// replaces the preamble, the reply ends with the end-of-sequence token, one exchange only.
pub const ALPACA_TEMPLATE: &str = include_str!("alpaca_template.jinja");

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
            Role::System => tokenizer::SYSTEM,
            Role::User => tokenizer::USER,
            Role::Assistant => tokenizer::ASSISTANT,
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
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            input: None,
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

/// Ids of the special tokens the format uses, looked up once.
#[derive(Debug, Clone, Copy)]
pub struct ChatTokens {
    pub bos: u32,
    pub eot: u32,
    pub system: u32,
    pub user: u32,
    pub assistant: u32,
}

impl ChatTokens {
    /// Fails naming the first missing token when the tokenizer lacks cria's chat tokens.
    pub fn of(tok: &Tokenizer) -> Result<ChatTokens, String> {
        let id = |t: &str| {
            tok.token_to_id(t).ok_or_else(|| {
                format!(
                    "{}: the tokenizer has no `{t}` token, which cria's chat format needs",
                    tok.path.display()
                )
            })
        };
        Ok(ChatTokens {
            bos: id(tokenizer::BOS)?,
            eot: id(tokenizer::EOT)?,
            system: id(tokenizer::SYSTEM)?,
            user: id(tokenizer::USER)?,
            assistant: id(tokenizer::ASSISTANT)?,
        })
    }
    fn role(&self, r: Role) -> u32 {
        match r {
            Role::System => self.system,
            Role::User => self.user,
            Role::Assistant => self.assistant,
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

/// Renders `messages` (optionally followed by the reply prompt) into ids and the loss mask.
pub fn encode(
    messages: &[Message],
    tok: &Tokenizer,
    ct: &ChatTokens,
    add_generation_prompt: bool,
    train_on_inputs: bool,
) -> cria_core::Result<Encoded> {
    let newline = tok.encode("\n", false)?;
    let mut e = Encoded {
        ids: vec![ct.bos],
        train: vec![train_on_inputs],
    };
    let push = |e: &mut Encoded, ids: &[u32], train: bool| {
        e.ids.extend_from_slice(ids);
        e.train.extend(std::iter::repeat_n(train, ids.len()));
    };
    for m in messages {
        let reply = m.role == Role::Assistant;
        push(&mut e, &[ct.role(m.role)], train_on_inputs);
        let piece = tok.encode(&format!("\n{}", m.text()), false)?;
        // The leading newline belongs to the prompt `<|assistant|>\n`; the reply starts after.
        let lead = if piece.starts_with(&newline) {
            newline.len()
        } else {
            0
        };
        push(&mut e, &piece[..lead], train_on_inputs);
        push(&mut e, &piece[lead..], reply || train_on_inputs);
        push(&mut e, &[ct.eot], reply || train_on_inputs);
        push(&mut e, &newline, train_on_inputs);
    }
    if add_generation_prompt {
        push(&mut e, &[ct.assistant], false);
        push(&mut e, &newline, false);
    }
    Ok(e)
}

/// Which format `cria sft` trains in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatChoice {
    /// The checkpoint's own `chat_template` if it ships one, else cria's format.
    #[default]
    Auto,
    /// cria's format (needs cria's special tokens).
    Cria,
    /// The Alpaca prompt ([`ALPACA_TEMPLATE`]), for Alpaca-style data and base models.
    Alpaca,
}

/// How conversations become tokens for a checkpoint: cria's own format, or a Jinja
/// `chat_template` (the checkpoint's own, e.g. Qwen2's ChatML, or the Alpaca prompt).
pub enum ChatFormat {
    Cria(ChatTokens),
    Template(Box<crate::template::ChatTemplate>),
}

impl ChatFormat {
    /// The checkpoint's template when it has one other than cria's; otherwise cria's format,
    /// which needs cria's special tokens (an error names the missing one).
    pub fn for_checkpoint(dir: &std::path::Path, tok: &Tokenizer) -> cria_core::Result<ChatFormat> {
        match crate::template::ChatTemplate::from_checkpoint(dir)? {
            Some(t) if !t.is_cria() => Ok(ChatFormat::Template(Box::new(t))),
            _ => ChatTokens::of(tok)
                .map(ChatFormat::Cria)
                .map_err(cria_core::CoreError::Invalid),
        }
    }

    /// The format `choice` names for the checkpoint in `dir`.
    pub fn choose(
        choice: FormatChoice,
        dir: &std::path::Path,
        tok: &Tokenizer,
    ) -> cria_core::Result<ChatFormat> {
        match choice {
            FormatChoice::Auto => Self::for_checkpoint(dir, tok),
            FormatChoice::Cria => ChatTokens::of(tok)
                .map(ChatFormat::Cria)
                .map_err(cria_core::CoreError::Invalid),
            FormatChoice::Alpaca => {
                let (bos, eos) = crate::template::special_strings(dir, tok)?;
                crate::template::ChatTemplate::new(
                    ALPACA_TEMPLATE,
                    std::path::Path::new("(built-in Alpaca template)"),
                    bos,
                    eos,
                )
                .map(|t| ChatFormat::Template(Box::new(t)))
            }
        }
    }

    pub fn encode(
        &self,
        messages: &[Message],
        tok: &Tokenizer,
        add_generation_prompt: bool,
        train_on_inputs: bool,
    ) -> cria_core::Result<Encoded> {
        match self {
            ChatFormat::Cria(ct) => {
                encode(messages, tok, ct, add_generation_prompt, train_on_inputs)
            }
            ChatFormat::Template(t) => {
                t.encode(messages, tok, add_generation_prompt, train_on_inputs)
            }
        }
    }

    /// Ids that end a reply: the end-of-turn token for cria's format, plus the tokenizer's and
    /// the model's end-of-sequence ids.
    pub fn stop_ids(&self, tok: &Tokenizer, model_eos: &[u32]) -> Vec<u32> {
        let mut ids: Vec<u32> = model_eos.to_vec();
        ids.extend(tok.eos_id);
        if let ChatFormat::Cria(ct) = self {
            ids.push(ct.eot);
        }
        ids
    }
}
