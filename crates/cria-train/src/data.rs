//! Where a stage's batches come from: the [`DataSource`] the training loop reads, examples in a
//! seeded order ([`Shuffled`]: SFT rows, preference groups), token shards of a corpus
//! ([`TokenShards`]: pretraining, PPO-ptx), and the one rule for holding out validation
//! examples.

use crate::batch::{self, Batch};
use crate::error::{Result, TrainError};
use cria_core::hash::{FNV_OFFSET, fnv1a};
use cria_core::tokenizer::Tokenizer;
use cria_data::corpus;
use cria_data::records::Rejects;
use cria_data::shards::{self, Order, ShardMeta, TokenFile};
use std::path::{Path, PathBuf};

/// Where a stage's batches come from. `train_batch(k)` must return the same batch for the same
/// `k` in every run: exact resume depends on it.
pub trait DataSource {
    fn train_batch(&mut self, k: u64) -> Result<Batch>;
    fn val_batches(&mut self, n: usize) -> Result<Vec<Batch>>;
    /// Identifies the data, so a resume on different data is refused.
    fn fingerprint(&self) -> String;
}

/// The readers' policy for malformed records: fail naming the record (the default), or with
/// `data.skip_invalid` skip it and keep it for the rejects file.
pub fn rejects(skip_invalid: bool) -> Rejects {
    if skip_invalid {
        Rejects::skipping()
    } else {
        Rejects::strict()
    }
}

/// With `data.skip_invalid`, writes the skipped records to `out/rejects.jsonl` (and logs how
/// many were skipped for each reason); rank 0 alone in a run of several.
pub fn write_rejects(rejects: &Rejects, out: &Path) -> Result<()> {
    use crate::collective::CollectiveExt;
    // Every rank reads the same records; rank 0 writes what was skipped.
    if rejects.skip && crate::collective::world().is_root() {
        std::fs::create_dir_all(out).map_err(|e| cria_core::CoreError::io(out, e))?;
        rejects.write(&out.join("rejects.jsonl"))?;
    }
    Ok(())
}

/// Splits off `fraction` of `items` (at least one, never all) for validation, in a seeded
/// order; with fewer than two items or a fraction of 0 nothing is held out.
pub fn hold_out<T: Clone>(items: Vec<T>, fraction: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    if fraction <= 0.0 || items.len() < 2 {
        return (items, vec![]);
    }
    let mut order = Order::new(seed, items.len());
    let n_val = ((items.len() as f64 * fraction).round() as usize).clamp(1, items.len() - 1);
    let mut shuffled: Vec<T> = (0..items.len() as u64)
        .map(|k| items[order.index(k)].clone())
        .collect();
    let val = shuffled.split_off(shuffled.len() - n_val);
    (shuffled, val)
}

/// Examples served `batch_size` per micro-batch in a seeded order (validation in file order),
/// `make` turning the chosen examples into a batch: SFT rows and preference groups both.
pub struct Shuffled<T> {
    pub train: Vec<T>,
    pub val: Vec<T>,
    batch_size: usize,
    fingerprint: String,
    order: Order,
    make: MakeBatch<T>,
}

/// Turns the examples chosen for a micro-batch into a batch.
type MakeBatch<T> = Box<dyn Fn(&[&T]) -> Batch>;

impl<T> Shuffled<T> {
    pub fn new(
        train: Vec<T>,
        val: Vec<T>,
        seed: u64,
        batch_size: usize,
        fingerprint: String,
        make: impl Fn(&[&T]) -> Batch + 'static,
    ) -> Self {
        Shuffled {
            order: Order::new(seed, train.len()),
            train,
            val,
            batch_size,
            fingerprint,
            make: Box::new(make),
        }
    }
}

impl<T> DataSource for Shuffled<T> {
    fn train_batch(&mut self, k: u64) -> Result<Batch> {
        let bs = self.batch_size as u64;
        let rows: Vec<&T> = (0..bs)
            .map(|j| &self.train[self.order.index(k * bs + j)])
            .collect();
        Ok((self.make)(&rows))
    }

