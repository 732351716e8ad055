//! The model configuration, read from and written to Hugging Face `config.json`.
//!
//! One struct covers `LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM`,
//! `Qwen3ForCausalLM` (q/k RMSNorm) and `Phi3ForCausalLM` (fused projections). Both the
//! older (`rope_theta`, `rope_scaling`, `torch_dtype`) and the newer (`rope_parameters`, `dtype`)
//! spellings are read. Keys that would change the numerics and that cria does not implement are
//! errors, as are keys nobody wrote for these architectures: a silent misread would give a
//! model that loads and then talks nonsense.

use crate::error::{CoreError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    /// Qwen2's layout with an RMSNorm over each head's queries and keys, no q/k/v bias.
    Qwen3,
    /// LLaMA's blocks with q/k/v stored as one `qkv_proj` and gate/up as one `gate_up_proj`
    /// (split at load, fused again at save).
    Phi3,
    /// Gemma 3's text model: the [`Extras`] all on, local and global attention layers.
    Gemma3,
}

/// Layer choices beyond LLaMA's, all off for LLaMA, Mistral, Qwen and Phi-3 and on for Gemma 3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Extras {
    /// Norm weights are offsets from one: the scale is `1 + w` (Gemma's RMSNorm).
    pub norm_plus_one: bool,
    /// The MLP's gate is GELU (tanh approximation) instead of SiLU: GeGLU.
    pub gelu_gate: bool,
    /// Token embeddings are multiplied by `sqrt(hidden_size)`.
    pub scale_embeddings: bool,
    /// Attention scores scale by `query_pre_attn_scalar^-1/2` instead of `head_dim^-1/2`.
    pub query_pre_attn_scalar: Option<f64>,
    /// A norm after attention and one on each side of the MLP (four per block).
    pub sandwich_norms: bool,
    /// The RoPE base of sliding-window layers (Gemma 3's local layers); global ones use
    /// `rope_theta` and `rope_scaling`.
    pub local_rope_theta: Option<f64>,
}

/// What sits on top of the final norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Head {
    /// Vocabulary logits (`…ForCausalLM`).
    #[default]
    Lm,
    /// One scalar per sequence, read at its last token (`…ForSequenceClassification` with
    /// `num_labels = 1`): a reward or value model.
    Score,
}

impl Arch {
    pub fn class_name(self) -> &'static str {
        self.class_name_with(Head::Lm)
    }
    pub fn class_name_with(self, head: Head) -> &'static str {
        match (self, head) {
            (Arch::Llama, Head::Lm) => "LlamaForCausalLM",
            (Arch::Mistral, Head::Lm) => "MistralForCausalLM",
            (Arch::Qwen2, Head::Lm) => "Qwen2ForCausalLM",
            (Arch::Qwen3, Head::Lm) => "Qwen3ForCausalLM",
            (Arch::Phi3, Head::Lm) => "Phi3ForCausalLM",
            (Arch::Gemma3, Head::Lm) => "Gemma3ForCausalLM",
            (Arch::Llama, Head::Score) => "LlamaForSequenceClassification",
            (Arch::Mistral, Head::Score) => "MistralForSequenceClassification",
            (Arch::Qwen2, Head::Score) => "Qwen2ForSequenceClassification",
            (Arch::Qwen3, Head::Score) => "Qwen3ForSequenceClassification",
            (Arch::Phi3, Head::Score) => "Phi3ForSequenceClassification",
            (Arch::Gemma3, Head::Score) => "Gemma3TextForSequenceClassification",
        }
    }
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Phi3 => "phi3",
            Arch::Gemma3 => "gemma3_text",
        }
    }
    const ALL: [Arch; 6] = [
        Arch::Llama,
        Arch::Mistral,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::Phi3,
        Arch::Gemma3,
    ];
    fn from_class(name: &str) -> Option<(Arch, Head)> {
        Self::ALL.into_iter().find_map(|a| {
            [Head::Lm, Head::Score]
                .into_iter()
                .find(|&h| a.class_name_with(h) == name)
                .map(|h| (a, h))
        })
    }
    fn from_model_type(name: &str) -> Option<Arch> {
        Self::ALL.into_iter().find(|a| a.model_type() == name)
    }
}

