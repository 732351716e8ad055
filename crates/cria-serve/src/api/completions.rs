//! `POST /v1/completions`: plain continuation of one prompt or several (strings or token ids),
//! with `echo` (the prompt in front of the reply) and the legacy `logprobs` object — with
//! `echo`, the prompt's own tokens are scored too, which is how evaluation harnesses measure
//! a model through a server.

use super::chat::token_text;
use super::error::ApiError;
use super::follow::Out;
use super::params::{self, Obj};
use super::run::{self, Ask, Chunks, Total};
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
    let g = params::generation(&o)?;
    let echo = params::boolean(&o, "echo")?;
    let logprobs = params::integer(&o, "logprobs", 0, 5)?.map(|l| l as usize);
    if params::string(&o, "suffix")?.is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_param(
            "suffix",
            "`suffix` (fill in the middle) is not supported by this server",
        ));
    }
    let prompts = prompts(&o, &model)?;
    let hold = app.permit(caller)?;
    let ask = Ask {
        generation: &g,
        logprobs,
        prompt_logprobs: echo && logprobs.is_some(),
        tools: false,
        prompt_param: "prompt",
        start,
    };
    let texts: Vec<String> = prompts
        .iter()
        .map(|p| model.tok.decode(p, true).unwrap_or_default())
        .collect();
    let firsts: Vec<u32> = prompts.iter().map(|p| p[0]).collect();
    let running = run::start(&model, prompts.clone(), &ask, &app.metrics, hold)?;
    let head = run::Head::new("cmpl", &model);
    let echoed = |c: usize| echo.then(|| texts[c / g.n].clone());
    if g.stream {
        let chunks = Stream {
            head,
            include_usage: g.include_usage,
            echo: (0..prompts.len() * g.n).map(echoed).collect(),
            logprobs: logprobs.is_some(),
            first: firsts,
            n: g.n,
        };
        return Ok(run::sse(running, chunks));
    }
    let (choices, total) = run::gather(running).await;
    let choices: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let prefix = echoed(i).unwrap_or_default();
            let lp = logprobs.map(|_| {
                let mut all: Vec<Option<&Logprobs>> = vec![];
                if echo {
                    all.push(None);
                    all.extend(c.prompt_logprobs.iter().map(Some));
                }
                all.extend(c.logprobs.iter().map(Some));
                legacy_logprobs(&model, &all, echo.then_some(firsts[i / g.n]), 0)
            });
            json!({
                "index": i,
                "text": prefix + &c.content,
                "logprobs": lp,
                "finish_reason": c.finish,
            })
        })
        .collect();
    Ok(head.whole("text_completion", choices, &total))
}

