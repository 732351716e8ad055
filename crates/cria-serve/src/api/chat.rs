//! `POST /v1/chat/completions`: a conversation rendered with the model's chat template, one or
//! more replies, streamed or whole, with log-probabilities and tool calls as OpenAI writes
//! them.

use super::error::ApiError;
use super::follow::Out;
use super::params::{self, Obj};
use super::run::{self, Ask, Chunks, Total};
use super::text::ToolCall;
use super::{App, Caller};
use crate::engine::Logprobs;
use crate::model::ServedModel;
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

pub async fn handle(app: &Arc<App>, caller: &Caller, body: &[u8]) -> Result<Response, ApiError> {
    let start = Instant::now();
    let o = params::object(body)?;
    let model = app.model(params::string(&o, "model")?)?;
    let messages = messages(&o)?;
    let g = params::generation(&o)?;
    params::check_response_format(&o)?;
    let top = params::integer(&o, "top_logprobs", 0, 20)?;
    let logprobs = match (params::boolean(&o, "logprobs")?, top) {
        (true, t) => Some(t.unwrap_or(0) as usize),
        (false, Some(t)) if t > 0 => {
            return Err(ApiError::bad_param(
                "top_logprobs",
                "`top_logprobs` needs `logprobs` set to true",
            ));
        }
        (false, _) => None,
    };
    let tools = tools(&o)?;
    let parse_tools = tools.is_some() && model.writes_tool_calls();
    let prompt = {
        let model = model.clone();
        tokio::task::spawn_blocking(move || model.chat_prompt(&messages, tools))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??
    };
    if app.cfg.log_requests {
        tracing::info!(model = %model.id, prompt = %model.tok.decode(&prompt, false).unwrap_or_default(), "chat request");
    }
    let hold = app.permit(caller)?;
    let ask = Ask {
        generation: &g,
        logprobs,
        prompt_logprobs: false,
        tools: parse_tools,
        prompt_param: "messages",
        start,
    };
    let running = run::start(&model, vec![prompt], &ask, &app.metrics, hold)?;
    let head = run::Head::new("chatcmpl", &model);
    if g.stream {
        let chunks = Stream {
            head,
            n: g.n,
            include_usage: g.include_usage,
            start,
            log: app.cfg.log_requests.then(Vec::new),
        };
        return Ok(run::sse(running, chunks));
    }
    let (choices, total) = run::gather(running).await;
    let log = app.cfg.log_requests;
    let choices: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(i, c)| choice_json(&head, i, c, logprobs.is_some(), log))
        .collect();
    log_done(&model, &total, start);
    Ok(head.whole("chat.completion", choices, &total))
}

/// A stream chunk with these choices.
fn chunk(head: &run::Head, choices: Value) -> Value {
    head.body("chat.completion.chunk", choices)
}

/// One whole choice of a response that is not streamed.
fn choice_json(head: &run::Head, i: usize, c: run::Gathered, logprobs: bool, log: bool) -> Value {
    let model = &head.model;
    if log {
        tracing::info!(model = %model.id, choice = i, reply = %c.content, "chat reply");
    }
    let calls: Vec<Value> = c
        .tool_calls
        .iter()
        .enumerate()
        .map(|(k, t)| tool_call(&head.id, i, k, t))
        .collect();
    let content = if calls.is_empty() || !c.content.trim().is_empty() {
        Value::from(c.content)
    } else {
        Value::Null
    };
    let mut message = json!({"role": "assistant", "content": content, "refusal": null});
    if !calls.is_empty() {
        message["tool_calls"] = Value::from(calls);
    }
    json!({
        "index": i,
        "message": message,
        "logprobs": logprobs.then(|| logprobs_json(model, &c.logprobs)),
        "finish_reason": c.finish,
    })
}

fn log_done(model: &ServedModel, total: &Total, start: Instant) {
    tracing::info!(
        model = %model.id,
        prompt_tokens = total.prompt_tokens,
        completion_tokens = total.completion_tokens,
        ms = start.elapsed().as_millis() as u64,
        "chat completion"
    );
}