/// RoPE frequency scaling (`rope_scaling` / `rope_parameters`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// LLaMA 3.1's piecewise scaling of the inverse frequencies.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub head: Head,
    /// Subtracted from a score head's output (`cria_reward_offset` in `config.json`): set after
    /// reward-model training so a reference set's rewards average 0. transformers' classes
    /// have no bias on `score`, so their raw score is cria's reward plus this offset.
    pub reward_offset: f64,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (Qwen2 always; LLaMA and Qwen3 with `attention_bias`).
    pub qkv_bias: bool,
    /// RMSNorm (weights `q_norm`, `k_norm`, over `head_dim`) of each head's queries and keys
    /// before RoPE (Qwen3).
    pub qk_norm: bool,
    /// Bias on the output projection (LLaMA's `attention_bias` covers o_proj too).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Per layer: `Some(w)` when the layer attends to the last `w` keys only.
    pub sliding_window: Vec<Option<usize>>,
    pub initializer_range: f64,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// Gemma's layer choices (all off for the other families).
    pub extras: Extras,
}

/// Gemma 3's keys, known for that architecture only: elsewhere they would be misread.
const GEMMA3_KEYS: &[&str] = &[
    "hidden_activation",
    "query_pre_attn_scalar",
    "final_logit_softcapping",
    "attn_logit_softcapping",
    "use_bidirectional_attention",
    "_sliding_window_pattern",
    "sliding_window_pattern",
    "rope_local_base_freq",
];

/// Every key cria reads below, plus those transformers writes that do not change the forward
/// pass. Anything else is an error.
const KNOWN_KEYS: &[&str] = &[
    "transformers_version",
    "use_cache",
    "attention_dropout",
    "pretraining_tp",
    "torch_dtype",
    "dtype",
    "_name_or_path",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "model_type",
    "architectures",
    "id2label",
    "label2id",
    "problem_type",
    "num_labels",
    "max_window_layers",
    "use_sliding_window",
    "layer_types",
    "sliding_window",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "hidden_act",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "initializer_range",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "head_dim",
    "num_key_value_heads",
    "rms_norm_eps",
    "max_position_embeddings",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "cria_reward_offset",
    "tokenizer_class",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "tie_encoder_decoder",
    "add_cross_attention",
    "cross_attention_hidden_size",
    "is_decoder",
    "pruned_heads",
    "finetuning_task",
    "prefix",
    "task_specific_params",
    "tf_legacy_loss",
    "torchscript",
    "use_bfloat16",
    // Phi-3: dropout rates (training only) and the length longrope scales from (read with
    // `rope_scaling`, which cria refuses unless it is default, linear or llama3).
    "embd_pdrop",
    "resid_pdrop",
    "original_max_position_embeddings",
    "partial_rotary_factor",
    // SmolLM2 (converted from nanotron): a marker, a transformers.js runtime hint, and
    // `rope_interleaved`, which must be false (transformers always rotates halves).
    "is_llama_config",
    "transformers.js_config",
    "rope_interleaved",
];

