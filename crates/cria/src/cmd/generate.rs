//! `cria generate`: continue a prompt, streaming the continuation to stdout.

use anyhow::Context;
use clap::Args as ClapArgs;
use cria_core::generate::{GenerateOptions, generate};
use cria_core::sampling::SamplingParams;
use cria_core::tokenizer::StreamDecoder;

use std::io::Write;
use std::path::PathBuf;

/// How a checkpoint without a chat template is prompted (`--format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    /// The checkpoint's own chat template; without one, cria's chat tokens (added when the
    /// tokenizer lacks them).
    Auto,
    /// cria's chat format.
    Cria,
    /// The Alpaca prompt (one instruction, one response).
    Alpaca,
}

impl From<Format> for cria_data::chat::FormatChoice {
    fn from(f: Format) -> Self {
        match f {
            Format::Auto => cria_data::chat::FormatChoice::Auto,
            Format::Cria => cria_data::chat::FormatChoice::Cria,
            Format::Alpaca => cria_data::chat::FormatChoice::Alpaca,
        }
    }
}

/// Sampling flags shared by `generate` and `chat`.
#[derive(ClapArgs, Clone)]
pub struct Sampling {
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// 0 means greedy decoding.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Sampling {
    pub fn params(&self) -> anyhow::Result<SamplingParams> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            anyhow::bail!(
                "--temperature {} must be a finite number >= 0 (0 is greedy)",
                self.temperature
            );
        }
        if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            anyhow::bail!("--top-p {p} must be in (0, 1]");
        }
        if self.top_k == Some(0) {
            anyhow::bail!("--top-k must be at least 1 (leave it out to keep every token)");
        }
        if self.max_new_tokens == 0 {
            anyhow::bail!("--max-new-tokens must be at least 1");
        }
        Ok(SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            ..Default::default()
        })
    }
}

#[derive(ClapArgs)]
pub struct Args {
    /// A Hugging Face checkpoint directory, or a GGUF file (run on its own quantized weights).
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
    /// A LoRA adapter (PEFT layout, e.g. from `cria sft` with method = "lora") to apply.
    #[arg(long)]
    adapter: Option<PathBuf>,
    #[command(flatten)]
    sampling: Sampling,
    /// Stop when the output contains this text (repeatable); the stop text is not printed.
    #[arg(long)]
    stop: Vec<String>,
    /// Print one JSON object instead of streaming text: the prompt's and the reply's token ids,
    /// the text, why it ended, and at each step the gap between the two highest logits (how
    /// close greedy decoding came to choosing another token), for comparing runtimes.
    #[arg(long)]
    json: bool,
    /// Threads for the matrix products (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Do not stop at the end-of-sequence (or, for a GGUF file, end-of-turn) token: always
    /// write --max-new-tokens (benchmarks).
    #[arg(long)]
    ignore_eos: bool,
}

/// The highest logit minus the second highest.
fn top2_gap(logits: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in logits {
        if x > a {
            b = a;
            a = x;
        } else if x > b {
            b = x;
        }
    }
    a - b
}

/// Refuses an empty stop string (it would match at once and stop every reply).
pub fn check_stops(stops: &[String]) -> anyhow::Result<()> {
    if stops.iter().any(String::is_empty) {
        anyhow::bail!("--stop: an empty stop string would end every reply at once");
    }
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    a.sampling.params()?;
    check_stops(&a.stop)?;
    super::set_threads(a.threads)?;
    if super::is_gguf(&a.model) {
        let g = super::load_gguf(&a.model, a.adapter.as_deref())?;
        // End of sequence and end of turn, as llama.cpp stops at every end-of-generation id.
        let stops = g.stop_ids.clone();
        return continue_text(&a, &g.model, &g.tok, stops);
    }
    let (model, tok) = super::load_for_inference(&a.model, a.adapter.as_deref())?;
    let mut stop_ids = model.cfg.eos_token_id.clone();
    stop_ids.extend(tok.eos_id);
    continue_text(&a, &model, &tok, stop_ids)
}

fn continue_text<M: cria_core::generate::NextLogits>(
    a: &Args,
    model: &M,
    tok: &cria_core::tokenizer::Tokenizer,
    stop_ids: Vec<u32>,
) -> anyhow::Result<()> {
    let sampling = a.sampling.params()?;
    let prompt = tok.encode(&a.prompt, true)?;
    let stop_ids = if a.ignore_eos { vec![] } else { stop_ids };
    let opts = GenerateOptions {
        max_new_tokens: a.sampling.max_new_tokens,
        sampling,
        stop_ids: stop_ids.clone(),
    };
    if a.json {
        let mut margins = Vec::new();
        let start = std::time::Instant::now();
        let mut first: Option<f64> = None;
        let (ids, finish) =
            cria_core::generate::generate_with_logits(model, &prompt, &opts, |_, logits| {
                first.get_or_insert_with(|| start.elapsed().as_secs_f64());
                margins.push(top2_gap(logits));
                true
            })?;
        let total = start.elapsed().as_secs_f64();
        let text = tok.decode(&ids, true)?;
        let v = serde_json::json!({
            "prompt_ids": prompt,
            "ids": ids,
            "text": text,
            "finish": format!("{finish:?}").to_lowercase(),
            "margins": margins,
            // Reading the prompt (and sampling the first token), then the rest one at a time.
            "prompt_seconds": first.unwrap_or(total),
            "decode_seconds": total - first.unwrap_or(total),
        });
        println!("{v}");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let mut dec = StreamDecoder::new(tok);
    let mut failure: Option<anyhow::Error> = None;
    generate(model, &prompt, &opts, |id| {
        if stop_ids.contains(&id) {
            return true;
        }
        let res = (|| -> anyhow::Result<bool> {
            let new = dec.push(id)?;
            let text = dec.text()?;
            if let Some(pos) = a.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                let start = dec.printed() - new.len();
                if pos > start {
                    write!(out, "{}", &text[start..pos])?;
                }
                return Ok(false);
            }
            write!(out, "{new}")?;
            out.flush()?;
            Ok(true)
        })();
        res.unwrap_or_else(|e| {
            failure = Some(e);
            false
        })
    })?;
    if let Some(e) = failure {
        return Err(e).context("writing the generated text");
    }
    writeln!(out)?;
    Ok(())
}
