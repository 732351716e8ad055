//! What the engine runs: a model that reads a prompt into a sequence's cache and then decodes
//! one token for many sequences in one pass. Two kinds implement it: a checkpoint loaded into
//! burn ([`Llama`], adapters included) and a GGUF file's quantized weights ([`QModel`]).

use cria_core::model::ragged::RowCache;
use cria_core::tokenizer::Tokenizer;
use cria_core::{Int, KvCache, Llama, Tensor, TensorData};
use cria_gguf::infer::{QCache, QModel};

/// A model the engine can schedule.
pub trait Runner: Send + 'static {
    /// One sequence's keys and values.
    type Cache: Clone + Send + 'static;

    fn new_cache(&self) -> Self::Cache;
    /// The longest prompt plus reply.
    fn max_len(&self) -> usize;
    /// Token ids it embeds (`0..vocab`).
    fn vocab(&self) -> usize;
    /// Ids that end a sequence, as the model's own files name them.
    fn eos_ids(&self, tok: &Tokenizer) -> Vec<u32>;
    /// Reads `ids` after `cache`, returning the logits `want` asks for (row-major).
    fn prefill(&self, ids: &[u32], cache: &mut Self::Cache, want: Want) -> Vec<f32>;
    /// One id per sequence, each read after its own cache, in one batched pass; the logits
    /// `[ids.len(), vocab]` row-major.
    fn decode(&self, ids: &[u32], caches: &mut [&mut Self::Cache]) -> Vec<f32>;
    /// A new cache holding the first `n` positions of `cache` (a shared prompt prefix).
    fn prefix(&self, cache: &Self::Cache, n: usize) -> Self::Cache;
}

/// Which logits a prefill returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// None (a part of a prompt whose end is still to come).
    Nothing,
    /// After the last id (the first reply token is sampled from them).
    Last,
    /// After every id (the prompt's own log-probabilities).
    All,
}

/// A checkpoint's cache: tensors while a prompt is read through the model's own path, plain
/// per-row buffers once it decodes with others ([`Llama::decode_rows`]).
#[derive(Clone)]
pub enum LlamaCache {
    Tensors(KvCache),
    Rows(RowCache),
}

impl Runner for Llama {
    type Cache = LlamaCache;

    fn new_cache(&self) -> LlamaCache {
        LlamaCache::Tensors(Llama::new_cache(self))
    }

    fn max_len(&self) -> usize {
        Llama::max_len(self)
    }

    fn vocab(&self) -> usize {
        self.cfg.vocab_size
    }

    fn eos_ids(&self, _tok: &Tokenizer) -> Vec<u32> {
        self.cfg.eos_token_id.clone()
    }

    fn prefill(&self, ids: &[u32], cache: &mut LlamaCache, want: Want) -> Vec<f32> {
        if let LlamaCache::Rows(r) = cache {
            *cache = LlamaCache::Tensors(r.to_cache(r.len(), &self.device()));
        }
        let LlamaCache::Tensors(kv) = cache else {
            unreachable!("made tensors above")
        };
        let n = ids.len();
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(ids.iter().map(|&t| t as i64).collect::<Vec<_>>(), [1, n]),
            &self.device(),
        );
        let h = self.hidden(ids, Some(kv));
        let h = match want {
            Want::Nothing => return vec![],
            Want::All => h,
            Want::Last => {
                let c = h.dims()[2];
                h.narrow(1, n - 1, 1).reshape([1, 1, c])
            }
        };
        cria_core::params::to_vec(self.logits(h))
    }

    fn decode(&self, ids: &[u32], caches: &mut [&mut LlamaCache]) -> Vec<f32> {
        let mut rows: Vec<&mut RowCache> = caches
            .iter_mut()
            .map(|c| {
                if let LlamaCache::Tensors(kv) = &**c {
                    **c = LlamaCache::Rows(RowCache::from_cache(kv));
                }
                match &mut **c {
                    LlamaCache::Rows(r) => r,
                    LlamaCache::Tensors(_) => unreachable!("made rows above"),
                }
            })
            .collect();
        cria_core::params::to_vec(self.decode_rows(ids, &mut rows))
    }

    fn prefix(&self, cache: &LlamaCache, n: usize) -> LlamaCache {
        let rows = match cache {
            LlamaCache::Rows(r) => r,
            LlamaCache::Tensors(kv) => &RowCache::from_cache(kv),
        };
        LlamaCache::Tensors(rows.to_cache(n, &self.device()))
    }
}

impl Runner for QModel {
    type Cache = QCache;

    fn new_cache(&self) -> QCache {
        QModel::new_cache(self)
    }

    fn max_len(&self) -> usize {
        self.cfg.context
    }

    fn vocab(&self) -> usize {
        self.cfg.vocab
    }

    fn eos_ids(&self, tok: &Tokenizer) -> Vec<u32> {
        cria_gguf::tokenizer::stop_ids(&self.file, tok)
    }

    fn prefill(&self, ids: &[u32], cache: &mut QCache, want: Want) -> Vec<f32> {
        // The last row's logits cost one row of the output matrix: not worth a third mode.
        self.forward_rows(&mut [(ids, cache)], want == Want::All)
            .concat()
    }

    fn decode(&self, ids: &[u32], caches: &mut [&mut QCache]) -> Vec<f32> {
        let mut seqs: Vec<(&[u32], &mut QCache)> = ids
            .chunks(1)
            .zip(caches.iter_mut())
            .map(|(id, c)| (id, &mut **c))
            .collect();
        self.forward_rows(&mut seqs, false).concat()
    }

    fn prefix(&self, cache: &QCache, n: usize) -> QCache {
        cache.prefix(n)
    }
}
