//! Chat templates shipped with checkpoints (`chat_template` in `tokenizer_config.json`, or
//! `chat_template.jinja`), rendered with minijinja in transformers' environment (see
//! [`crate::jinja`]) as `apply_chat_template` renders them, then tokenised without added
//! special tokens (special tokens in the text become their ids).
//!
//! The loss mask of an assistant turn: the text the template adds for the reply (the
//! rendering ending with the reply, past where it stops agreeing with the rendering ending
//! with the reply prompt), up to and including its end-of-turn token but not the whitespace
//! after it, found in the whole conversation's rendering and mapped to tokens by offsets. This
//! holds for templates that move the system prompt (Mistral) or drop earlier thinking (Qwen3),
//! where a token prefix would not.

use crate::jinja::to_value;
use crate::message::{Encoded, Message, Role};
use cria_core::error::{CoreError, Result};
use cria_core::tokenizer::Tokenizer;
use minijinja::{Environment, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The chat format as a Jinja template, for `tokenizer_config.json`.
pub const CHAT_TEMPLATE: &str = include_str!("chat_template.jinja");

/// The Stanford Alpaca prompt (with and without an input) as a Jinja template: a system turn
/// replaces the preamble, the reply ends with the end-of-sequence token, one exchange only.
pub const ALPACA_TEMPLATE: &str = include_str!("alpaca_template.jinja");

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    pub source: PathBuf,
}

/// What a template may read besides the messages: tool definitions (OpenAI's
/// `{"type": "function", "function": {...}}`), and variables such as `date_string` or
/// `enable_thinking`.
#[derive(Debug, Clone, Default)]
pub struct TemplateVars {
    pub tools: Option<Vec<serde_json::Value>>,
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn token_string(cfg: &serde_json::Value, key: &str) -> String {
    match cfg.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

/// The BOS and EOS strings templates see: `tokenizer_config.json`'s `bos_token`/`eos_token`,
/// else the tokenizer's own (cria's tokenizers have both).
pub fn special_strings(dir: &Path, tok: &Tokenizer) -> Result<(String, String)> {
    let cfg_path = dir.join("tokenizer_config.json");
    let cfg = if cfg_path.exists() {
        cria_core::fsutil::read_json(&cfg_path)?
    } else {
        serde_json::json!({})
    };
    let name = |key: &str, id: Option<u32>| {
        let s = token_string(&cfg, key);
        if s.is_empty() {
            id.and_then(|i| tok.inner.id_to_token(i))
                .unwrap_or_default()
        } else {
            s
        }
    };
    Ok((name("bos_token", tok.bos_id), name("eos_token", tok.eos_id)))
}

/// Messages as the `[{role, content}]` list templates iterate over. Templates that know the
/// Alpaca `input` field get it apart; the others see it appended to the content.
fn as_values(messages: &[Message], takes_input: bool) -> minijinja::Value {
    let role = |r: Role| match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    messages
        .iter()
        .map(|m| {
            let mut pairs = vec![("role", minijinja::Value::from(role(m.role)))];
            match (&m.input, takes_input) {
                (Some(input), true) => {
                    pairs.push(("content", minijinja::Value::from(m.content.clone())));
                    pairs.push(("input", minijinja::Value::from(input.clone())));
                }
                _ => pairs.push(("content", minijinja::Value::from(m.text().into_owned()))),
            }
            minijinja::Value::from_pairs(pairs)
        })
        .collect::<Vec<_>>()
        .into()
}

/// The Jinja text of the chat template a checkpoint ships, and the file it came from:
/// `chat_template.jinja`, else `tokenizer_config.json`'s `chat_template` (a string, or the
/// `default` entry of a list of named templates).
pub fn template_text(dir: &Path) -> Result<Option<(std::path::PathBuf, String)>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        let text = std::fs::read_to_string(&jinja).map_err(|e| CoreError::io(&jinja, e))?;
        return Ok(Some((jinja, text)));
    }
    let cfg_path = dir.join("tokenizer_config.json");
    if !cfg_path.exists() {
        return Ok(None);
    }
    let cfg = cria_core::fsutil::read_json(&cfg_path)?;
    Ok(match cfg.get("chat_template") {
        Some(serde_json::Value::String(s)) => Some((cfg_path, s.clone())),
        Some(serde_json::Value::Array(list)) => {
            let default = list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"));
            match default
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
            {
                Some(s) => Some((cfg_path, s.to_string())),
                None => {
                    return Err(CoreError::config(
                        &cfg_path,
                        "chat_template",
                        "a list without a `default` template",
                    ));
                }
            }
        }
        _ => None,
    })
}

impl ChatTemplate {
    /// The template a checkpoint ships, if any.
    pub fn from_checkpoint(dir: &Path) -> Result<Option<ChatTemplate>> {
        let Some((source, text)) = template_text(dir)? else {
            return Ok(None);
        };
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = if cfg_path.exists() {
            cria_core::fsutil::read_json(&cfg_path)?
        } else {
            serde_json::json!({})
        };
        Self::new(
            &text,
            &source,
            token_string(&cfg, "bos_token"),
            token_string(&cfg, "eos_token"),
        )
        .map(Some)
    }

    pub fn new(text: &str, source: &Path, bos: String, eos: String) -> Result<ChatTemplate> {
        let mut env = crate::jinja::environment();
        env.add_template_owned("chat", text.to_string())
            .map_err(|e| {
                CoreError::config(source, "chat_template", format!("does not parse: {e}"))
            })?;
        Ok(ChatTemplate {
            env,
            bos,
            eos,
            source: source.to_path_buf(),
        })
    }

    /// True when this is cria's own format (rendered by the faster piecewise path instead).
    pub fn is_cria(&self) -> bool {
        self.is(CHAT_TEMPLATE)
    }