/// The conversation, checked and as templates read it: text content (content parts joined),
/// `developer` as `system`, tool-call arguments as objects.
fn messages(o: &Obj) -> Result<Vec<Value>, ApiError> {
    let list = match o.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => {
            return Err(ApiError::bad_param("messages", "`messages` is empty"));
        }
        Some(_) => {
            return Err(ApiError::bad_param("messages", "`messages` must be a list"));
        }
        None => {
            return Err(ApiError::bad_param(
                "messages",
                "`messages` is required: the conversation so far",
            ));
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect()
}

fn message(i: usize, m: &Value) -> Result<Value, ApiError> {
    let at = |field: &str| format!("messages[{i}].{field}");
    let Value::Object(m) = m else {
        return Err(ApiError::bad_param(
            format!("messages[{i}]"),
            "each message must be an object",
        ));
    };
    let mut m = m.clone();
    let role = match m.get("role").and_then(Value::as_str) {
        Some("developer") => "system".to_string(),
        Some(r @ ("system" | "user" | "assistant" | "tool")) => r.to_string(),
        Some(r) => {
            return Err(ApiError::bad_param(
                at("role"),
                format!("role `{r}` is not one of system, developer, user, assistant, tool"),
            ));
        }
        None => {
            return Err(ApiError::bad_param(
                at("role"),
                "every message needs a `role`",
            ));
        }
    };
    m.insert("role".into(), Value::from(role.as_str()));
    let has_calls = m.get("tool_calls").is_some_and(|c| !c.is_null());
    let content = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(
                |(k, p)| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                    (t, _) => Err(ApiError::bad_param(
                        format!("messages[{i}].content[{k}]"),
                        format!(
                            "content part of type `{}`: this server takes text parts only",
                            t.unwrap_or("(none)")
                        ),
                    )),
                },
            )
            .collect::<Result<Vec<_>, _>>()?
            .join("\n"),
        None | Some(Value::Null) if role == "assistant" && has_calls => String::new(),
        _ => {
            return Err(ApiError::bad_param(
                at("content"),
                "`content` must be a string or a list of text parts",
            ));
        }
    };
    m.insert("content".into(), Value::from(content));
    if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
        for c in calls {
            // Templates write the arguments as an object (transformers and vLLM parse them).
            if let Some(f) = c.get_mut("function")
                && let Some(Value::String(a)) = f.get("arguments")
                && let Ok(v) = serde_json::from_str::<Value>(a)
            {
                f["arguments"] = v;
            }
        }
    }
    Ok(Value::Object(m))
}

/// The tool definitions to render, unless `tool_choice` is `none`.
fn tools(o: &Obj) -> Result<Option<Vec<Value>>, ApiError> {
    let tools = match o.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(t)) if t.is_empty() => return Ok(None),
        Some(Value::Array(t)) => t.clone(),
        Some(_) => return Err(ApiError::bad_param("tools", "`tools` must be a list")),
    };
    for (i, t) in tools.iter().enumerate() {
        let named = t
            .get("function")
            .and_then(|f| f.get("name"))
            .is_some_and(Value::is_string);
        if !named {
            return Err(ApiError::bad_param(
                format!("tools[{i}]"),
                "each tool must be {\"type\": \"function\", \"function\": {\"name\": …}}",
            ));
        }
    }
    match o.get("tool_choice") {
        Some(Value::String(s)) if s == "none" => Ok(None),
        None | Some(Value::Null) => Ok(Some(tools)),
        Some(Value::String(s)) if s == "auto" || s == "required" => Ok(Some(tools)),
        Some(Value::Object(_)) => Ok(Some(tools)),
        Some(_) => Err(ApiError::bad_param(
            "tool_choice",
            "`tool_choice` must be none, auto, required or {\"type\": \"function\", …}",
        )),
    }
}

