//! Training cria's byte-level BPE (Radford et al. 2019, GPT-2's byte-level scheme) with the
//! special tokens the chat format needs.

use super::{ASSISTANT, BOS, EOS, EOT, PAD, SPECIAL_TOKENS, SYSTEM, Tokenizer, USER, tok_err};
use crate::error::{CoreError, Result};
use crate::fsutil;
use serde_json::json;
use std::path::Path;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

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
