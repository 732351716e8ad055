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
    /// When the request arrived (time to first token).
    pub start: Instant,
}

/// Runs until the choice ends or its handler is gone.
pub fn follow(
    model: Arc<ServedModel>,
    rx: Receiver<Event>,
    c: Choice,
    out: UnboundedSender<Out>,
    metrics: Arc<Metrics>,
) {
    let mut f = Follower {
        dec: StreamDecoder::new(&model.tok),
        reply: Reply::new(c.stops, c.tools),
        lps: vec![],
        // The handler counts the prompt once per request.
        usage: Usage::default(),
        index: c.index,
        out,
    };
    let mut last: Option<Instant> = None;
    for ev in rx {
        match ev {
            Event::Prompt(logprobs) => {
                let index = c.index;
                if f.out.send(Out::Prompt { index, logprobs }).is_err() {
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
                f.usage.completion_tokens += 1;
                if model.stop_ids.contains(&id) {
                    continue;
                }
                f.lps.extend(logprobs);
                let piece = f.dec.push(id).unwrap_or_default();
                if !f.text(&piece) {
                    return;
                }
                if f.reply.stopped() {
                    let usage = f.usage;
                    f.end("stop", usage);
                    return;
                }
            }
            Event::Done { finish, usage } => {
                // Bytes held back as the start of a character that never came: sent as they
                // decode (U+FFFD), as the whole reply would show them.
                let tail = f
                    .dec
                    .text()
                    .ok()
                    .and_then(|t| t.get(f.dec.printed()..).map(str::to_string))
                    .unwrap_or_default();
                f.text(&tail);
                let finish = match finish {
                    Finish::Length => "length",
                    Finish::Stop | Finish::Callback => "stop",
                };
                f.end(finish, usage);
                return;
            }
        }
    }
    // The engine stopped without finishing the choice (it is being shut down).
    let usage = f.usage;
    f.end("stop", usage);
}

/// One choice's state while it is followed.
struct Follower<'a> {
    dec: StreamDecoder<'a>,
    reply: Reply,
    /// Log-probabilities of the tokens since the last delta.
    lps: Vec<Logprobs>,
    usage: Usage,
    index: usize,
    out: UnboundedSender<Out>,
}

impl Follower<'_> {
    /// Adds decoded text and sends what can be sent (with the pending log-probabilities);
    /// false once the handler is gone.
    fn text(&mut self, piece: &str) -> bool {
        let text = self.reply.push(piece);
        if text.is_empty() && self.lps.is_empty() {
            return true;
        }
        let logprobs = std::mem::take(&mut self.lps);
        let index = self.index;
        self.out
            .send(Out::Delta {
                index,
                text,
                logprobs,
            })
            .is_ok()
    }

    /// The choice's last message: the rest of its content, its tool calls, how it finished.
    fn end(&mut self, finish: &'static str, usage: Usage) {
        let ending = self.reply.finish();
        let finish = if ending.tool_calls.is_empty() {
            finish
        } else {
            "tool_calls"
        };
        let _ = self.out.send(Out::End {
            index: self.index,
            finish,
            ending,
            usage,
        });
    }
}
