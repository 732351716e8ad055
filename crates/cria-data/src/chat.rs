//! Conversations and cria's chat format.
//!
//! A conversation renders as
//! `<|begin_of_text|><|role|>\n{content}<|end_of_turn|>\n` per message, and a reply is prompted
//! with `<|assistant|>\n`. The same format is written as a Jinja `chat_template` into
//! `tokenizer_config.json` ([`CHAT_TEMPLATE`]), so transformers' `apply_chat_template` renders
//! the same tokens. Rendering here tokenises the text between special tokens piece by piece
//! (which is what a tokenizer does with added tokens) so the loss mask knows which ids belong
//! to assistant replies.

pub use crate::message::{Encoded, Message, Role};
use crate::template::ChatTemplate;
pub use crate::template::{ALPACA_TEMPLATE, CHAT_TEMPLATE};
use cria_core::tokenizer::{self, Tokenizer};
use serde::{Deserialize, Serialize};

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
        let reply = m.role == Role::Assistant && m.train;
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
    Template(Box<ChatTemplate>),
}

impl ChatFormat {
    /// The checkpoint's template when it has one other than cria's; otherwise cria's format,
    /// which needs cria's special tokens (an error names the missing one).
    pub fn for_checkpoint(dir: &std::path::Path, tok: &Tokenizer) -> cria_core::Result<ChatFormat> {
        match ChatTemplate::from_checkpoint(dir)? {
            Some(t) if !t.is_cria() => Ok(ChatFormat::Template(Box::new(t))),
            _ => Self::cria(dir, tok),
        }
    }

    /// cria's chat format for the checkpoint in `dir`. With cria's own tokenizer (its BOS is
    /// cria's) it renders piece by piece; on a base whose tokenizer grew cria's tokens it
    /// renders through [`CHAT_TEMPLATE`] with the base's own BOS/EOS strings, so the ids are
    /// exactly those transformers' `apply_chat_template` gives with that tokenizer.
    pub fn cria(dir: &std::path::Path, tok: &Tokenizer) -> cria_core::Result<ChatFormat> {
        let tokens = ChatTokens::of(tok).map_err(cria_core::CoreError::Invalid)?;
        let (bos, eos) = crate::template::special_strings(dir, tok)?;
        if bos.is_empty() || bos == tokenizer::BOS {
            return Ok(ChatFormat::Cria(tokens));
        }
        let source = std::path::Path::new("(cria's chat template)");
        ChatTemplate::new(CHAT_TEMPLATE, source, bos, eos)
            .map(|t| ChatFormat::Template(Box::new(t)))
    }

    /// The format `choice` names for the checkpoint in `dir`.
    pub fn choose(
        choice: FormatChoice,
        dir: &std::path::Path,
        tok: &Tokenizer,
    ) -> cria_core::Result<ChatFormat> {
        match choice {
            FormatChoice::Auto => Self::for_checkpoint(dir, tok),
            FormatChoice::Cria => Self::cria(dir, tok),
            FormatChoice::Alpaca => {
                let (bos, eos) = crate::template::special_strings(dir, tok)?;
                ChatTemplate::new(
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

    /// Whether the format holds a single exchange (one instruction and one response, as the
    /// Alpaca prompt): a conversation must be [`fold_history`]ed into it.
    pub fn single_exchange(&self) -> bool {
        matches!(self, ChatFormat::Template(t) if t.is(ALPACA_TEMPLATE))
    }

    /// Ids that end a reply: the end-of-turn token for cria's format, plus the tokenizer's and
    /// the model's end-of-sequence ids.
    pub fn stop_ids(&self, tok: &Tokenizer, model_eos: &[u32]) -> Vec<u32> {
        let mut ids: Vec<u32> = model_eos.to_vec();
        ids.extend(tok.eos_id);
        match self {
            ChatFormat::Cria(ct) => ids.push(ct.eot),
            ChatFormat::Template(t) if t.is_cria() => ids.extend(tok.token_to_id(tokenizer::EOT)),
            ChatFormat::Template(_) => {}
        }
        ids
    }
}

/// A conversation as the one exchange a single-exchange format holds (the Alpaca prompt): the
/// last user message stays the instruction, and the earlier turns become its input, written
/// `User: …` / `Assistant: …` one per paragraph (before the message's own input, if it has
/// one). System messages are kept as they are. A conversation with at most one user turn is
/// returned unchanged.
pub fn fold_history(messages: &[Message]) -> Vec<Message> {
    let Some(last) = messages.iter().rposition(|m| m.role == Role::User) else {
        return messages.to_vec();
    };
    if messages[..last].iter().all(|m| m.role == Role::System) {
        return messages.to_vec();
    }
    let mut history: Vec<String> = messages[..last]
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| {
            let who = if m.role == Role::User {
                "User"
            } else {
                "Assistant"
            };
            format!("{who}: {}", m.text())
        })
        .collect();
    let mut folded: Vec<Message> = messages[..last]
        .iter()
        .filter(|m| m.role == Role::System)
        .cloned()
        .collect();
    let mut question = messages[last].clone();
    history.extend(question.input.take());
    question.input = Some(history.join("\n\n"));
    folded.push(question);
    folded.extend(messages[last + 1..].iter().cloned());
    folded
}
