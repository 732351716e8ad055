//! Chat templates shipped with checkpoints (`chat_template` in `tokenizer_config.json`, or
//! `chat_template.jinja`), rendered with minijinja the way transformers' `apply_chat_template`
//! renders them, then tokenised without added special tokens. The loss mask of each assistant
//! turn is the span between the rendering that ends with the reply prompt and the rendering that
//! ends with the reply (how TRL masks completions for arbitrary templates).

use crate::message::{Encoded, Message, Role};
use cria_core::error::{CoreError, Result};
use cria_core::tokenizer::Tokenizer;
use minijinja::{Environment, Error, ErrorKind, context};
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

impl ChatTemplate {
    /// The template a checkpoint ships, if any.
    pub fn from_checkpoint(dir: &Path) -> Result<Option<ChatTemplate>> {
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = if cfg_path.exists() {
            cria_core::fsutil::read_json(&cfg_path)?
        } else {
            serde_json::json!({})
        };
        let jinja = dir.join("chat_template.jinja");
        let (source, text) = if jinja.exists() {
            let text = std::fs::read_to_string(&jinja).map_err(|e| CoreError::io(&jinja, e))?;
            (jinja, text)
        } else {
            match cfg.get("chat_template") {
                Some(serde_json::Value::String(s)) => (cfg_path.clone(), s.clone()),
                Some(serde_json::Value::Array(list)) => {
                    let default = list
                        .iter()
                        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"));
                    match default
                        .and_then(|t| t.get("template"))
                        .and_then(|t| t.as_str())
                    {
                        Some(s) => (cfg_path.clone(), s.to_string()),
                        None => {
                            return Err(CoreError::config(
                                &cfg_path,
                                "chat_template",
                                "a list without a `default` template",
                            ));
                        }
                    }
                }
                _ => return Ok(None),
            }
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
        let mut env = Environment::new();
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
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

    /// True when this template's source is `text` (up to trailing whitespace).
    pub fn is(&self, text: &str) -> bool {
        self.env
            .get_template("chat")
            .is_ok_and(|t| t.source().trim_end() == text.trim_end())
    }

    /// Renders `messages` as transformers' `apply_chat_template(tokenize=False)` does.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self.env.get_template("chat").expect("added in new()");
        tmpl.render(context! {
            messages => as_values(messages, self.is(ALPACA_TEMPLATE)),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.clone(),
            eos_token => self.eos.clone(),
        })
        .map_err(|e| {
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
        let ids = tok.encode(&self.render(messages, add_generation_prompt)?, false)?;
        let mut train = vec![train_on_inputs; ids.len()];
        if !train_on_inputs {
            for (i, m) in messages.iter().enumerate() {
                if m.role != Role::Assistant || !m.train {
                    continue;
                }
                let start = tok
                    .encode(&self.render(&messages[..i], true)?, false)?
                    .len();
                let end = tok
                    .encode(&self.render(&messages[..=i], false)?, false)?
                    .len();
                for t in train.iter_mut().take(end.min(ids.len())).skip(start) {
                    *t = true;
                }
            }
        }
        Ok(Encoded { ids, train })
    }
}
