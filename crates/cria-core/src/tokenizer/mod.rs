//! Tokenizers: training cria's byte-level BPE (Radford et al. 2019, GPT-2's byte-level scheme)
//! with the special tokens the chat format needs, and loading any Hugging Face `tokenizer.json`.

use crate::error::{CoreError, Result};
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer as HfTokenizer;

pub mod hf;
mod train;

pub use train::{TrainOptions, train, write_tokenizer_config};

pub const BOS: &str = "<|begin_of_text|>";
pub const EOS: &str = "<|end_of_text|>";
pub const EOT: &str = "<|end_of_turn|>";
pub const PAD: &str = "<|pad|>";
pub const SYSTEM: &str = "<|system|>";
pub const USER: &str = "<|user|>";
pub const ASSISTANT: &str = "<|assistant|>";

/// cria's reserved tokens, ids 0..7 in this order in every tokenizer cria trains.
pub const SPECIAL_TOKENS: [&str; 7] = [BOS, EOS, EOT, PAD, SYSTEM, USER, ASSISTANT];

/// A byte range `[start, end)` of a text.
pub type Span = (usize, usize);

/// A loaded tokenizer plus the ids of the tokens generation and data preparation need.
#[derive(Clone)]
pub struct Tokenizer {
    pub inner: HfTokenizer,
    pub path: PathBuf,
    /// Ends a document; generation stops on it.
    pub eos_id: Option<u32>,
    pub bos_id: Option<u32>,
    /// The `pad_token` the tokenizer names, if any.
    pub pad_id_named: Option<u32>,
}

pub(crate) fn tok_err(path: &Path, e: impl std::fmt::Display) -> CoreError {
    CoreError::Tokenizer {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` with `tokenizer_config.json` beside it (if any) as transformers
    /// does (see [`hf`]): added and named special tokens, the class's own pipeline.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(CoreError::io(
                path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let (inner, named) = hf::load(path)?;
        // cria's own tokenizers name their tokens too; these are the fallbacks of a bare file.
        let id = |name: Option<&String>, fallback: &str| {
            inner.token_to_id(name.map_or(fallback, String::as_str))
        };
        Ok(Tokenizer {
            eos_id: id(named.eos.as_ref(), EOS),
            bos_id: id(named.bos.as_ref(), BOS),
            pad_id_named: named.pad.as_deref().and_then(|p| inner.token_to_id(p)),
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

    /// Ids and, per id, the byte span of `text` it came from (special tokens split out, no
    /// special tokens added).
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<Span>)> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| tok_err(&self.path, e))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| tok_err(&self.path, e))
    }

    /// The bytes one token stands for, as it would appear in decoded text: a byte-level
    /// token's raw bytes (which may be part of a character), a `<0xHH>` byte-fallback token's
    /// byte, a SentencePiece piece with `▁` as a space, an added token's content. (An API's
    /// per-token log-probabilities show these.)
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(piece) = self.inner.id_to_token(id) else {
            return vec![];
        };
        if self.inner.get_added_tokens_decoder().contains_key(&id) {
            return piece.into_bytes();
        }
        use tokenizers::DecoderWrapper as D;
        let byte_level = match self.inner.get_decoder() {
            Some(D::ByteLevel(_)) => true,
            Some(D::Sequence(s)) => s
                .get_decoders()
                .iter()
                .any(|d| matches!(d, D::ByteLevel(_))),
            _ => false,
        };
        if byte_level {
            return piece.chars().filter_map(byte_of_char).collect();
        }
        if let Some(hex) = piece.strip_prefix("<0x").and_then(|h| h.strip_suffix('>'))
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            return vec![b];
        }
        piece.replace('\u{2581}', " ").into_bytes()
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Adds `tokens` as special tokens (each split out of text as one id); returns how many
    /// were new.
    pub fn add_special_tokens(&mut self, tokens: &[&str]) -> usize {
        let added: Vec<tokenizers::AddedToken> = tokens
            .iter()
            .map(|t| tokenizers::AddedToken::from(*t, true))
            .collect();
        self.inner.add_special_tokens(&added)
    }

    /// The tokenizer as a `tokenizer.json` file's bytes.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let text = self
            .inner
            .to_string(true)
            .map_err(|e| tok_err(&self.path, e))?;
        Ok(text.into_bytes())
    }

    /// The id rows are padded with: cria's pad token, else the end-of-sequence token, else 0.
    /// Padding sits after a row's last real token or is masked, so it never changes a result;
    /// one rule keeps batches identical wherever they are built.
    pub fn pad_id(&self) -> u32 {
        self.token_to_id(PAD).or(self.eos_id).unwrap_or(0)
    }
}

/// The byte a character of GPT-2's byte-level alphabet stands for: printable bytes are
/// themselves, the other 68 are shifted past 255 in order.
fn byte_of_char(c: char) -> Option<u8> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let c = c as u32;
    if c < 256 && printable(c) {
        return Some(c as u8);
    }
    (0u32..256)
        .filter(|&b| !printable(b))
        .nth(c.checked_sub(256)? as usize)
        .map(|b| b as u8)
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
