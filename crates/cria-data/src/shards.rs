//! Token shards: a corpus tokenised once into flat little-endian `u32` files that are memory-
//! mapped for training. Documents are joined as `[BOS] doc EOS` (BOS when the tokenizer's
//! post-processor adds it), then cut into fixed-length sequences; the last fraction of the
//! stream is held out for validation. Sequence order is a seeded permutation per epoch.

use crate::corpus::Document;
use crate::error::{DataError, Result};
use cria_core::tokenizer::Tokenizer;
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardMeta {
    pub train_tokens: usize,
    pub val_tokens: usize,
    pub documents: usize,
    pub vocab_size: usize,
    /// Identifies the corpus and tokenizer the shards were built from.
    pub fingerprint: String,
}

/// Tokenises documents into one stream, each ended by the end-of-text token.
pub fn tokenize(docs: &[Document], tok: &Tokenizer) -> Result<Vec<u32>> {
    let eos = tok.eos_id.ok_or_else(|| cria_core::CoreError::Tokenizer {
        path: tok.path.clone(),
        msg: "no end-of-text token (eos_token) to join documents with".into(),
    })?;
    let parts: Vec<Vec<u32>> = docs
        .par_iter()
        .map(|d| {
            let mut ids = tok.encode(&d.text, true)?;
            ids.push(eos);
            Ok(ids)
        })
        .collect::<std::result::Result<_, cria_core::CoreError>>()?;
    Ok(parts.concat())
}

fn write_u32s(path: &Path, ids: &[u32]) -> Result<()> {
    let bytes: Vec<u8> = ids.iter().flat_map(|x| x.to_le_bytes()).collect();
    cria_core::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

/// Writes `train.bin`, `val.bin` and `meta.json` into `dir`, holding out the last `val_fraction`
/// of the stream (at least one sequence's worth when the corpus allows).
pub fn write_shards(
    dir: &Path,
    ids: &[u32],
    val_fraction: f64,
    meta: ShardMeta,
) -> Result<ShardMeta> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let val = ((ids.len() as f64) * val_fraction).round() as usize;
    let split = ids.len() - val.min(ids.len());
    write_u32s(&dir.join("train.bin"), &ids[..split])?;
    write_u32s(&dir.join("val.bin"), &ids[split..])?;
    let meta = ShardMeta {
        train_tokens: split,
        val_tokens: ids.len() - split,
        ..meta
    };
    let text = serde_json::to_string_pretty(&meta).expect("serialisable");
    cria_core::fsutil::write_atomic(&dir.join("meta.json"), text.as_bytes())?;
    Ok(meta)
}

/// Reads `meta.json` if the shards in `dir` are complete.
pub fn read_meta(dir: &Path) -> Option<ShardMeta> {
    let text = std::fs::read_to_string(dir.join("meta.json")).ok()?;
    let meta: ShardMeta = serde_json::from_str(&text).ok()?;
    (dir.join("train.bin").exists() && dir.join("val.bin").exists()).then_some(meta)
}

/// A memory-mapped token file cut into sequences of `seq_len + 1` tokens (inputs and shifted
/// targets), consecutive sequences sharing one boundary token.
pub struct TokenFile {
    pub path: PathBuf,
    mmap: Option<memmap2::Mmap>,
    pub seq_len: usize,
}

impl TokenFile {
    pub fn open(path: &Path, seq_len: usize) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
        if len % 4 != 0 {
            return Err(DataError::Shard {
                path: path.to_path_buf(),
                msg: format!("size {len} is not a multiple of 4 bytes; rebuild the shards"),
            });
        }
        // SAFETY: shards are written once under a temporary name and renamed; nothing writes
        // them while mapped.
        let mmap = if len == 0 {
            None
        } else {
            Some(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?)
        };
        Ok(TokenFile {
            path: path.to_path_buf(),
            mmap,
            seq_len,
        })
    }

    pub fn num_tokens(&self) -> usize {
        self.mmap.as_ref().map_or(0, |m| m.len() / 4)
    }

    pub fn num_sequences(&self) -> usize {
        self.num_tokens().saturating_sub(1) / self.seq_len
    }

    /// Tokens `i*T .. i*T + T + 1`.
    pub fn sequence(&self, i: usize) -> Vec<u32> {
        let m = self.mmap.as_ref().expect("sequence() on an empty file");
        let start = i * self.seq_len * 4;
        m[start..start + (self.seq_len + 1) * 4]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

/// The order sequences are visited in: a fresh seeded permutation each epoch, so position `k`
/// of the run always maps to the same sequence for a given seed (what exact resume relies on).
pub struct Order {
    seed: u64,
    n: usize,
    epoch: Option<(u64, Vec<usize>)>,
}

impl Order {
    pub fn new(seed: u64, n: usize) -> Self {
        Order {
            seed,
            n,
            epoch: None,
        }
    }

    /// The sequence index at global position `k`.
    pub fn index(&mut self, k: u64) -> usize {
        let epoch = k / self.n as u64;
        if self.epoch.as_ref().map(|e| e.0) != Some(epoch) {
            let mut perm: Vec<usize> = (0..self.n).collect();
            let mut rng =
                StdRng::seed_from_u64(self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            perm.shuffle(&mut rng);
            self.epoch = Some((epoch, perm));
        }
        self.epoch.as_ref().expect("set above").1[(k % self.n as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_permutation_per_epoch_and_reproducible() {
        let mut a = Order::new(3, 10);
        let mut b = Order::new(3, 10);
        let e0: Vec<usize> = (0..10).map(|k| a.index(k)).collect();
        let mut sorted = e0.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let e1: Vec<usize> = (10..20).map(|k| a.index(k)).collect();
        assert_ne!(e0, e1, "each epoch reshuffles");
        // Jumping straight to a later position (as a resumed run does) gives the same index.
        assert_eq!(b.index(13), e1[3]);
        assert_eq!(b.index(4), e0[4]);
    }

    #[test]
    fn sequences_share_boundary_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<u32> = (0..11).collect();
        write_u32s(&dir.path().join("t.bin"), &ids).unwrap();
        let f = TokenFile::open(&dir.path().join("t.bin"), 4).unwrap();
        // 11 tokens, T=4: sequences [0..5) and [4..9); the tail 9,10 cannot make a full one.
        assert_eq!(f.num_sequences(), 2);
        assert_eq!(f.sequence(0), vec![0, 1, 2, 3, 4]);
        assert_eq!(f.sequence(1), vec![4, 5, 6, 7, 8]);
    }
}