struct Reader<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn err(&self, field: &str, msg: impl Into<String>) -> CoreError {
        CoreError::config(self.path, field, msg)
    }
    fn usize(&self, key: &str) -> Result<usize> {
        match self.obj.get(key) {
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}"))),
            None => Err(self.err(key, "missing")),
        }
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.usize(key).map(Some),
        }
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(key, format!("expected a number, got {v}"))),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("expected true or false, got {v}"))),
        }
    }
    fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(|x| vec![x as u32])
                .ok_or_else(|| self.err(key, "expected a token id")),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_u64()
                        .map(|x| x as u32)
                        .ok_or_else(|| self.err(key, "expected a list of token ids"))
                })
                .collect(),
            Some(v) => Err(self.err(key, format!("expected a token id or a list, got {v}"))),
        }
    }
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json`.
    /// Positions the model attends over: `max_position_embeddings`, capped at the longest
    /// rotary table cria builds.
    pub fn context(&self) -> usize {
        self.max_position_embeddings
            .min(crate::model::llama::MAX_ROPE_TABLE)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let value = crate::fsutil::read_json(path)?;
        Self::from_json(&value, path)
    }

    /// Parses a `config.json` value; `path` is used in errors only.
    pub fn from_json(value: &Value, path: &Path) -> Result<Self> {
        let obj = value
            .as_object()
            .ok_or_else(|| CoreError::config(path, "(root)", "expected a JSON object"))?;
        let r = Reader { path, obj };
        let (arch, head) = read_arch(&r)?;
        check_keys(&r, arch, head)?;
        let extras = match arch {
            Arch::Gemma3 => read_gemma3(&r)?,
            _ => Extras::default(),
        };
        let hidden_size = r.usize("hidden_size")?;
        let heads = r.usize("num_attention_heads")?;
        let kv_heads = r.opt_usize("num_key_value_heads")?.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(r.err(
                "num_key_value_heads",
                format!("{kv_heads} does not divide num_attention_heads {heads}"),
            ));
        }
        let head_dim = r.opt_usize("head_dim")?.unwrap_or(hidden_size / heads);
        if head_dim % 2 != 0 || head_dim == 0 {
            return Err(r.err("head_dim", format!("{head_dim} must be even and positive")));
        }
        let layers = r.usize("num_hidden_layers")?;
        let (rope_theta, rope_scaling) = read_rope(&r)?;
        let attention_bias = r.bool_or("attention_bias", false)?;
        let (qkv_bias, o_bias) = match arch {
            Arch::Qwen2 => (true, false),
            Arch::Phi3 => (false, false),
            _ => (attention_bias, attention_bias),
        };
        let cfg = ModelConfig {
            arch,
            head,
            reward_offset: r.f64_or("cria_reward_offset", 0.0)?,
            vocab_size: r.usize("vocab_size")?,
            hidden_size,
            intermediate_size: r.usize("intermediate_size")?,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: r.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            max_position_embeddings: r.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: r.bool_or("tie_word_embeddings", false)?,
            qkv_bias,
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Gemma3),
            o_bias,
            mlp_bias: r.bool_or("mlp_bias", false)?,
            sliding_window: read_sliding(&r, arch, layers)?,
            initializer_range: r.f64_or("initializer_range", 0.02)?,
            bos_token_id: r.token_ids("bos_token_id")?.first().copied(),
            eos_token_id: r.token_ids("eos_token_id")?,
            pad_token_id: r.token_ids("pad_token_id")?.first().copied(),
            extras,
        };
        Ok(cfg)
    }

    /// The `config.json` transformers reads for this model (newer spelling: `dtype`; the rope
    /// fields are written in the older spelling too, which every transformers version reads).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "architectures": [self.arch.class_name_with(self.head)],
            "model_type": self.arch.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "torch_dtype": "float32",
            "use_cache": true,
        });
        let o = v.as_object_mut().expect("object literal");
        match self.arch {
            Arch::Llama => {
                o.insert("attention_bias".into(), json!(self.qkv_bias));
                o.insert("mlp_bias".into(), json!(self.mlp_bias));
            }
            Arch::Mistral | Arch::Phi3 => {
                o.insert("sliding_window".into(), json!(self.sliding_window[0]));
            }
            Arch::Gemma3 => self.gemma3_json(o),
            Arch::Qwen2 | Arch::Qwen3 => {
                if self.arch == Arch::Qwen3 {
                    o.insert("attention_bias".into(), json!(self.qkv_bias));
                }
                let sw = self.sliding_window.iter().flatten().next().copied();
                let first = self.sliding_window.iter().position(Option::is_some);
                o.insert("use_sliding_window".into(), json!(sw.is_some()));
                o.insert("sliding_window".into(), json!(sw));
                o.insert(
                    "max_window_layers".into(),
                    json!(first.unwrap_or(self.num_hidden_layers)),
                );
            }
        }
        if let Some(s) = &self.rope_scaling
            && self.arch != Arch::Gemma3
        {
            o.insert("rope_scaling".into(), rope_scaling_json(s));
        }
        if self.head == Head::Score {
            o.insert("id2label".into(), json!({"0": "LABEL_0"}));
            o.insert("label2id".into(), json!({"LABEL_0": 0}));
            o.insert("cria_reward_offset".into(), json!(self.reward_offset));
        }
        let ids = |x: Option<u32>| x.map_or(Value::Null, |x| json!(x));
        o.insert("bos_token_id".into(), ids(self.bos_token_id));
        o.insert(
            "eos_token_id".into(),
            match self.eos_token_id.as_slice() {
                [] => Value::Null,
                [one] => json!(one),
                many => json!(many),
            },
        );
        o.insert("pad_token_id".into(), ids(self.pad_token_id));
        v
    }

    /// Gemma 3's keys as transformers 5 writes them (rope parameters per layer type).
    fn gemma3_json(&self, o: &mut Map<String, Value>) {
        o.remove("hidden_act");
        o.remove("rope_theta");
        let mut full = json!({"rope_type": "default", "rope_theta": self.rope_theta});
        if let Some(s) = &self.rope_scaling
            && let (Some(f), Value::Object(sc)) = (full.as_object_mut(), rope_scaling_json(s))
        {
            f.extend(sc);
        }
        let local = self.extras.local_rope_theta.unwrap_or(self.rope_theta);
        let types: Vec<&str> = self
            .sliding_window
            .iter()
            .map(|w| match w {
                Some(_) => "sliding_attention",
                None => "full_attention",
            })
            .collect();
        let window = self.sliding_window.iter().flatten().next().copied();
        for (k, v) in [
            ("hidden_activation", json!("gelu_pytorch_tanh")),
            // transformers' config validates it as an integer.
            (
                "query_pre_attn_scalar",
                match self.extras.query_pre_attn_scalar {
                    Some(s) if s.fract() == 0.0 => json!(s as u64),
                    other => json!(other),
                },
            ),
            ("attention_bias", json!(self.qkv_bias)),
            ("sliding_window", json!(window)),
            ("layer_types", json!(types)),
            (
                "rope_parameters",
                json!({"full_attention": full,
                       "sliding_attention": {"rope_type": "default", "rope_theta": local}}),
            ),
            ("final_logit_softcapping", Value::Null),
            ("attn_logit_softcapping", Value::Null),
            ("use_bidirectional_attention", json!(false)),
        ] {
            o.insert(k.into(), v);
        }
    }

    pub fn num_params(&self) -> usize {
        let (d, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let attn = d * q + 2 * d * kv + q * d;
        let qk_norm = if self.qk_norm { 2 * self.head_dim } else { 0 };
        let norms = if self.extras.sandwich_norms { 4 } else { 2 };
        let layer = attn + 3 * d * f + norms * d + qk_norm;
        let head = if self.tie_word_embeddings { 0 } else { v * d };
        v * d + self.num_hidden_layers * layer + d + head
    }
}

/// What the checkpoint may say before its shape is read: one score label for a reward model,
/// only keys cria reads or that do not change the forward pass, the family's activation, and
/// no interleaved RoPE.
fn check_keys(r: &Reader, arch: Arch, head: Head) -> Result<()> {
    let obj = r.obj;
    if head == Head::Score {
        let labels = match (obj.get("num_labels"), obj.get("id2label")) {
            (Some(n), _) => n.as_u64(),
            (None, Some(Value::Object(m))) => Some(m.len() as u64),
            (None, _) => Some(2), // transformers' default
        };
        if labels != Some(1) {
            return Err(r.err(
                "id2label",
                "a sequence-classification checkpoint is read as a reward model only with \
                 num_labels = 1",
            ));
        }
    }
    for key in obj.keys() {
        let gemma = arch == Arch::Gemma3 && GEMMA3_KEYS.contains(&key.as_str());
        if !KNOWN_KEYS.contains(&key.as_str()) && !gemma {
            return Err(r.err(key, "unknown config key for this architecture"));
        }
    }
    let (act_key, act_want) = match arch {
        Arch::Gemma3 => ("hidden_activation", "gelu_pytorch_tanh"),
        _ => ("hidden_act", "silu"),
    };
    if let Some(act) = obj.get(act_key).and_then(Value::as_str)
        && act != act_want
    {
        return Err(r.err(
            act_key,
            format!("`{act}` is not supported (only {act_want})"),
        ));
    }
    if r.bool_or("rope_interleaved", false)? {
        return Err(r.err(
            "rope_interleaved",
            "interleaved RoPE is not what transformers computes for this class (it rotates \
             halves); convert the checkpoint first",
        ));
    }
    if arch == Arch::Phi3 && obj.contains_key("attention_bias") {
        return Err(r.err("attention_bias", "Phi-3 has no attention bias"));
    }
    Ok(())
}

fn rope_scaling_json(s: &RopeScaling) -> Value {
    match s {
        RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
    }
}

fn read_arch(r: &Reader) -> Result<(Arch, Head)> {
    if let Some(list) = r.obj.get("architectures") {
        let name = list
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .ok_or_else(|| r.err("architectures", "expected a list of class names"))?;
        return Arch::from_class(name).ok_or_else(|| {
            r.err(
                "architectures",
                format!(
                    "unknown architecture `{name}` (cria reads Llama, Mistral, Qwen2, Qwen3 \
                     and Phi3 …ForCausalLM and …ForSequenceClassification)"
                ),
            )
        });
    }
    match r.obj.get("model_type").and_then(Value::as_str) {
        Some(t) if Arch::from_model_type(t).is_some() => {
            Ok((Arch::from_model_type(t).expect("checked"), Head::Lm))
        }
        Some(other) => Err(r.err("model_type", format!("unknown architecture `{other}`"))),
        None => Err(r.err("architectures", "missing (and no model_type)")),
    }
}

fn read_rope(r: &Reader) -> Result<(f64, Option<RopeScaling>)> {
    // Newer transformers nest everything under `rope_parameters`; older ones use `rope_theta`
    // plus an optional `rope_scaling` object.
    let (params, field) = match r.obj.get("rope_parameters") {
        // Gemma 3 in transformers 5: one set per layer type; the global layers' here, the
        // local ones' in read_gemma3.
        Some(Value::Object(p)) if p.get("full_attention").is_some_and(Value::is_object) => (
            p.get("full_attention").and_then(Value::as_object),
            "rope_parameters.full_attention",
        ),
        Some(Value::Object(p)) => (Some(p), "rope_parameters"),
        _ => match r.obj.get("rope_scaling") {
            Some(Value::Object(p)) => (Some(p), "rope_scaling"),
            _ => (None, "rope_scaling"),
        },
    };
    let theta = match params.and_then(|p| p.get("rope_theta")) {
        Some(v) => v
            .as_f64()
            .ok_or_else(|| r.err(&format!("{field}.rope_theta"), "expected a number"))?,
        None => r.f64_or("rope_theta", 10000.0)?,
    };
    // Phi-3 writes the rotary fraction at the top level or among the rope parameters; cria
    // rotates whole heads only.
    let partial = match params.and_then(|p| p.get("partial_rotary_factor")) {
        Some(v) => v.as_f64(),
        None => Some(r.f64_or("partial_rotary_factor", 1.0)?),
    };
    if partial != Some(1.0) {
        return Err(r.err(
            "partial_rotary_factor",
            "only 1.0 is supported (RoPE over the whole head)",
        ));
    }
    let Some(p) = params else {
        return Ok((theta, None));
    };
    let sub = Reader {
        path: r.path,
        obj: p,
    };
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let scaling = match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: sub.f64_or("factor", 1.0)?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: sub.f64_or("factor", 8.0)?,
            low_freq_factor: sub.f64_or("low_freq_factor", 1.0)?,
            high_freq_factor: sub.f64_or("high_freq_factor", 4.0)?,
            original_max_position_embeddings: sub
                .usize("original_max_position_embeddings")
                .map_err(|_| {
                    r.err(
                        &format!("{field}.original_max_position_embeddings"),
                        "missing or not an integer",
                    )
                })?,
        }),
        other => {
            return Err(r.err(
                &format!("{field}.rope_type"),
                format!("`{other}` is not supported (default, linear, llama3)"),
            ));
        }
    };
    Ok((theta, scaling))
}

fn read_sliding(r: &Reader, arch: Arch, layers: usize) -> Result<Vec<Option<usize>>> {
    // 0 means no window, as the fused kernel reads it.
    let window = r.opt_usize("sliding_window")?.filter(|w| *w > 0);
    Ok(match arch {
        Arch::Llama => vec![None; layers],
        Arch::Mistral | Arch::Phi3 => vec![window; layers],
        Arch::Gemma3 => gemma3_layers(r, window, layers)?,
        Arch::Qwen2 | Arch::Qwen3 => {
            if !r.bool_or("use_sliding_window", false)? {
                return Ok(vec![None; layers]);
            }
            if let Some(Value::Array(types)) = r.obj.get("layer_types") {
                if types.len() != layers {
                    return Err(r.err("layer_types", "length differs from num_hidden_layers"));
                }
                types
                    .iter()
                    .map(|t| {
                        (t.as_str() == Some("sliding_attention"))
                            .then_some(window)
                            .flatten()
                    })
                    .collect()
            } else {
                let first = r.opt_usize("max_window_layers")?.unwrap_or(layers);
                (0..layers)
                    .map(|i| if i >= first { window } else { None })
                    .collect()
            }
        }
    })
}

/// Gemma 3's layer choices: GeGLU, (1 + w) norms, scaled embeddings, four norms per block, its
/// own attention scale and a RoPE base of its own for the local layers. Softcapping and
/// bidirectional attention (Gemma 2, EmbeddingGemma) are refused.
fn read_gemma3(r: &Reader) -> Result<Extras> {
    for key in ["final_logit_softcapping", "attn_logit_softcapping"] {
        if !matches!(r.obj.get(key), None | Some(Value::Null)) {
            return Err(r.err(key, "softcapping is not supported (Gemma 3 has none)"));
        }
    }
    if r.bool_or("use_bidirectional_attention", false)? {
        return Err(r.err(
            "use_bidirectional_attention",
            "only causal attention is supported",
        ));
    }
    let local = match r.obj.get("rope_parameters") {
        Some(Value::Object(p)) if p.get("sliding_attention").is_some_and(Value::is_object) => {
            let l = p["sliding_attention"].as_object().expect("checked");
            let kind = l
                .get("rope_type")
                .and_then(Value::as_str)
                .unwrap_or("default");
            if kind != "default" {
                return Err(r.err(
                    "rope_parameters.sliding_attention.rope_type",
                    format!("`{kind}` is not supported for the local layers (default)"),
                ));
            }
            l.get("rope_theta").and_then(Value::as_f64).ok_or_else(|| {
                r.err(
                    "rope_parameters.sliding_attention.rope_theta",
                    "expected a number",
                )
            })?
        }
        _ => r.f64_or("rope_local_base_freq", 10000.0)?,
    };
    let scalar = r.f64_or("query_pre_attn_scalar", 256.0)?;
    if scalar <= 0.0 {
        return Err(r.err("query_pre_attn_scalar", "must be positive"));
    }
    Ok(Extras {
        norm_plus_one: true,
        gelu_gate: true,
        scale_embeddings: true,
        query_pre_attn_scalar: Some(scalar),
        sandwich_norms: true,
        local_rope_theta: Some(local),
    })
}

/// Gemma 3's local (sliding-window) and global layers: `layer_types`, else every
/// `sliding_window_pattern`-th layer global (6 when unset, as Gemma 3 ships).
fn gemma3_layers(r: &Reader, window: Option<usize>, layers: usize) -> Result<Vec<Option<usize>>> {
    let Some(window) = window else {
        return Err(r.err("sliding_window", "Gemma 3 needs its local layers' window"));
    };
    if let Some(types) = r.obj.get("layer_types") {
        let types = types
            .as_array()
            .filter(|t| t.len() == layers)
            .ok_or_else(|| r.err("layer_types", "expected one entry per layer"))?;
        return types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(Some(window)),
                Some("full_attention") => Ok(None),
                _ => Err(r.err("layer_types", format!("unknown layer type {t}"))),
            })
            .collect();
    }
    let every = r.opt_usize("sliding_window_pattern")?.unwrap_or(6).max(1);
    Ok((0..layers)
        .map(|i| ((i + 1) % every != 0).then_some(window))
        .collect())
}
