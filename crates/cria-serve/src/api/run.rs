//! What chat and completions share: submitting prompts to a model's engine (each checked
//! against its context), following every choice, and answering either as one JSON body or
//! as a Server-Sent Events stream.

use super::error::ApiError;
use super::follow::{Choice, Out, follow};
use super::metrics::Metrics;
use super::params::Generation;
use crate::engine::{Request, Usage};
use crate::model::ServedModel;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// What a request asks of the engine besides its prompts.
pub struct Ask<'a> {
    pub generation: &'a Generation,
    /// Top log-probabilities per token (`Some(0)`: the chosen token's only).
    pub logprobs: Option<usize>,
    pub prompt_logprobs: bool,
    pub tools: bool,
    /// The field the prompt came in (`messages` or `prompt`), for errors.
    pub prompt_param: &'static str,
    pub start: Instant,
}

/// A request's choices running: their outputs arrive on `rx`, choice `p * n + j` being the
/// `j`th of prompt `p`.
pub struct Running {
    pub rx: UnboundedReceiver<Out>,
    pub prompt_tokens: usize,
    pub n: usize,
    /// Held until the response has been sent whole (or its client left): the caller's
    /// concurrency permit.
    hold: Arc<dyn Send + Sync>,
}

/// Submits every prompt (`n` choices each) and starts following them. `hold` lives until the
/// response has been sent.
pub fn start<H: Send + Sync + 'static>(
    model: &Arc<ServedModel>,
    prompts: Vec<Vec<u32>>,
    ask: &Ask,
    metrics: &Arc<Metrics>,
    hold: Arc<H>,
) -> Result<Running, ApiError> {
    let max_len = model.engine.max_len();
    let g = ask.generation;
    if g.n > model.engine.parallel() {
        return Err(ApiError::bad_param(
            "n",
            format!(
                "n = {}: this server runs at most {} choices at once (its --parallel)",
                g.n,
                model.engine.parallel()
            ),
        ));
    }
    // Every prompt is checked before any is submitted.
    let budgets = prompts
        .iter()
        .map(|p| reply_budget(max_len, p.len(), g.max_tokens, ask.prompt_param))
        .collect::<Result<Vec<_>, _>>()?;
    let mut receivers = vec![];
    let mut prompt_tokens = 0;
    for (prompt, max_new_tokens) in prompts.into_iter().zip(budgets) {
        let p = prompt.len();
        let req = Request {
            prompt,
            max_new_tokens,
            sampling: g.sampling.clone(),
            stop_ids: model.stop_ids.clone(),
            logprobs: ask.logprobs,
            prompt_logprobs: ask.prompt_logprobs,
            model: model.index,
        };
        receivers.push(model.engine.submit_n(req, g.n)?);
        prompt_tokens += p;
    }
    let (tx, rx) = unbounded_channel();
    for (p, rxs) in receivers.into_iter().enumerate() {
        for (j, erx) in rxs.into_iter().enumerate() {
            let choice = Choice {
                index: p * g.n + j,
                stops: g.stop.clone(),
                tools: ask.tools,
                start: ask.start,
            };
            let (model, tx, metrics) = (model.clone(), tx.clone(), metrics.clone());
            tokio::task::spawn_blocking(move || follow(model, erx, choice, tx, metrics));
        }
    }
    Ok(Running {
        rx,
        prompt_tokens,
        n: g.n,
        hold,
    })
}

/// The reply's token budget: what the request asks for, else the rest of the context; an
/// error when the prompt, or the prompt and the asked-for reply, do not fit.
fn reply_budget(
    max_len: usize,
    p: usize,
    asked: Option<usize>,
    prompt_param: &str,
) -> Result<usize, ApiError> {
    if p >= max_len {
        return Err(ApiError::bad_param(
            prompt_param,
            format!(
                "this model's context holds {max_len} tokens; the prompt has {p}, which leaves \
                 no room for a reply"
            ),
        )
        .with_code("context_length_exceeded"));
    }
    match asked {
        Some(m) if p + m > max_len => Err(ApiError::bad_param(
            "max_tokens",
            format!(
                "this model's context holds {max_len} tokens; you asked for {} ({p} in the \
                 prompt, {m} for the reply)",
                p + m
            ),
        )
        .with_code("context_length_exceeded")),
        Some(m) => Ok(m),
        None => Ok(max_len - p),
    }
}

