//! One decoder-only transformer for LLaMA 1/2/3, Mistral, Qwen2 and TinyLlama (Touvron et al.
//! 2023): pre-norm blocks of grouped-query attention and SwiGLU with RMSNorm, rotary positions,
//! tied or untied output head. Weight names are Hugging Face's (`model.layers.{i}.self_attn.q_proj`).

use crate::config::{Head, ModelConfig};
use crate::error::Result;
use crate::nn::attention::LayerCache;
use crate::nn::{Attention, Mlp, RmsNorm, Rope};
use crate::params::{ParamMut, Params, join};
use crate::weights::VarBuilder;
use burn::tensor::{Device, Int, Tensor, module::embedding};

/// Longest rotary table built up front; longer contexts are refused with an error by callers.
pub const MAX_ROPE_TABLE: usize = 16384;

#[derive(Clone, Debug)]
pub struct Block {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    /// The MLP's input norm; with sandwich norms (Gemma), the attention output's norm.
    pub post_attention_layernorm: RmsNorm,
    /// Gemma's norms before and after the MLP.
    pub sandwich: Option<(RmsNorm, RmsNorm)>,
    pub mlp: Mlp,
}

impl Block {
    fn new(vb: &mut VarBuilder, name: &str, cfg: &ModelConfig, layer: usize) -> Result<Self> {
        let d = cfg.hidden_size;
        let sandwich = if cfg.extras.sandwich_norms {
            Some((
                RmsNorm::of(vb, &join(name, "pre_feedforward_layernorm"), d, cfg)?,
                RmsNorm::of(vb, &join(name, "post_feedforward_layernorm"), d, cfg)?,
            ))
        } else {
            None
        };
        Ok(Block {
            sandwich,
            input_layernorm: RmsNorm::of(vb, &join(name, "input_layernorm"), d, cfg)?,
            self_attn: Attention::new(
                vb,
                &join(name, "self_attn"),
                cfg,
                cfg.sliding_window[layer],
            )?,
            post_attention_layernorm: RmsNorm::of(
                vb,
                &join(name, "post_attention_layernorm"),
                d,
                cfg,
            )?,
            mlp: Mlp::new(vb, &join(name, "mlp"), cfg)?,
        })
    }

    /// # Shapes
    /// `(B, T, C)` -> `(B, T, C)`
    pub fn forward(&self, x: Tensor<3>, rope: &Rope, cache: Option<&mut LayerCache>) -> Tensor<3> {
        self.around(x, |h| self.self_attn.forward(h, rope, cache))
    }

    /// As [`Block::forward`] for independent sequences, one per row, each with its own cache
    /// (see [`Attention::forward_ragged`]).
    pub fn forward_ragged(
        &self,
        x: Tensor<3>,
        angles: &crate::nn::rope::RowAngles,
        caches: &mut [&mut super::ragged::RowLayer],
    ) -> Tensor<3> {
        self.around(x, |h| self.self_attn.forward_ragged(h, angles, caches))
    }

    /// The block's output at one position per row only, `at[r]` of row `r` (see
    /// [`Attention::forward_at`]): a reward model's last block.
    ///
    /// # Shapes
    /// `(B, T, C)` -> `(B, 1, C)`
    pub fn forward_at(&self, x: Tensor<3>, rope: &Rope, at: &[usize]) -> Tensor<3> {
        let a = self
            .self_attn
            .forward_at(self.input_layernorm.forward(x.clone()), rope, at);
        self.finish(crate::nn::attention::rows_at(x, at), a)
    }

    /// The block around its attention: norms, residuals and the MLP.
    fn around(&self, x: Tensor<3>, attn: impl FnOnce(Tensor<3>) -> Tensor<3>) -> Tensor<3> {
        let a = attn(self.input_layernorm.forward(x.clone()));
        self.finish(x, a)
    }

    /// The rest of the block after attention: `x` the block's input, `a` attention's output.
    fn finish(&self, x: Tensor<3>, a: Tensor<3>) -> Tensor<3> {
        match &self.sandwich {
            None => {
                let h = x + a;
                h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
            }
            Some((pre, post)) => {
                let h = x + self.post_attention_layernorm.forward(a);
                h.clone() + post.forward(self.mlp.forward(pre.forward(h)))
            }
        }
    }
}

