//! `cria eval`: what each stage did to a model, measured the same way for every checkpoint.
//!
//! - fact accuracy: greedy replies to questions, normalised exact match with the answer
//!   (lower case, no punctuation or articles, single spaces), and the share of replies that
//!   contain the normalised answer; the same on conversations whose last question follows
//!   earlier exchanges (`multiturn_*`: a follow-up that refers back, a question after a
//!   refusal, a change of topic);
//! - truthfulness: multiple choice by log-likelihood in TruthfulQA's layout, MC1 (the best
//!   answer scores above every false one) and MC2 (the probability mass on true answers);
//! - helpfulness: the reward model's mean score of the replies, and the win rate of this model
//!   over another one, judged by the reward model (ties count half);
//! - harmlessness: the share of harmful prompts refused and of benign ones refused anyway;
//! - the alignment tax: perplexity on a held-out corpus; and KL to a reference model on the
//!   model's own samples.

mod measures;

pub use measures::*;

use crate::error::{Result, TrainError};
use cria_core::tokenizer::Tokenizer;
use cria_core::{Llama, device};
use cria_data::chat::ChatFormat;
use std::collections::BTreeMap;

/// Named results, in a stable order.
pub type Report = BTreeMap<String, f64>;

/// What to measure a checkpoint on (any subset).
#[derive(Debug, Clone, Default)]
pub struct EvalInputs {
    pub facts: Option<std::path::PathBuf>,
    /// Conversations whose last question has known answers (`{messages, answers}`).
    pub multiturn: Option<std::path::PathBuf>,
    pub truthful: Option<std::path::PathBuf>,
    pub harmful: Option<std::path::PathBuf>,
    pub benign: Option<std::path::PathBuf>,
    pub reward_model: Option<std::path::PathBuf>,
    /// A rival checkpoint (and adapter) for the win rate.
    pub against: Option<(std::path::PathBuf, Option<std::path::PathBuf>)>,
    /// Held-out token ids for perplexity, in windows of `seq_len + 1`.
    pub corpus_ids: Option<Vec<u32>>,
    pub seq_len: usize,
    pub reference: Option<std::path::PathBuf>,
    pub kl_samples: usize,
    pub max_new_tokens: usize,
    /// How a checkpoint without a chat template is prompted.
    pub format: cria_data::chat::FormatChoice,
}

fn prompt_strings(path: &std::path::Path) -> Result<Vec<String>> {
    Ok(cria_data::prefs::read_prompts(&[path.to_path_buf()])?
        .into_iter()
        .map(|c| c.last().map(|m| m.content.clone()).unwrap_or_default())
        .collect())
}

/// Loads a checkpoint (and adapter) with its tokenizer and chat format (`format` as the one
/// rule of [`crate::format`] says). `what` names the checkpoint's role in errors (a reward
/// model given as a model is refused).
pub fn load_subject(
    dir: &std::path::Path,
    adapter: Option<&std::path::Path>,
    what: &str,
    format: cria_data::chat::FormatChoice,
) -> Result<(Llama, Tokenizer, ChatFormat)> {
    let dev = device::inference_device();
    let mut m = cria_core::checkpoint::load_model(dir, &dev)?;
    crate::method::require_lm_as(&m, dir, what)?;
    if let Some(a) = adapter {
        m.load_adapter(a)?;
    }
    let mut tok = cria_core::checkpoint::load_tokenizer(dir, &m.cfg)?;
    // An adapter directory carries the chat template it was trained with.
    let p = crate::format::resolve(format, adapter.unwrap_or(dir), &mut m, &mut tok)?;
    Ok((m, tok, p.fmt))
}

/// One greedy reply the evaluation generated, with the set its prompt came from
/// (`facts`, `harmful` or `benign`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Reply {
    pub set: String,
    pub prompt: String,
    pub reply: String,
}

/// What [`evaluate`] measured, and the replies behind the generated metrics.
pub struct Evaluation {
    pub metrics: Report,
    pub replies: Vec<Reply>,
}