/// Sums the usage of a request's choices: prompts once each, every choice's tokens.
#[derive(Debug, Default, Clone, Copy)]
pub struct Total {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

impl Total {
    pub fn add(&mut self, index: usize, n: usize, u: &Usage) {
        self.completion_tokens += u.completion_tokens;
        if index.is_multiple_of(n) {
            self.cached_tokens += u.cached_tokens;
        }
    }

    pub fn json(&self) -> Value {
        serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        })
    }
}

/// How a stream's chunks are written (chat and completions differ).
pub trait Chunks: Send + 'static {
    /// The chunks sent before any output (chat's role delta).
    fn opening(&mut self) -> Vec<Value>;
    fn chunks(&mut self, out: Out) -> Vec<Value>;
    /// The last chunks, once every choice ended (the usage chunk when asked).
    fn closing(&mut self, total: Total) -> Vec<Value>;
}

/// Streams a request's outputs as Server-Sent Events, ending with `data: [DONE]`.
pub fn sse<C: Chunks>(run: Running, mut chunks: C) -> Response {
    let total = Total {
        prompt_tokens: run.prompt_tokens,
        ..Default::default()
    };
    let first = chunks.opening();
    let n = run.n;
    let body = stream::unfold(
        Some((run.rx, chunks, total, run.hold)),
        move |st| async move {
            let (mut rx, mut chunks, mut total, hold) = st?;
            match rx.recv().await {
                Some(out) => {
                    if let Out::End { index, usage, .. } = &out {
                        total.add(*index, n, usage);
                    }
                    let values = chunks.chunks(out);
                    Some((values, Some((rx, chunks, total, hold))))
                }
                None => {
                    let mut values = chunks.closing(total);
                    values.push(Value::Null);
                    Some((values, None))
                }
            }
        },
    )
    .flat_map(stream::iter);
    let events = stream::iter(first)
        .chain(body)
        .map(|v| -> Result<Event, Infallible> {
            Ok(match v {
                Value::Null => Event::default().data("[DONE]"),
                v => Event::default().data(v.to_string()),
            })
        });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Every output of a request, gathered per choice (for a response that is not streamed).
pub async fn gather(mut run: Running) -> (Vec<Gathered>, Total) {
    let mut choices: Vec<Gathered> = vec![];
    let mut total = Total {
        prompt_tokens: run.prompt_tokens,
        ..Default::default()
    };
    while let Some(out) = run.rx.recv().await {
        let index = match &out {
            Out::Delta { index, .. } | Out::Prompt { index, .. } | Out::End { index, .. } => *index,
        };
        if choices.len() <= index {
            choices.resize_with(index + 1, Gathered::default);
        }
        let c = &mut choices[index];
        match out {
            Out::Delta { text, logprobs, .. } => {
                c.content.push_str(&text);
                c.logprobs.extend(logprobs);
            }
            Out::Prompt { logprobs, .. } => c.prompt_logprobs = logprobs,
            Out::End {
                finish,
                ending,
                usage,
                ..
            } => {
                total.add(index, run.n, &usage);
                c.content.push_str(&ending.content);
                c.tool_calls = ending.tool_calls;
                c.finish = finish;
            }
        }
    }
    (choices, total)
}

#[derive(Debug, Default)]
pub struct Gathered {
    pub content: String,
    pub logprobs: Vec<crate::engine::Logprobs>,
    pub prompt_logprobs: Vec<crate::engine::Logprobs>,
    pub tool_calls: Vec<super::text::ToolCall>,
    pub finish: &'static str,
}

/// What every response and chunk of one request starts with.
pub struct Head {
    pub id: String,
    pub created: u64,
    pub model: Arc<ServedModel>,
}

impl Head {
    /// A new response of `model`, its id starting with `prefix` (`chatcmpl`, `cmpl`).
    pub fn new(prefix: &str, model: &Arc<ServedModel>) -> Head {
        Head {
            id: response_id(prefix),
            created: crate::model::now(),
            model: model.clone(),
        }
    }

    /// A response body or stream chunk of kind `object` with these choices.
    pub fn body(&self, object: &str, choices: Value) -> Value {
        serde_json::json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model.id,
            "system_fingerprint": null,
            "choices": choices,
        })
    }

    /// A whole (not streamed) response: the choices and the usage.
    pub fn whole(&self, object: &str, choices: Vec<Value>, total: &Total) -> Response {
        let mut body = self.body(object, Value::from(choices));
        body["usage"] = total.json();
        axum::Json(body).into_response()
    }
}

/// A response id: a prefix and 24 hex digits, unique per server run.
pub fn response_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = crate::model::now();
    format!("{prefix}-{t:012x}{n:012x}")
}