/// The prompts: a string, a list of strings, a list of token ids, or a list of those.
fn prompts(o: &Obj, model: &ServedModel) -> Result<Vec<Vec<u32>>, ApiError> {
    let bad = || {
        ApiError::bad_param(
            "prompt",
            "`prompt` must be a string, a list of strings, a list of token ids or a list of \
             such lists",
        )
    };
    let vocab = model.tok.vocab_size() as u64;
    let ids = |v: &[Value]| -> Result<Vec<u32>, ApiError> {
        v.iter()
            .map(|x| match x.as_u64() {
                Some(t) if t < vocab => Ok(t as u32),
                Some(t) => Err(ApiError::bad_param(
                    "prompt",
                    format!("token id {t} is outside this model's vocabulary of {vocab}"),
                )),
                None => Err(bad()),
            })
            .collect()
    };
    let text = |s: &str| {
        model
            .tok
            .encode(s, true)
            .map_err(|e| ApiError::internal(e.to_string()))
    };
    let list: Vec<Vec<u32>> = match o.get("prompt") {
        None | Some(Value::Null) => {
            return Err(ApiError::bad_param("prompt", "`prompt` is required"));
        }
        Some(Value::String(s)) => vec![text(s)?],
        Some(Value::Array(a)) if a.is_empty() => return Err(bad()),
        Some(Value::Array(a)) if a[0].is_number() => vec![ids(a)?],
        Some(Value::Array(a)) => a
            .iter()
            .map(|p| match p {
                Value::String(s) => text(s),
                Value::Array(t) => ids(t),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad()),
    };
    if list.iter().any(Vec::is_empty) {
        return Err(ApiError::bad_param(
            "prompt",
            "a prompt encodes to no tokens",
        ));
    }
    Ok(list)
}

/// The legacy `logprobs` object: tokens, their log-probabilities (the first prompt token has
/// none), the likeliest alternatives as `{token: logprob}`, and where each token starts in
/// the text. `None` entries stand for `first` (the unscored first prompt token).
fn legacy_logprobs(
    model: &ServedModel,
    lps: &[Option<&Logprobs>],
    first: Option<u32>,
    offset: usize,
) -> Value {
    let mut tokens = vec![];
    let mut scores = vec![];
    let mut tops = vec![];
    let mut offsets = vec![];
    let mut at = offset;
    for l in lps {
        let (id, score, top) = match l {
            Some(l) => {
                let top: serde_json::Map<String, Value> = l
                    .top
                    .iter()
                    .map(|&(t, lp)| (token_text(model, t), Value::from(lp)))
                    .collect();
                (l.id, Value::from(l.logprob), Value::Object(top))
            }
            None => (first.unwrap_or(0), Value::Null, Value::Null),
        };
        let t = token_text(model, id);
        offsets.push(at);
        at += t.chars().count();
        tokens.push(t);
        scores.push(score);
        tops.push(top);
    }
    json!({"tokens": tokens, "token_logprobs": scores, "top_logprobs": tops, "text_offset": offsets})
}

struct Stream {
    head: run::Head,
    include_usage: bool,
    /// Per choice, the prompt text to send first (with `echo`).
    echo: Vec<Option<String>>,
    logprobs: bool,
    /// Each prompt's first token (unscored in an echo's log-probabilities).
    first: Vec<u32>,
    n: usize,
}

impl Stream {
    fn chunk(&self, index: usize, text: &str, logprobs: Value, finish: Value) -> Value {
        let choice =
            json!([{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}]);
        self.head.body("text_completion", choice)
    }
}

impl Chunks for Stream {
    fn opening(&mut self) -> Vec<Value> {
        // The echoed prompt goes with its log-probabilities when those are asked for.
        if self.logprobs {
            return vec![];
        }
        let echo = std::mem::take(&mut self.echo);
        echo.iter()
            .enumerate()
            .filter_map(|(i, e)| {
                e.as_ref()
                    .map(|t| self.chunk(i, t, Value::Null, Value::Null))
            })
            .collect()
    }

    fn chunks(&mut self, out: Out) -> Vec<Value> {
        let m = self.head.model.clone();
        match out {
            Out::Delta {
                index,
                text,
                logprobs,
            } => {
                let lp = self.logprobs.then(|| {
                    let all: Vec<Option<&Logprobs>> = logprobs.iter().map(Some).collect();
                    legacy_logprobs(&m, &all, None, 0)
                });
                vec![self.chunk(index, &text, lp.unwrap_or(Value::Null), Value::Null)]
            }
            Out::Prompt { index, logprobs } => {
                let text = self.echo.get(index).cloned().flatten().unwrap_or_default();
                let mut all: Vec<Option<&Logprobs>> = vec![None];
                all.extend(logprobs.iter().map(Some));
                let lp = legacy_logprobs(&m, &all, Some(self.first[index / self.n]), 0);
                vec![self.chunk(index, &text, lp, Value::Null)]
            }
            Out::End {
                index,
                finish,
                ending,
                ..
            } => vec![self.chunk(index, &ending.content, Value::Null, Value::from(finish))],
        }
    }

    fn closing(&mut self, total: Total) -> Vec<Value> {
        if !self.include_usage {
            return vec![];
        }
        let mut c = self.chunk(0, "", Value::Null, Value::Null);
        c["choices"] = json!([]);
        c["usage"] = total.json();
        vec![c]
    }
}