pub fn tool_call(id: &str, choice: usize, k: usize, t: &ToolCall) -> Value {
    json!({
        "id": format!("call_{}_{choice}_{k}", id.trim_start_matches("chatcmpl-")),
        "type": "function",
        "function": {"name": t.name, "arguments": t.arguments},
    })
}

/// A token as text (its bytes, a character it splits shown as U+FFFD).
pub fn token_text(model: &ServedModel, id: u32) -> String {
    String::from_utf8_lossy(&model.tok.token_bytes(id)).into_owned()
}

/// Chat's `logprobs` object.
pub fn logprobs_json(model: &ServedModel, lps: &[Logprobs]) -> Value {
    let entry = |id: u32, lp: f32| {
        let b = model.tok.token_bytes(id);
        json!({"token": String::from_utf8_lossy(&b), "logprob": lp, "bytes": b})
    };
    let content: Vec<Value> = lps
        .iter()
        .map(|l| {
            let mut e = entry(l.id, l.logprob);
            e["top_logprobs"] = l.top.iter().map(|&(t, lp)| entry(t, lp)).collect();
            e
        })
        .collect();
    json!({"content": content, "refusal": null})
}

struct Stream {
    head: run::Head,
    n: usize,
    include_usage: bool,
    start: Instant,
    /// Each reply's text, kept for the log when requests are logged.
    log: Option<Vec<String>>,
}

impl Chunks for Stream {
    fn opening(&mut self) -> Vec<Value> {
        (0..self.n)
            .map(|i| {
                chunk(
                    &self.head,
                    json!([{
                        "index": i,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": null,
                        "finish_reason": null,
                    }]),
                )
            })
            .collect()
    }

    fn chunks(&mut self, out: Out) -> Vec<Value> {
        let m = &self.head.model;
        match out {
            Out::Delta {
                index,
                text,
                logprobs,
            } => {
                let lp = (!logprobs.is_empty()).then(|| logprobs_json(m, &logprobs));
                if let Some(log) = &mut self.log {
                    log.resize(log.len().max(index + 1), String::new());
                    log[index].push_str(&text);
                }
                vec![chunk(
                    &self.head,
                    json!([{
                        "index": index,
                        "delta": {"content": text},
                        "logprobs": lp,
                        "finish_reason": null,
                    }]),
                )]
            }
            Out::Prompt { .. } => vec![],
            Out::End {
                index,
                finish,
                ending,
                ..
            } => {
                let mut out = vec![];
                if !ending.content.is_empty() {
                    out.push(chunk(
                        &self.head,
                        json!([{
                            "index": index,
                            "delta": {"content": ending.content},
                            "logprobs": null,
                            "finish_reason": null,
                        }]),
                    ));
                }
                if !ending.tool_calls.is_empty() {
                    let calls: Vec<Value> = ending
                        .tool_calls
                        .iter()
                        .enumerate()
                        .map(|(k, t)| {
                            let mut c = tool_call(&self.head.id, index, k, t);
                            c["index"] = Value::from(k);
                            c
                        })
                        .collect();
                    out.push(chunk(
                        &self.head,
                        json!([{
                            "index": index,
                            "delta": {"tool_calls": calls},
                            "logprobs": null,
                            "finish_reason": null,
                        }]),
                    ));
                }
                out.push(chunk(
                    &self.head,
                    json!([{
                        "index": index,
                        "delta": {},
                        "logprobs": null,
                        "finish_reason": finish,
                    }]),
                ));
                out
            }
        }
    }

    fn closing(&mut self, total: Total) -> Vec<Value> {
        for (i, reply) in self.log.iter().flatten().enumerate() {
            tracing::info!(model = %self.head.model.id, choice = i, reply = %reply, "chat reply");
        }
        log_done(&self.head.model, &total, self.start);
        if !self.include_usage {
            return vec![];
        }
        let mut c = chunk(&self.head, json!([]));
        c["usage"] = total.json();
        vec![c]
    }
}
