//! Tokenizers: training cria's byte-level BPE (Radford et al. 2019, GPT-2's byte-level scheme)
//! with the special tokens the chat format needs, and loading any Hugging Face `tokenizer.json`.

use crate::error::{CoreError, Result};
use crate::fsutil;
use serde_json::json;
use std::path::{Path, PathBuf};
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

pub const BOS: &str = "<|begin_of_text|>";
pub const EOS: &str = "<|end_of_text|>";
pub const EOT: &str = "<|end_of_turn|>";
pub const PAD: &str = "<|pad|>";
pub const SYSTEM: &str = "<|system|>";
pub const USER: &str = "<|user|>";
pub const ASSISTANT: &str = "<|assistant|>";

/// cria's reserved tokens, ids 0..7 in this order in every tokenizer cria trains.
pub const SPECIAL_TOKENS: [&str; 7] = [BOS, EOS, EOT, PAD, SYSTEM, USER, ASSISTANT];

/// A loaded tokenizer plus the ids of the tokens generation and data preparation need.
pub struct Tokenizer {
    pub inner: HfTokenizer,
    pub path: PathBuf,
    /// Ends a document; generation stops on it.
    pub eos_id: Option<u32>,
    pub bos_id: Option<u32>,
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> CoreError {
    CoreError::Tokenizer {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json`; `tokenizer_config.json` beside it (if any) names the eos/bos tokens.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(CoreError::io(
                path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let inner = HfTokenizer::from_file(path).map_err(|e| tok_err(path, e))?;
        let cfg_path = path.with_file_name("tokenizer_config.json");
        let cfg = if cfg_path.exists() {
            Some(fsutil::read_json(&cfg_path)?)
        } else {
            None
        };
        let named = |key: &str, fallback: &str| -> Option<u32> {
            let name = cfg.as_ref().and_then(|c| match c.get(key) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Object(o)) => {
                    o.get("content").and_then(|s| s.as_str()).map(String::from)
                }
                _ => None,
            });
            inner.token_to_id(name.as_deref().unwrap_or(fallback))
        };
        Ok(Tokenizer {
            eos_id: named("eos_token", EOS),
            bos_id: named("bos_token", BOS),
            inner,
            path: path.to_path_buf(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes as the tokenizer's own post-processor says (e.g. adding BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| tok_err(&self.path, e))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| tok_err(&self.path, e))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The id rows are padded with: cria's pad token, else the end-of-sequence token, else 0.
    /// Padding sits after a row's last real token or is masked, so it never changes a result;
    /// one rule keeps batches identical wherever they are built.
    pub fn pad_id(&self) -> u32 {
        self.token_to_id(PAD).or(self.eos_id).unwrap_or(0)
    }
}

/// Options for [`train`].
pub struct TrainOptions {
    pub vocab_size: usize,
    pub min_frequency: u64,
}

/// Trains a byte-level BPE on `texts` and writes `tokenizer.json` and `tokenizer_config.json`
/// into `out_dir`. Special tokens take ids 0..7; the post-processor prepends BOS.
pub fn train<I>(texts: I, opts: &TrainOptions, out_dir: &Path) -> Result<Tokenizer>
where
    I: Iterator<Item = String> + Send,
{
    let min_vocab = 256 + SPECIAL_TOKENS.len();
    if opts.vocab_size < min_vocab {
        return Err(CoreError::Invalid(format!(
            "--vocab-size {} is too small: byte-level BPE needs at least {min_vocab} (256 bytes + {} special tokens)",
            opts.vocab_size,
            SPECIAL_TOKENS.len()
        )));
    }
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    let mut trainer: tokenizers::models::TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(opts.vocab_size)
        .min_frequency(opts.min_frequency)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .show_progress(false)
        .build()
        .into();
    let mut tk = HfTokenizer::new(BPE::default());
    tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tk.with_decoder(Some(ByteLevel::default()));
    let out_json = out_dir.join("tokenizer.json");
    tk.train(&mut trainer, texts)
        .map_err(|e| tok_err(&out_json, e))?;
    let bos_id = tk
        .token_to_id(BOS)
        .expect("special token added by the trainer");
    let post = TemplateProcessing::builder()
        .try_single(format!("{BOS} $A"))
        .and_then(|b| b.try_pair(format!("{BOS} $A {BOS} $B")))
        .map_err(|e| tok_err(&out_json, e))?
        .special_tokens(vec![(BOS.to_string(), bos_id)])
        .build()
        .map_err(|e| tok_err(&out_json, e))?;
    tk.with_post_processor(Some(post));
    std::fs::create_dir_all(out_dir).map_err(|e| CoreError::io(out_dir, e))?;
    let json = tk.to_string(true).map_err(|e| tok_err(&out_json, e))?;
    fsutil::write_atomic(&out_json, json.as_bytes())?;
    write_tokenizer_config(out_dir)?;
    Tokenizer::from_file(&out_json)
}

/// `tokenizer_config.json` as transformers' `PreTrainedTokenizerFast` reads it.
pub fn write_tokenizer_config(out_dir: &Path) -> Result<()> {
    let cfg = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": true,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 1_000_000_000_000_000_000u64,
        "additional_special_tokens": [EOT, SYSTEM, USER, ASSISTANT],
    });
    let path = out_dir.join("tokenizer_config.json");
    let text = serde_json::to_string_pretty(&cfg).expect("static JSON");
    fsutil::write_atomic(&path, text.as_bytes())
}

/// Turns generated ids into text as they arrive, holding back an incomplete UTF-8 sequence
/// (byte-level tokens can split a character) until the next id completes it.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    printed: usize,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tok: &'a Tokenizer) -> Self {
        StreamDecoder {
            tok,
            ids: Vec::new(),
            printed: 0,
        }
    }

    /// Adds an id; returns the text that is now complete.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids, true)?;
        let safe = text.trim_end_matches('\u{FFFD}').len();
        if safe > self.printed && text.is_char_boundary(self.printed) {
            let new = text[self.printed..safe].to_string();
            self.printed = safe;
            Ok(new)
        } else {
            Ok(String::new())
        }
    }

    /// Everything decoded so far.
    pub fn text(&self) -> Result<String> {
        self.tok.decode(&self.ids, true)
    }

    /// Bytes of [`StreamDecoder::text`] already returned by `push`.
    pub fn printed(&self) -> usize {
        self.printed
    }
}
