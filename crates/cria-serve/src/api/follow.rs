//! Following one choice of a request: the engine's token ids become text (decoded as they
//! come, stop strings and tool calls handled by [`Reply`]) sent to the request's handler. It
//! runs on a blocking thread per choice; when the handler goes away (the client
//! disconnected) or a stop string matched, it returns and drops the engine's receiver, which
//! frees the slot at the engine's next step.

use super::metrics::Metrics;
use super::text::{Ending, Reply};
use crate::engine::{Event, Logprobs, Usage};
use crate::model::ServedModel;
use cria_core::generate::Finish;
use cria_core::tokenizer::StreamDecoder;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// What a choice sends its handler.
#[derive(Debug)]
pub enum Out {
    /// New content, and the log-probabilities of the tokens sampled since the last delta.
    Delta {
        index: usize,
        text: String,
        logprobs: Vec<Logprobs>,
    },
    /// The prompt's log-probabilities (completions with `echo`).
    Prompt {
        index: usize,
        logprobs: Vec<Logprobs>,
    },
    End {
        index: usize,
        finish: &'static str,
        ending: Ending,
        usage: Usage,
    },
}

/// One choice's settings.
pub struct Choice {
    pub index: usize,
    pub stops: Vec<String>,
    /// Parse Hermes-style tool calls.
    pub tools: bool,
    pub prompt_tokens: usize,
    /// When the request arrived (time to first token).
    pub start: Instant,
}

/// Runs until the choice ends or its handler is gone. `hold` is kept alive as long as any
/// choice of the request runs (a per-key concurrency permit).
pub fn follow<H: Send + Sync>(
    model: Arc<ServedModel>,
    rx: Receiver<Event>,
    c: Choice,
    out: UnboundedSender<Out>,
    metrics: Arc<Metrics>,
    _hold: Arc<H>,
) {
    let mut dec = StreamDecoder::new(&model.tok);
    let mut reply = Reply::new(c.stops, c.tools);
    let mut lps = vec![];
    let mut last: Option<Instant> = None;
    let mut usage = Usage {
        prompt_tokens: c.prompt_tokens,
        ..Default::default()
    };
    let end = |reply: &mut Reply, finish: &'static str, usage: Usage| {
        let ending = reply.finish();
        let finish = if ending.tool_calls.is_empty() {
            finish
        } else {
            "tool_calls"
        };
        Out::End {
            index: c.index,
            finish,
            ending,
            usage,
        }
    };
    for ev in rx {
        match ev {
            Event::Prompt(logprobs) => {
                if out
                    .send(Out::Prompt {
                        index: c.index,
                        logprobs,
                    })
                    .is_err()
                {
                    return;
                }
            }
            Event::Token { id, logprobs } => {
                let now = Instant::now();
                match last {
                    None => metrics.ttft.observe(now - c.start),
                    Some(t) => metrics.itl.observe(now - t),
                }
                last = Some(now);
                usage.completion_tokens += 1;
                if model.stop_ids.contains(&id) {
                    continue;
                }
                lps.extend(logprobs);
                let piece = dec.push(id).unwrap_or_default();
                let text = reply.push(&piece);
                if reply.stopped() {
                    let _ = out.send(Out::Delta {
                        index: c.index,
                        text,
                        logprobs: std::mem::take(&mut lps),
                    });
                    let _ = out.send(end(&mut reply, "stop", usage));
                    return;
                }
                if (!text.is_empty() || !lps.is_empty())
                    && out
                        .send(Out::Delta {
                            index: c.index,
                            text,
                            logprobs: std::mem::take(&mut lps),
                        })
                        .is_err()
                {
                    return;
                }
            }
            Event::Done { finish, usage } => {
                // Bytes held back as the start of a character that never came: sent as they
                // decode (U+FFFD), as the whole reply would show them.
                let tail = dec
                    .text()
                    .ok()
                    .and_then(|t| t.get(dec.printed()..).map(str::to_string))
                    .unwrap_or_default();
                let text = reply.push(&tail);
                if !text.is_empty() || !lps.is_empty() {
                    let _ = out.send(Out::Delta {
                        index: c.index,
                        text,
                        logprobs: std::mem::take(&mut lps),
                    });
                }
                let finish = match finish {
                    Finish::Length => "length",
                    Finish::Stop | Finish::Callback => "stop",
                };
                let _ = out.send(end(&mut reply, finish, usage));
                return;
            }
        }
    }
    // The engine stopped without finishing the choice (it is being shut down).
    let _ = out.send(end(&mut reply, "stop", usage));
}