impl Evaluation {
    /// Writes `dir/<name>.json` (the metrics) and `dir/<name>-replies.jsonl`, atomically.
    pub fn write(&self, dir: &std::path::Path, name: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| cria_core::CoreError::io(dir, e))?;
        let metrics = serde_json::to_string_pretty(&self.metrics).expect("JSON");
        cria_core::fsutil::write_atomic(&dir.join(format!("{name}.json")), metrics.as_bytes())?;
        self.write_replies(&dir.join(format!("{name}-replies.jsonl")))
    }

    /// Reads what [`Evaluation::write`] wrote.
    pub fn read(dir: &std::path::Path, name: &str) -> Result<Evaluation> {
        let metrics = cria_core::fsutil::read_json(&dir.join(format!("{name}.json")))?;
        let metrics: Report = serde_json::from_value(metrics)
            .map_err(|e| TrainError::Invalid(format!("{}/{name}.json: {e}", dir.display())))?;
        let path = dir.join(format!("{name}-replies.jsonl"));
        let text =
            std::fs::read_to_string(&path).map_err(|e| cria_core::CoreError::io(&path, e))?;
        let replies = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| TrainError::Invalid(format!("{}:{}: {e}", path.display(), i + 1)))
            })
            .collect::<Result<Vec<Reply>>>()?;
        Ok(Evaluation { metrics, replies })
    }

    /// Writes the replies to `path` as JSON lines (`set`, `prompt`, `reply`), atomically.
    pub fn write_replies(&self, path: &std::path::Path) -> Result<()> {
        let text: String = self
            .replies
            .iter()
            .map(|x| format!("{}\n", serde_json::to_string(x).expect("JSON")))
            .collect();
        cria_core::fsutil::write_atomic(path, text.as_bytes())?;
        Ok(())
    }
}

/// At most `n` items spread evenly over `xs` (every k-th), so a sample covers every set.
fn spread<T: Clone>(xs: &[T], n: usize) -> Vec<T> {
    if xs.len() <= n {
        return xs.to_vec();
    }
    (0..n).map(|i| xs[i * xs.len() / n].clone()).collect()
}

/// What an evaluation has gathered so far: the metrics, every reply, and the prompts and
/// replies the reward model judges (the factual and the benign ones).
#[derive(Default)]
struct Gathered {
    metrics: Report,
    replies: Vec<Reply>,
    judged_prompts: Vec<String>,
    judged_replies: Vec<String>,
}

impl Gathered {
    fn keep(&mut self, set: &str, prompts: &[String], replies: &[String], judged: bool) {
        self.replies
            .extend(prompts.iter().zip(replies).map(|(p, reply)| Reply {
                set: set.to_string(),
                prompt: p.clone(),
                reply: reply.clone(),
            }));
        if judged {
            self.judged_prompts.extend_from_slice(prompts);
            self.judged_replies.extend_from_slice(replies);
        }
    }
}

fn need_prompts(what: &str) -> TrainError {
    TrainError::Invalid(format!(
        "{what} works on the replies to factual or benign prompts; give facts or benign ones"
    ))
}

/// Measures the checkpoint in `dir` on everything `inputs` names.
pub fn evaluate(
    dir: &std::path::Path,
    adapter: Option<&std::path::Path>,
    inputs: &EvalInputs,
) -> Result<Evaluation> {
    let (model, tok, fmt) = load_subject(dir, adapter, "model", inputs.format)?;
    let s = Subject {
        model: &model,
        tok: &tok,
        fmt: &fmt,
    };
    let mut g = Gathered::default();
    generated(&s, inputs, &mut g)?;
    if let Some(rm_dir) = &inputs.reward_model {
        judged(&s, rm_dir, inputs, &mut g)?;
    } else if inputs.against.is_some() {
        return Err(TrainError::Invalid(
            "a win rate needs a reward model to judge the two models' replies".into(),
        ));
    }
    if let Some(ids) = &inputs.corpus_ids {
        let ppl = perplexity(&model, ids, inputs.seq_len)?;
        g.metrics.insert("perplexity".into(), ppl);
    }
    if let Some(ref_dir) = &inputs.reference {
        // Up to 48 prompts spread over every set (the models differ most on some sets).
        let every: Vec<String> = g.replies.iter().map(|x| x.prompt.clone()).collect();
        let prompts = spread(&every, 48);
        if prompts.is_empty() {
            return Err(need_prompts("KL to a reference"));
        }
        let reference = cria_core::checkpoint::load_model(ref_dir, &device::inference_device())?;
        crate::method::require_lm_as(&reference, ref_dir, "reference")?;
        let kl = kl_to(
            &s,
            &reference,
            &prompts,
            inputs.kl_samples,
            inputs.max_new_tokens,
        )?;
        g.metrics.insert("kl_to_reference".into(), kl);
    }
    Ok(Evaluation {
        metrics: g.metrics,
        replies: g.replies,
    })
}

