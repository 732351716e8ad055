//! A model as the server offers it: its engine, its tokenizer, and how a conversation becomes
//! its prompt (the checkpoint's chat template, or cria's format).

use crate::api::error::ApiError;
use crate::engine::Engine;
use crate::runner::Runner;
use cria_core::tokenizer::Tokenizer;
use cria_data::chat::{ChatFormat, Message, Role, fold_history};
use cria_data::template::TemplateVars;
use serde_json::Value;
use std::sync::Arc;

pub struct ServedModel {
    /// The name requests give as `model`.
    pub id: String,
    /// The engine that runs it, shared with the other models on the same base weights.
    pub engine: Arc<Engine>,
    /// Which of the engine's models it is.
    pub index: usize,
    pub tok: Tokenizer,
    pub fmt: ChatFormat,
    /// Ids that end a reply (end of turn, end of sequence).
    pub stop_ids: Vec<u32>,
    /// Unix time the model was loaded (`created` in `/v1/models`).
    pub created: u64,
    /// Where it was loaded from (shown in `/v1/models` as `root`).
    pub root: String,
    /// The model it adapts, when it is an adapter on another served model's weights (shown
    /// in `/v1/models` as `parent`).
    pub parent: Option<String>,
}

/// A model to serve on an engine shared with others ([`ServedModel::start_shared`]): a
/// checkpoint in burn or a GGUF file ([`Runner`]).
pub struct Member<M> {
    /// The name requests give as `model`.
    pub id: String,
    pub model: M,
    pub tok: Tokenizer,
    pub fmt: ChatFormat,
    /// Where it was loaded from.
    pub root: String,
    /// The served name of the model whose weights it adapts.
    pub parent: Option<String>,
}

impl ServedModel {
    /// Starts an engine for `model`, served as `id`, prompted with `fmt`.
    pub fn start<M: Runner>(
        id: String,
        model: M,
        tok: Tokenizer,
        fmt: ChatFormat,
        root: String,
        cfg: crate::engine::EngineConfig,
    ) -> Self {
        let member = Member {
            id,
            model,
            tok,
            fmt,
            root,
            parent: None,
        };
        Self::start_shared(vec![member], cfg)
            .pop()
            .expect("one model")
    }

    /// Starts one engine for models that share their weights — a base and adapters on
    /// clones of it ([`Engine::start_shared`]) — and serves each under its own name, template
    /// and stop ids. They share the engine's slots.
    pub fn start_shared<M: Runner>(
        members: Vec<Member<M>>,
        cfg: crate::engine::EngineConfig,
    ) -> Vec<Self> {
        let mut models = Vec::with_capacity(members.len());
        let mut rest = Vec::with_capacity(members.len());
        for m in members {
            let stop_ids = m.fmt.stop_ids(&m.tok, &m.model.eos_ids(&m.tok));
            models.push(m.model);
            rest.push((m.id, m.tok, m.fmt, m.root, m.parent, stop_ids));
        }
        let engine = Arc::new(Engine::start_shared(models, cfg));
        let created = now();
        rest.into_iter()
            .enumerate()
            .map(
                |(index, (id, tok, fmt, root, parent, stop_ids))| ServedModel {
                    id,
                    engine: engine.clone(),
                    index,
                    tok,
                    fmt,
                    stop_ids,
                    created,
                    root,
                    parent,
                },
            )
            .collect()
    }

    /// This model's counters in its engine.
    pub fn counts(&self) -> &crate::engine::Counts {
        &self.engine.stats().models[self.index]
    }

    /// Whether the model's template writes tool calls as Hermes' `<tool_call>{…}</tool_call>`
    /// (Qwen2.5/3, Hermes), which the server parses into `tool_calls`.
    pub fn writes_tool_calls(&self) -> bool {
        matches!(&self.fmt, ChatFormat::Template(t) if !t.is_cria() && t.mentions("<tool_call>"))
    }

    /// Whether tool definitions reach the model at all: its own template renders `tools`.
    fn renders_tools(&self) -> bool {
        matches!(&self.fmt, ChatFormat::Template(t) if !t.is_cria() && t.mentions("tools"))
    }

    /// The prompt ids of a conversation (messages already checked by the request parser), with
    /// the reply prompt at its end.
    pub fn chat_prompt(
        &self,
        messages: &[Value],
        tools: Option<Vec<Value>>,
    ) -> Result<Vec<u32>, ApiError> {
        if tools.is_some() && !self.renders_tools() {
            return Err(ApiError::bad_param(
                "tools",
                format!(
                    "model `{}` has no chat template that renders tools (a checkpoint such as \
                     Qwen2.5's does); call it without `tools`",
                    self.id
                ),
            ));
        }
        match &self.fmt {
            ChatFormat::Template(t) if !t.is_cria() && !self.fmt.single_exchange() => {
                let vars = TemplateVars {
                    tools,
                    ..Default::default()
                };
                let text = t
                    .render_json(messages, true, &vars)
                    .map_err(|e| ApiError::bad_param("messages", e.to_string()))?;
                self.tok
                    .encode(&text, false)
                    .map_err(|e| ApiError::internal(e.to_string()))
            }
            _ => {
                let mut plain = as_messages(messages)?;
                if self.fmt.single_exchange() {
                    plain = fold_history(&plain);
                }
                self.fmt
                    .encode(&plain, &self.tok, true, false)
                    .map(|e| e.ids)
                    .map_err(|e| ApiError::bad_param("messages", e.to_string()))
            }
        }
    }
}

/// Conversations for formats that know system, user and assistant turns only (cria's own,
/// the Alpaca prompt).
fn as_messages(messages: &[Value]) -> Result<Vec<Message>, ApiError> {
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m["role"].as_str().unwrap_or_default();
            let role = match role {
                "developer" => Some(Role::System),
                r => Role::parse(r),
            }
            .ok_or_else(|| {
                ApiError::bad_param(
                    format!("messages[{i}].role"),
                    format!(
                        "role `{role}`: this model's chat format has system, user and assistant \
                         turns only (tool results need a checkpoint whose template renders them)"
                    ),
                )
            })?;
            Ok(Message::new(
                role,
                m["content"].as_str().unwrap_or_default(),
            ))
        })
        .collect()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
