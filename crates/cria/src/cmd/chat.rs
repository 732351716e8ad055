//! `cria chat`: a multi-turn conversation in the terminal, streaming replies. Lines starting
//! with `/` are commands (`/reset`, `/system TEXT`, `/quit`); when stdin is not a terminal it
//! reads plain lines, so a conversation can be scripted.

use super::generate::{Format, Sampling};
use clap::Args as ClapArgs;
use cria_core::generate::{GenerateOptions, NextLogits, generate};
use cria_core::tokenizer::StreamDecoder;

use cria_core::tokenizer::Tokenizer;
use cria_data::chat::{ChatFormat, Message, Role, fold_history};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// A Hugging Face checkpoint directory: prompted with its own chat template, else as
    /// `--format` says. Or a GGUF file (`cria export --to gguf`, llama.cpp's files of the
    /// llama and qwen2 architectures), run on its own f32/f16/q8_0/q4_0 weights with the
    /// template it carries.
    #[arg(long)]
    model: PathBuf,
    /// How to prompt a checkpoint without a chat template: `auto` (cria's chat tokens, added
    /// when missing: only useful once trained on them), `cria`, or `alpaca` (the Alpaca
    /// prompt; earlier turns of the conversation become the instruction's input).
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    /// A system message that starts the conversation.
    #[arg(long)]
    system: Option<String>,
    /// A LoRA adapter (PEFT layout, e.g. from `cria sft` with method = "lora") to apply.
    #[arg(long)]
    adapter: Option<PathBuf>,
    #[command(flatten)]
    sampling: Sampling,
    /// Threads for the matrix products (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

struct Session {
    system: Option<String>,
    turns: Vec<Message>,
}

impl Session {
    fn messages(&self) -> Vec<Message> {
        let sys = self
            .system
            .iter()
            .map(|s| Message::new(Role::System, s.clone()));
        sys.chain(self.turns.iter().cloned()).collect()
    }

    /// Obeys a `/command`; returns `None` to quit, `Some(true)` when the line was a command.
    fn command(&mut self, line: &str) -> Option<bool> {
        match line {
            "/quit" | "/exit" => None,
            "/reset" => {
                self.turns.clear();
                Some(true)
            }
            l if l.starts_with("/system") => {
                let text = l["/system".len()..].trim();
                self.system = (!text.is_empty()).then(|| text.to_string());
                self.turns.clear();
                Some(true)
            }
            _ => Some(false),
        }
    }

    /// The prompt for the conversation so far, kept inside `budget` tokens by dropping the
    /// oldest exchanges first; `None` (and the question dropped) when even the last question
    /// alone does not fit. A single-exchange format gets the conversation folded into one.
    fn prompt(
        &mut self,
        fmt: &ChatFormat,
        tok: &Tokenizer,
        budget: usize,
    ) -> anyhow::Result<Option<Vec<u32>>> {
        let ids = loop {
            let mut messages = self.messages();
            if fmt.single_exchange() {
                messages = fold_history(&messages);
            }
            let ids = fmt.encode(&messages, tok, true, false)?.ids;
            if ids.len() <= budget || self.turns.len() <= 1 {
                break ids;
            }
            self.turns.drain(..2.min(self.turns.len() - 1));
        };
        if ids.len() > budget {
            eprintln!(
                "error: that message does not fit the model's context ({} tokens, {budget} available)",
                ids.len()
            );
            self.turns.pop();
            return Ok(None);
        }
        Ok(Some(ids))
    }
}

/// Streams one reply to `out` as it is sampled; returns its text.
fn reply<M: NextLogits>(
    model: &M,
    tok: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    out: &mut impl Write,
) -> anyhow::Result<String> {
    let mut dec = StreamDecoder::new(tok);
    let mut io_err = None;
    generate(model, prompt, opts, |id| {
        if opts.stop_ids.contains(&id) {
            return true;
        }
        match dec
            .push(id)
            .map_err(anyhow::Error::from)
            .and_then(|t| Ok(write!(out, "{t}").and_then(|_| out.flush())?))
        {
            Ok(()) => true,
            Err(e) => {
                io_err = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = io_err {
        return Err(e);
    }
    writeln!(out)?;
    Ok(dec.text()?.trim().to_string())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    // Flags are checked before anything is loaded.
    a.sampling.params()?;
    super::set_threads(a.threads)?;
    if super::is_gguf(&a.model) {
        let g = super::load_gguf(&a.model, a.adapter.as_deref())?;
        let fmt = g.format(a.format)?;
        let stops = g.stop_ids.clone();
        return converse(&a, &g.model, &g.tok, &fmt, stops);
    }
    let (mut model, mut tok) = super::load_for_inference(&a.model, a.adapter.as_deref())?;
    // An adapter directory carries the chat template it was trained with.
    let dir = a.adapter.as_deref().unwrap_or(&a.model);
    let fmt = cria_train::format::resolve(a.format.into(), dir, &mut model, &mut tok)?.fmt;
    let stop_ids = fmt.stop_ids(&tok, &model.cfg.eos_token_id);
    converse(&a, &model, &tok, &fmt, stop_ids)
}

/// The conversation loop, on either kind of model.
fn converse<M: NextLogits>(
    a: &Args,
    model: &M,
    tok: &Tokenizer,
    fmt: &ChatFormat,
    stop_ids: Vec<u32>,
) -> anyhow::Result<()> {
    let sampling = a.sampling.params()?;
    let budget = model.max_len().saturating_sub(a.sampling.max_new_tokens);
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "cria chat — /reset clears the conversation, /system TEXT sets the system message, /quit exits"
        );
        if fmt.single_exchange() {
            eprintln!(
                "(this model takes one instruction at a time, as Alpaca: earlier turns are given \
                 to it as the instruction's input)"
            );
        }
    }
    let mut s = Session {
        system: a.system.clone(),
        turns: vec![],
    };
    let mut out = std::io::stdout().lock();
    let mut lines = std::io::stdin().lock().lines();
    let mut turn = 0u64;
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next().transpose()? else {
            break;
        };
        let line = line.trim_end().to_string();
        match s.command(&line) {
            None => break,
            Some(true) => continue,
            Some(false) if line.is_empty() => continue,
            Some(false) => {}
        }
        s.turns.push(Message::new(Role::User, line));
        let Some(prompt) = s.prompt(fmt, tok, budget)? else {
            continue;
        };
        let opts = GenerateOptions {
            max_new_tokens: a.sampling.max_new_tokens,
            sampling: cria_core::sampling::SamplingParams {
                seed: sampling.seed.wrapping_add(turn),
                ..sampling.clone()
            },
            stop_ids: stop_ids.clone(),
        };
        turn += 1;
        let text = reply(model, tok, &prompt, &opts, &mut out)?;
        s.turns.push(Message::new(Role::Assistant, text));
    }
    Ok(())
}