impl Block {
    /// The seven projections by their Hugging Face module names.
    pub fn projections_mut(&mut self) -> [(&'static str, &mut crate::nn::Linear); 7] {
        let (a, m) = (&mut self.self_attn, &mut self.mlp);
        [
            ("q_proj", &mut a.q_proj),
            ("k_proj", &mut a.k_proj),
            ("v_proj", &mut a.v_proj),
            ("o_proj", &mut a.o_proj),
            ("gate_proj", &mut m.gate_proj),
            ("up_proj", &mut m.up_proj),
            ("down_proj", &mut m.down_proj),
        ]
    }
}

impl Params for Block {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        self.input_layernorm
            .visit(&join(prefix, "input_layernorm"), f);
        self.self_attn.visit(&join(prefix, "self_attn"), f);
        self.post_attention_layernorm
            .visit(&join(prefix, "post_attention_layernorm"), f);
        if let Some((pre, post)) = &mut self.sandwich {
            pre.visit(&join(prefix, "pre_feedforward_layernorm"), f);
            post.visit(&join(prefix, "post_feedforward_layernorm"), f);
        }
        self.mlp.visit(&join(prefix, "mlp"), f);
    }
}

/// Per-layer key/value caches for incremental decoding.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        KvCache {
            layers: vec![LayerCache::default(); layers],
        }
    }
    /// A cache for a left-padded batch whose row `b` starts at `starts[b]`.
    pub fn padded(layers: usize, starts: Vec<usize>) -> Self {
        KvCache {
            layers: vec![
                LayerCache {
                    kv: None,
                    starts: Some(starts),
                };
                layers
            ],
        }
    }
    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::len)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug)]
pub struct Llama {
    pub cfg: ModelConfig,
    /// `(V, C)`, as Hugging Face stores it.
    pub embed_tokens: Tensor<2>,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
    /// `None` when the output head is tied to the embeddings (or the model has a score head).
    pub lm_head: Option<crate::nn::Linear>,
    /// The scalar head of a reward or value model (`score`, hidden → 1, no bias).
    pub score: Option<crate::nn::Linear>,
    pub rope: Rope,
}

impl Llama {
    /// Builds the model, its weights coming from `vb` (a checkpoint or fresh initialisation).
    pub fn new(cfg: &ModelConfig, vb: &mut VarBuilder) -> Result<Self> {
        let device = vb.device.clone();
        if cfg.tie_word_embeddings {
            // Tied embeddings may be stored once under either name (transformers reads both).
            vb.alias_if_missing("model.embed_tokens.weight", "lm_head.weight");
        }
        let embed_tokens = vb.matrix(
            "model.embed_tokens.weight",
            cfg.vocab_size,
            cfg.hidden_size,
            false,
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Block::new(vb, &format!("model.layers.{i}"), cfg, i))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::of(vb, "model.norm", cfg.hidden_size, cfg)?;
        let score = if cfg.head == Head::Score {
            Some(crate::nn::Linear::new(
                vb,
                "score",
                cfg.hidden_size,
                1,
                false,
            )?)
        } else {
            None
        };
        // Some tied checkpoints still carry lm_head.weight; it equals the embeddings then.
        let lm_head = if cfg.head == Head::Score {
            None
        } else if cfg.tie_word_embeddings {
            if vb.contains("lm_head.weight") {
                vb.matrix("lm_head.weight", cfg.vocab_size, cfg.hidden_size, true)?;
            }
            None
        } else {
            Some(crate::nn::Linear::new(
                vb,
                "lm_head",
                cfg.hidden_size,
                cfg.vocab_size,
                false,
            )?)
        };
        let rope = Rope::new(cfg, cfg.context(), &device);
        Ok(Llama {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            score,
            rope,
        })
    }

    pub fn device(&self) -> Device {
        self.embed_tokens.device()
    }

    /// Longest sequence (prompt plus cache) this model instance can process.
    pub fn max_len(&self) -> usize {
        self.rope.max_len
    }