    /// True when the template's source contains `text` (e.g. `<tool_call>`: it writes tool
    /// calls the Hermes way).
    pub fn mentions(&self, text: &str) -> bool {
        self.env
            .get_template("chat")
            .is_ok_and(|t| t.source().contains(text))
    }

    /// True when this template's source is `text` (up to trailing whitespace).
    pub fn is(&self, text: &str) -> bool {
        self.env
            .get_template("chat")
            .is_ok_and(|t| t.source().trim_end() == text.trim_end())
    }

    /// Renders `messages` as transformers' `apply_chat_template(tokenize=False)` does.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with(messages, add_generation_prompt, &TemplateVars::default())
    }

    /// As [`ChatTemplate::render`], with tools and other variables.
    pub fn render_with(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        vars: &TemplateVars,
    ) -> Result<String> {
        let values = as_values(messages, self.is(ALPACA_TEMPLATE));
        self.render_values(values, add_generation_prompt, vars)
    }

    /// Renders messages given as OpenAI's JSON objects, passed to the template as they are:
    /// `tool` messages, an assistant's `tool_calls`, and any other key a template reads. (A
    /// server renders requests this way.)
    pub fn render_json(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        vars: &TemplateVars,
    ) -> Result<String> {
        self.render_values(to_value(messages), add_generation_prompt, vars)
    }

    fn render_values(
        &self,
        messages: Value,
        add_generation_prompt: bool,
        vars: &TemplateVars,
    ) -> Result<String> {
        let tmpl = self.env.get_template("chat").expect("added in new()");
        let mut ctx: BTreeMap<String, Value> = vars
            .extra
            .iter()
            .map(|(k, v)| (k.clone(), to_value(v)))
            .collect();
        ctx.insert("messages".into(), messages);
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        ctx.insert("bos_token".into(), Value::from(self.bos.clone()));
        ctx.insert("eos_token".into(), Value::from(self.eos.clone()));
        if let Some(tools) = &vars.tools {
            ctx.insert("tools".into(), to_value(tools));
        }
        tmpl.render(ctx).map_err(|e| {
            CoreError::config(
                &self.source,
                "chat_template",
                format!("failed to render: {e}"),
            )
        })
    }

    /// Ids and loss mask of a conversation under this template.
    pub fn encode(
        &self,
        messages: &[Message],
        tok: &Tokenizer,
        add_generation_prompt: bool,
        train_on_inputs: bool,
    ) -> Result<Encoded> {
        let vars = TemplateVars::default();
        self.encode_with(messages, &vars, tok, add_generation_prompt, train_on_inputs)
    }

    /// As [`ChatTemplate::encode`], with tools and other variables.
    pub fn encode_with(
        &self,
        messages: &[Message],
        vars: &TemplateVars,
        tok: &Tokenizer,
        add_generation_prompt: bool,
        train_on_inputs: bool,
    ) -> Result<Encoded> {
        let text = self.render_with(messages, add_generation_prompt, vars)?;
        let (ids, offsets) = tok.encode_with_offsets(&text)?;
        let mut train = vec![train_on_inputs; ids.len()];
        if train_on_inputs {
            return Ok(Encoded { ids, train });
        }
        let mut cursor = 0;
        for (i, m) in messages.iter().enumerate() {
            if m.role != Role::Assistant {
                continue;
            }
            let reply = self.reply_text(messages, i, vars)?;
            let Some((start, end)) = locate(&text, &reply, &m.content, cursor) else {
                return Err(CoreError::config(
                    &self.source,
                    "chat_template",
                    format!(
                        "the reply of message {} cannot be found in the rendered conversation, \
                         so its loss mask is unknown",
                        i + 1
                    ),
                ));
            };
            cursor = end;
            if !m.train {
                continue;
            }
            for (t, (a, b)) in train.iter_mut().zip(&offsets) {
                if *a < end && *b > start {
                    *t = true;
                }
            }
        }
        Ok(Encoded { ids, train })
    }

    /// The text the template adds for assistant turn `i` (from where the rendering ending
    /// with it departs from the one ending with the reply prompt), without trailing whitespace.
    fn reply_text(&self, messages: &[Message], i: usize, vars: &TemplateVars) -> Result<String> {
        let prompt = self.render_with(&messages[..i], true, vars)?;
        let full = self.render_with(&messages[..=i], false, vars)?;
        let common = common_prefix(&prompt, &full);
        Ok(full[common..].trim_end().to_string())
    }
}

/// The byte span of `reply` in `text` from `from` on, without trailing whitespace. When the
/// whole conversation renders the reply differently (an earlier turn's thinking dropped, or an
/// end-of-sequence token the template writes only after the last message), the span grows
/// from the reply's content as far as `text` and `reply` agree on either side.
fn locate(text: &str, reply: &str, content: &str, from: usize) -> Option<(usize, usize)> {
    let rest = &text[from..];
    let (start, end) = match rest.find(reply).filter(|_| !reply.is_empty()) {
        Some(p) => (from + p, from + p + reply.len()),
        None => {
            let content = content.trim();
            let at = reply.find(content).filter(|_| !content.is_empty())?;
            let pos = from + rest.find(content)?;
            let before = common_suffix(&reply[..at], &text[from..pos]);
            let after = common_prefix(&reply[at..], &text[pos..]);
            (pos - before, pos + after)
        }
    };
    Some((start, start + text[start..end].trim_end().len()))
}

/// Bytes `a` and `b` share at their start (on a character boundary).
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .take_while(|((_, x), y)| x == y)
        .last()
        .map_or(0, |((i, x), _)| i + x.len_utf8())
}

/// Bytes `a` and `b` share at their end (on a character boundary).
fn common_suffix(a: &str, b: &str) -> usize {
    a.chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum()
}
