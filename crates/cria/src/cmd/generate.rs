//! `cria generate`: continue a prompt, streaming the continuation to stdout.

use anyhow::Context;
use clap::Args as ClapArgs;
use cria_core::generate::{GenerateOptions, generate};
use cria_core::sampling::SamplingParams;
use cria_core::{checkpoint, device};
use std::io::Write;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// A Hugging Face checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// 0 means greedy decoding.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when the output contains this text (repeatable); the stop text is not printed.
    #[arg(long)]
    stop: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.temperature < 0.0 {
        anyhow::bail!("--temperature must be >= 0 (0 is greedy)");
    }
    if let Some(p) = a.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        anyhow::bail!("--top-p {p} must be in (0, 1]");
    }
    let dev = device::inference_device();
    let model = checkpoint::load_model(&a.model, &dev)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let tok = checkpoint::load_tokenizer(&a.model, &model.cfg)?;
    let prompt = tok.encode(&a.prompt, true)?;
    let mut stop_ids = model.cfg.eos_token_id.clone();
    stop_ids.extend(tok.eos_id);
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling: SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed,
        },
        stop_ids: stop_ids.clone(),
    };
    let mut out = std::io::stdout().lock();
    let mut ids: Vec<u32> = Vec::new();
    let mut printed = 0usize;
    let mut io_err = None;
    let (_, finish) = generate(&model, &prompt, &opts, |id| {
        if stop_ids.contains(&id) {
            return true;
        }
        ids.push(id);
        let text = tok.decode(&ids, true).unwrap_or_default();
        if let Some(pos) = a.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            if pos > printed {
                io_err = write!(out, "{}", &text[printed..pos]).err();
            }
            return false;
        }
        // Hold back a trailing replacement char: the next token may complete a UTF-8 sequence.
        let safe = text.trim_end_matches('\u{FFFD}').len();
        if safe > printed && text.is_char_boundary(printed) {
            io_err = write!(out, "{}", &text[printed..safe])
                .and_then(|_| out.flush())
                .err();
            printed = safe;
        }
        io_err.is_none()
    })?;
    if let Some(e) = io_err {
        return Err(e).context("writing to stdout");
    }
    writeln!(out)?;
    tracing::debug!(?finish, tokens = ids.len(), "generation finished");
    Ok(())
}
