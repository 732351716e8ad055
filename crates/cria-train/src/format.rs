//! The one rule by which every stage, evaluation and chat prompt a checkpoint:
//!
//! - a checkpoint's own chat template is used as it is (unless `format` names another);
//! - a checkpoint without one (a base) is prompted as `format` says: `auto` and `cria` use
//!   cria's chat format, adding its special tokens to the tokenizer and growing the
//!   embeddings (new rows the mean of the old, as TRL's `setup_chat_format`) when the
//!   tokenizer lacks them; `alpaca` uses the Alpaca prompt, which needs no new token;
//! - a stage that trains writes the format into its checkpoint (the template into
//!   `tokenizer_config.json`, the grown tokenizer into `tokenizer.json`), so every later
//!   stage, `cria chat` and `cria serve` prompt it the same way.

use crate::error::Result;
use cria_core::Llama;
use cria_core::tokenizer::{self, Tokenizer};
use cria_data::chat::{ALPACA_TEMPLATE, CHAT_TEMPLATE, ChatFormat, ChatTokens, FormatChoice};
use std::path::Path;

/// How a checkpoint is prompted, and whether its tokenizer had to grow for it.
pub struct Prompting {
    pub fmt: ChatFormat,
    /// cria's chat tokens were added (the tokenizer and the embeddings grew).
    pub added_tokens: usize,
}

/// cria's chat tokens a tokenizer needs for its format.
const CHAT_TOKENS: [&str; 5] = [
    tokenizer::BOS,
    tokenizer::EOT,
    tokenizer::SYSTEM,
    tokenizer::USER,
    tokenizer::ASSISTANT,
];

/// The format `choice` gives the checkpoint in `dir` (the model and tokenizer loaded from
/// it), growing both when cria's format needs tokens the tokenizer lacks.
pub fn resolve(
    choice: FormatChoice,
    dir: &Path,
    model: &mut Llama,
    tok: &mut Tokenizer,
) -> Result<Prompting> {
    let own = cria_data::template::ChatTemplate::from_checkpoint(dir)?;
    let has_own = own.as_ref().is_some_and(|t| !t.is_cria());
    if choice == FormatChoice::Alpaca || (choice == FormatChoice::Auto && has_own) {
        let fmt = ChatFormat::choose(choice, dir, tok)?;
        return Ok(Prompting {
            fmt,
            added_tokens: 0,
        });
    }
    let mut added = 0;
    if ChatTokens::of(tok).is_err() {
        added = tok.add_special_tokens(&CHAT_TOKENS);
        model.resize_vocab(tok.vocab_size());
        tracing::warn!(
            added,
            "{} has no cria chat tokens: they were added to the tokenizer and the embeddings \
             (new rows start as the mean of the old, as TRL's setup_chat_format); they mean \
             nothing until the model is fine-tuned on them (or prompt it with format = \"alpaca\")",
            dir.display()
        );
    }
    let fmt = ChatFormat::cria(dir, tok)?;
    if added > 0 {
        // A reply ends at the end-of-turn token: the saved config says so, so transformers'
        // `generate` stops there too (as setup_chat_format makes the chat end token the EOS).
        let eot = tok.token_to_id(tokenizer::EOT).expect("just added");
        if !model.cfg.eos_token_id.contains(&eot) {
            model.cfg.eos_token_id.push(eot);
        }
    }
    Ok(Prompting {
        fmt,
        added_tokens: added,
    })
}

impl Prompting {
    /// The files a trained checkpoint needs to be prompted this way again: its
    /// `tokenizer_config.json` with the template (cria's or Alpaca's; a checkpoint's own is
    /// kept as it is) and, when tokens were added, the grown `tokenizer.json`.
    pub fn checkpoint_files(&self, init: &Path, tok: &Tokenizer) -> Result<Vec<(String, Vec<u8>)>> {
        let template = match &self.fmt {
            ChatFormat::Cria(_) => CHAT_TEMPLATE,
            ChatFormat::Template(t) if t.is_cria() => CHAT_TEMPLATE,
            ChatFormat::Template(t) if t.is(ALPACA_TEMPLATE) => ALPACA_TEMPLATE,
            ChatFormat::Template(_) => return Ok(vec![]),
        };
        let added: Vec<(u32, &str)> = if self.added_tokens > 0 {
            CHAT_TOKENS
                .iter()
                .filter_map(|t| Some((tok.token_to_id(t)?, *t)))
                .collect()
        } else {
            vec![]
        };
        let mut files = vec![(
            "tokenizer_config.json".to_string(),
            tokenizer_config_with_template(init, template, tok, &added)?,
        )];
        if self.added_tokens > 0 {
            files.push(("tokenizer.json".to_string(), tok.to_json()?));
        }
        Ok(files)
    }
}

/// `tokenizer_config.json` of the base with `template` as its chat template (and the BOS/EOS
/// strings the template uses, so transformers renders it the same). Tokens cria `added` are
/// listed in its `added_tokens_decoder` too: transformers reads them from there, not from
/// `tokenizer.json`, for the tokenizer classes that rebuild the file.
fn tokenizer_config_with_template(
    init: &Path,
    template: &str,
    tok: &Tokenizer,
    added: &[(u32, &str)],
) -> Result<Vec<u8>> {
    let path = init.join("tokenizer_config.json");
    let mut v = if path.exists() {
        cria_core::fsutil::read_json(&path)?
    } else {
        serde_json::json!({})
    };
    let (bos, eos) = cria_data::template::special_strings(init, tok)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("chat_template".into(), template.trim_end().into());
        for (k, s) in [("bos_token", bos), ("eos_token", eos)] {
            if !o.contains_key(k) && !s.is_empty() {
                o.insert(k.into(), s.into());
            }
        }
        if !added.is_empty() && !o.contains_key("added_tokens_decoder") {
            o.insert("added_tokens_decoder".into(), serde_json::json!({}));
        }
        if let Some(d) = o
            .get_mut("added_tokens_decoder")
            .and_then(|d| d.as_object_mut())
        {
            for (id, content) in added {
                d.insert(
                    id.to_string(),
                    serde_json::json!({"content": content, "lstrip": false, "normalized": false,
                                       "rstrip": false, "single_word": false, "special": true}),
                );
            }
        }
    }
    Ok(serde_json::to_vec_pretty(&v).expect("JSON value"))
}