    fn val_batches(&mut self, n: usize) -> Result<Vec<Batch>> {
        Ok(self
            .val
            .chunks(self.batch_size)
            .take(n)
            .map(|c| (self.make)(&c.iter().collect::<Vec<_>>()))
            .collect())
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

/// What a corpus becomes: which files, cut into windows of `seq_len + 1` tokens, with
/// `val_fraction` of the token stream held out.
pub struct CorpusSpec<'a> {
    pub inputs: &'a [PathBuf],
    pub seq_len: usize,
    pub val_fraction: f64,
    /// Seed of the window order.
    pub seed: u64,
    /// Windows per micro-batch.
    pub batch_size: usize,
}

/// Token shards of a corpus, memory-mapped, served in a seeded order.
pub struct TokenShards {
    pub train: TokenFile,
    pub val: TokenFile,
    order: Order,
    batch_size: usize,
    fingerprint: String,
}

/// A fingerprint of the tokenizer, the corpus files and the split (shards are rebuilt when it
/// changes).
fn corpus_fingerprint(spec: &CorpusSpec<'_>, tok: &Tokenizer, files: &[PathBuf]) -> Result<u64> {
    let bytes = std::fs::read(&tok.path).map_err(|e| cria_core::CoreError::io(&tok.path, e))?;
    let mut h = fnv1a(&bytes, FNV_OFFSET);
    for f in files {
        h = fnv1a(f.to_string_lossy().as_bytes(), h);
        h = fnv1a(&corpus::read_bytes(f)?, h);
    }
    Ok(fnv1a(format!("{}", spec.val_fraction).as_bytes(), h))
}

impl TokenShards {
    /// Tokenises the corpus into `dir` (reusing shards built from the same corpus and tokenizer).
    pub fn prepare(spec: &CorpusSpec<'_>, tok: &Tokenizer, dir: &Path) -> Result<Self> {
        let files = corpus::collect_files(spec.inputs)?;
        let fp = format!("{:016x}", corpus_fingerprint(spec, tok, &files)?);
        let meta = match shards::read_meta(dir).filter(|m| m.fingerprint == fp) {
            Some(m) => m,
            None => {
                let docs = corpus::read_corpus(spec.inputs)?;
                tracing::info!(documents = docs.len(), "tokenising corpus");
                let ids = shards::tokenize(&docs, tok)?;
                let meta = ShardMeta {
                    train_tokens: 0,
                    val_tokens: 0,
                    documents: docs.len(),
                    vocab_size: tok.vocab_size(),
                    fingerprint: fp.clone(),
                };
                shards::write_shards(dir, &ids, spec.val_fraction, meta)?
            }
        };
        let seq_len = spec.seq_len;
        let train = TokenFile::open(&dir.join("train.bin"), seq_len)?;
        let val = TokenFile::open(&dir.join("val.bin"), seq_len)?;
        if train.num_sequences() == 0 {
            return Err(TrainError::Invalid(format!(
                "the corpus has {} training tokens, fewer than one sequence of seq_len {} + 1; \
                 add text or lower data.seq_len",
                meta.train_tokens, seq_len
            )));
        }
        tracing::info!(
            train_tokens = meta.train_tokens,
            val_tokens = meta.val_tokens,
            sequences = train.num_sequences(),
            "token shards ready"
        );
        Ok(TokenShards {
            order: Order::new(spec.seed, train.num_sequences()),
            train,
            val,
            batch_size: spec.batch_size,
            fingerprint: format!("{fp} seq_len={seq_len}"),
        })
    }
}

impl DataSource for TokenShards {
    fn train_batch(&mut self, k: u64) -> Result<Batch> {
        let bs = self.batch_size as u64;
        let idx: Vec<usize> = (0..bs).map(|j| self.order.index(k * bs + j)).collect();
        Ok(batch::windows(
            idx.into_iter().map(|i| self.train.sequence(i)),
        ))
    }

    fn val_batches(&mut self, n: usize) -> Result<Vec<Batch>> {
        let total = self.val.num_sequences();
        let bs = self.batch_size;
        Ok((0..n)
            .map(|i| i * bs..((i + 1) * bs).min(total))
            .filter(|r| !r.is_empty())
            .map(|r| batch::windows(r.map(|i| self.val.sequence(i))))
            .collect())
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}