    /// Final hidden states, after the last norm.
    ///
    /// # Shapes
    /// `ids`: `(B, T)` -> `(B, T, C)`
    pub fn hidden(&self, ids: Tensor<2, Int>, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let mut x = self.embed(ids);
        for (i, block) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = block.forward(x, &self.rope, layer_cache);
        }
        self.norm.forward(x)
    }

    /// Token embeddings (scaled where the model does).
    ///
    /// # Shapes
    /// `ids`: `(B, T)` -> `(B, T, C)`
    pub(crate) fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let pad = self
            .cfg
            .pad_token_id
            .filter(|_| self.device().is_autodiff());
        let pad_mask = pad.map(|p| {
            ids.clone()
                .equal_elem(p as i64)
                .float()
                .unsqueeze_dim::<3>(2)
        });
        let mut x = embedding(self.embed_tokens.clone(), ids);
        if let Some(m) = pad_mask {
            // As PyTorch's `nn.Embedding(padding_idx=pad_token_id)` in transformers' models:
            // the pad token's row gets no gradient through the lookup (the values are
            // unchanged: x·1 + 0). Its row may still learn as a tied output head.
            x = x.clone() * (m.clone().neg() + 1.0) + x.detach() * m;
        }
        if self.cfg.extras.scale_embeddings {
            // transformers multiplies by sqrt(hidden_size) cast to the weights' dtype (f32).
            x = x * ((self.cfg.hidden_size as f64).sqrt() as f32) as f64;
        }
        x
    }

    /// Projects hidden states to vocabulary logits.
    ///
    /// # Shapes
    /// `(B, T, C)` -> `(B, T, V)`
    pub fn logits(&self, h: Tensor<3>) -> Tensor<3> {
        assert!(
            self.score.is_none(),
            "logits() on a reward model: it has a score head, not a language-model head"
        );
        match &self.lm_head {
            Some(head) => head.forward(h),
            None => burn::tensor::module::linear(h, self.embed_tokens.clone().transpose(), None),
        }
    }

    /// The score head's output at each row's last token (position `lengths[i] - 1`), minus the
    /// reward offset: one reward per sequence, read at `positions` (see
    /// [`Llama::reward_positions`]).
    ///
    /// # Shapes
    /// `ids`: `(B, T)` -> `(B,)`
    pub fn rewards(&self, ids: Tensor<2, Int>, positions: &[usize]) -> Tensor<1> {
        let [b, t] = ids.dims();
        assert_eq!(positions.len(), b, "one position per row");
        let score = self
            .score
            .as_ref()
            .expect("rewards() needs a model with a score head");
        let at: Vec<usize> = positions.iter().map(|&p| p.min(t - 1)).collect();
        // Only the read positions' outputs matter after the last block's keys and values: it
        // runs its queries, output projection and MLP at those alone.
        let mut x = self.embed(ids);
        let rows = match self.layers.split_last() {
            Some((last, rest)) => {
                for block in rest {
                    x = block.forward(x, &self.rope, None);
                }
                last.forward_at(x, &self.rope, &at)
            }
            None => crate::nn::attention::rows_at(x, &at),
        };
        let rows = self.norm.forward(rows).reshape([b, self.cfg.hidden_size]);
        let r = burn::tensor::module::linear(rows, score.weight.clone(), None).reshape([b]);
        if self.cfg.reward_offset != 0.0 {
            r - self.cfg.reward_offset
        } else {
            r
        }
    }

    /// Grows the vocabulary to `vocab` entries, each new embedding (and output) row the mean of
    /// the existing ones, as transformers' `resize_token_embeddings(mean_resizing=True)` and
    /// TRL's `setup_chat_format` start new chat tokens. A no-op when it is large enough.
    pub fn resize_vocab(&mut self, vocab: usize) {
        let old = self.cfg.vocab_size;
        if vocab <= old {
            return;
        }
        let device = self.device();
        let c = self.cfg.hidden_size;
        // (V, C): rows appended.
        let mut e = crate::params::to_vec(self.embed_tokens.clone());
        let mean: Vec<f32> = (0..c)
            .map(|j| (0..old).map(|i| e[i * c + j]).sum::<f32>() / old as f32)
            .collect();
        for _ in old..vocab {
            e.extend_from_slice(&mean);
        }
        self.embed_tokens =
            Tensor::from_data(burn::tensor::TensorData::new(e, [vocab, c]), &device);
        if let Some(head) = &mut self.lm_head {
            // (C, V) in burn's layout: a column per token.
            let w = crate::params::to_vec(head.weight.clone());
            let mut out = Vec::with_capacity(c * vocab);
            for j in 0..c {
                let row = &w[j * old..(j + 1) * old];
                out.extend_from_slice(row);
                let m = row.iter().sum::<f32>() / old as f32;
                out.extend(std::iter::repeat_n(m, vocab - old));
            }
            head.weight =
                Tensor::from_data(burn::tensor::TensorData::new(out, [c, vocab]), &device);
        }
        self.cfg.vocab_size = vocab;
    }

    /// Where each row's reward is read, as `…ForSequenceClassification` picks it: the
    /// rightmost token of the row's first `lengths[i]` that is not `pad_token_id` (so a row
    /// ending in an end-of-sequence token that doubles as the pad is scored before it), the
    /// row's last token when no pad id is set.
    ///
    /// # Shapes
    /// `ids`: `B*T` row-major ids -> `B` positions
    pub fn reward_positions(&self, ids: &[u32], t: usize, lengths: &[usize]) -> Vec<usize> {
        let pad = self.cfg.pad_token_id;
        lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let row = &ids[i * t..i * t + n.clamp(1, t)];
                match pad {
                    None => row.len() - 1,
                    Some(p) => row.iter().rposition(|&x| x != p).unwrap_or(0),
                }
            })
            .collect()
    }

    /// The score head at every position, minus the reward offset: a value model's estimate of
    /// each prefix (PPO's critic).
    ///
    /// # Shapes
    /// `ids`: `(B, T)` -> `(B, T)`
    pub fn scores(&self, ids: Tensor<2, Int>) -> Tensor<2> {
        let [b, t] = ids.dims();
        let score = self
            .score
            .as_ref()
            .expect("scores() needs a model with a score head");
        let h = self.hidden(ids, None);
        let v = score.forward(h).reshape([b, t]);
        if self.cfg.reward_offset != 0.0 {
            v - self.cfg.reward_offset
        } else {
            v
        }
    }

    /// Replaces the language-model head with a fresh score head (`N(0, initializer_range)`),
    /// turning a causal LM (an SFT checkpoint) into the start of a reward or value model.
    pub fn into_reward_model(mut self, seed: u64) -> Self {
        let device = self.device();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let values =
            crate::weights::normal_vec(&mut rng, self.cfg.hidden_size, self.cfg.initializer_range);
        self.score = Some(crate::nn::Linear {
            weight: Tensor::from_data(
                burn::tensor::TensorData::new(values, [self.cfg.hidden_size, 1]),
                &device,
            ),
            bias: None,
            lora: None,
        });
        self.lm_head = None;
        self.cfg.head = Head::Score;
        self.cfg.reward_offset = 0.0;
        self
    }

    /// Logits for every position.
    ///
    /// # Shapes
    /// `ids`: `(B, T)` -> `(B, T, V)`
    pub fn forward(&self, ids: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        self.logits(self.hidden(ids, cache))
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Marks every parameter as requiring gradients (call on a model on an autodiff device).
    pub fn require_grad(self) -> Self {
        self.require_grad_where(&|_| true)
    }

    /// Marks the parameters whose names `trainable` accepts as requiring gradients; the rest
    /// stay frozen (no gradient is computed or kept for them).
    pub fn require_grad_where(mut self, trainable: &dyn Fn(&str) -> bool) -> Self {
        self.visit("", &mut |name, p| {
            if trainable(name) {
                match p {
                    ParamMut::Vector(t) => *t = t.clone().require_grad(),
                    ParamMut::Matrix { t, .. } => *t = t.clone().require_grad(),
                }
            }
        });
        self
    }

    /// Moves every parameter to `device` (and so in or out of autodiff), dropping any graph.
    pub fn to_device(mut self, device: &Device) -> Self {
        let grad = device.is_autodiff();
        self.visit("", &mut |_, p| match p {
            ParamMut::Vector(t) => *t = move_to(t.clone(), device, grad),
            ParamMut::Matrix { t, .. } => *t = move_to(t.clone(), device, grad),
        });
        self.rope = Rope::new(&self.cfg, self.rope.max_len, device);
        self
    }

    /// Number of scalar parameters.
    pub fn num_params(&mut self) -> usize {
        let mut n = 0;
        self.visit("", &mut |_, p| n += p.num_elements());
        n
    }
}

fn move_to<const D: usize>(t: Tensor<D>, device: &Device, autodiff: bool) -> Tensor<D> {
    let t = t.detach().inner().to_device(&device.clone().inner());
    if autodiff { t.autodiff() } else { t }
}

impl Params for Llama {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        f(
            &join(prefix, "model.embed_tokens.weight"),
            ParamMut::Matrix {
                t: &mut self.embed_tokens,
                transposed: false,
            },
        );
        for (i, b) in self.layers.iter_mut().enumerate() {
            b.visit(&join(prefix, &format!("model.layers.{i}")), f);
        }
        self.norm.visit(&join(prefix, "model.norm"), f);
        if let Some(h) = &mut self.lm_head {
            h.visit(&join(prefix, "lm_head"), f);
        }
        if let Some(h) = &mut self.score {
            h.visit(&join(prefix, "score"), f);
        }
    }
}