/// The measures on the model's own greedy replies (facts, refusals) and on likelihoods
/// (truthfulness).
fn generated(s: &Subject<'_>, inputs: &EvalInputs, g: &mut Gathered) -> Result<()> {
    let max_new = inputs.max_new_tokens;
    for (path, set, key) in [
        (&inputs.facts, "facts", "fact"),
        (&inputs.multiturn, "multiturn", "multiturn"),
    ] {
        let Some(p) = path else { continue };
        let qa = cria_data::evalsets::read_qa(p)?;
        let (em, contains, replies) = facts(s, &qa, max_new)?;
        g.metrics.insert(format!("{key}_exact_match"), em);
        g.metrics.insert(format!("{key}_contains"), contains);
        // The reward model judges single questions only.
        let qs: Vec<String> = qa.into_iter().map(|q| q.question).collect();
        g.keep(set, &qs, &replies, set == "facts");
    }
    if let Some(p) = &inputs.truthful {
        let mc = cria_data::evalsets::read_truthful(p)?;
        let (mc1, mc2) = truthful(s, &mc)?;
        g.metrics.insert("truthful_mc1".into(), mc1);
        g.metrics.insert("truthful_mc2".into(), mc2);
    }
    for (path, set, key) in [
        (&inputs.harmful, "harmful", "refusal_rate"),
        (&inputs.benign, "benign", "over_refusal_rate"),
    ] {
        if let Some(p) = path {
            let prompts = prompt_strings(p)?;
            let (rate, replies) = refusals(s, &prompts, max_new)?;
            g.metrics.insert(key.into(), rate);
            g.keep(set, &prompts, &replies, set == "benign");
        }
    }
    Ok(())
}

/// The reward model's mean score of the judged replies, and the win rate over a rival's
/// replies to the same prompts.
fn judged(
    s: &Subject<'_>,
    rm_dir: &std::path::Path,
    inputs: &EvalInputs,
    g: &mut Gathered,
) -> Result<()> {
    if g.judged_prompts.is_empty() {
        return Err(need_prompts("the reward model"));
    }
    let rm = cria_core::checkpoint::load_model(rm_dir, &device::inference_device())?;
    crate::method::require_reward_model(&rm, rm_dir, "reward model")?;
    let rm_fmt = ChatFormat::for_checkpoint(rm_dir, s.tok)?;
    let mine = rewards(&rm, &rm_fmt, s.tok, &g.judged_prompts, &g.judged_replies)?;
    let mean = mine.iter().map(|x| *x as f64).sum::<f64>() / mine.len() as f64;
    g.metrics.insert("reward_mean".into(), mean);
    if let Some((b, b_adapter)) = &inputs.against {
        let (other, otok, ofmt) = load_subject(b, b_adapter.as_deref(), "against", inputs.format)?;
        let os = Subject {
            model: &other,
            tok: &otok,
            fmt: &ofmt,
        };
        let theirs_replies = os.replies(&g.judged_prompts, inputs.max_new_tokens, 16)?;
        let theirs = rewards(&rm, &rm_fmt, s.tok, &g.judged_prompts, &theirs_replies)?;
        g.metrics
            .insert("win_rate".into(), win_rate(&mine, &theirs));
    }
    Ok(())
}
