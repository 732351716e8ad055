//! LLaMA-Adapter (Zhang et al. 2023): a learned prompt of `len` vectors on each of the top
//! `layers` layers. Queries attend to the prompt's keys and values in a softmax of their own,
//! separate from the one over tokens, and the result enters through a zero-initialised gate per
//! head (tanh), so at step 0 the model is exactly the base model. The prompt's keys and values
//! come from the layer's own (frozen) k/v projections and carry no rotary position.

use crate::error::{CoreError, Result};
use crate::fsutil;
use crate::model::Llama;
use crate::nn::Linear;
use crate::params::{ParamMut, Params};
use crate::weights::{NamedTensors, VarBuilder, WeightMap, normal_vec};
use burn::tensor::{Tensor, TensorData, activation::softmax};
use rand::{SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;

/// `adapter_config.json`'s `peft_type` for cria's LLaMA-Adapter files.
pub const PEFT_TYPE: &str = "CRIA_LLAMA_ADAPTER";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrefixConfig {
    /// Prompt vectors per adapted layer.
    pub len: usize,
    /// How many of the top layers are adapted.
    pub layers: usize,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        PrefixConfig { len: 10, layers: 8 }
    }
}

#[derive(Clone, Debug)]
pub struct PrefixAdapter {
    /// `(len, C)`
    pub prompt: Tensor<2>,
    /// `(H,)`, zero at initialisation.
    pub gate: Tensor<1>,
}

impl PrefixAdapter {
    /// The gated prompt attention, to add to the token attention's output.
    ///
    /// # Shapes
    /// `q`: `(B, T, H, D)` (after RoPE) -> `(B, T, H, D)`
    pub fn forward(
        &self,
        q: Tensor<4>,
        k_proj: &Linear,
        v_proj: &Linear,
        kv_heads: usize,
    ) -> Tensor<4> {
        let [b, t, h, d] = q.dims();
        let [len, c] = self.prompt.dims();
        let p = self.prompt.clone().reshape([1, len, c]);
        let heads = |x: Tensor<3>| {
            let x = x.reshape([1, len, kv_heads, d]).swap_dims(1, 2); // (1, KV, L, D)
            let rep = h / kv_heads;
            x.unsqueeze_dim::<5>(2)
                .expand([1, kv_heads, rep, len, d])
                .reshape([1, h, len, d])
        };
        let (k, v) = (heads(k_proj.forward(p.clone())), heads(v_proj.forward(p)));
        let scores = q.swap_dims(1, 2).matmul(k.swap_dims(2, 3)) * (d as f64).powf(-0.5); // (B, H, T, L)
        let out = softmax(scores, 3).matmul(v); // (B, H, T, D)
        let gate = self.gate.clone().tanh().reshape([1, h, 1, 1]);
        (out * gate).swap_dims(1, 2).reshape([b, t, h, d])
    }

    pub fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        f(
            &format!("{prefix}.adapter_prompt"),
            ParamMut::Matrix {
                t: &mut self.prompt,
                transposed: false,
            },
        );
        f(
            &format!("{prefix}.adapter_gate"),
            ParamMut::Vector(&mut self.gate),
        );
    }
}

/// True for LLaMA-Adapter parameters (what trains with `method = "llama-adapter"`).
pub fn is_prefix_param(name: &str) -> bool {
    name.ends_with(".adapter_prompt") || name.ends_with(".adapter_gate")
}

impl Llama {
    /// Attaches prompts (normal(0, initializer_range)) and zero gates to the top layers.
    pub fn add_prefix_adapter(&mut self, cfg: &PrefixConfig, seed: u64) -> Result<()> {
        let n = self.layers.len();
        if cfg.len == 0 || cfg.layers == 0 || cfg.layers > n {
            return Err(CoreError::Invalid(format!(
                "adapter: len must be >= 1 and layers in 1..={n} (got len {}, layers {})",
                cfg.len, cfg.layers
            )));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let (c, h, std) = (
            self.cfg.hidden_size,
            self.cfg.num_attention_heads,
            self.cfg.initializer_range,
        );
        let device = self.device();
        for block in &mut self.layers[n - cfg.layers..] {
            block.self_attn.prefix = Some(PrefixAdapter {
                prompt: Tensor::from_data(
                    TensorData::new(normal_vec(&mut rng, cfg.len * c, std), [cfg.len, c]),
                    &device,
                ),
                gate: Tensor::zeros([h], &device),
            });
        }
        Ok(())
    }

    /// The adapter's parameters by name.
    pub fn prefix_tensors(&self) -> NamedTensors {
        let mut out = NamedTensors::new();
        let mut m = self.clone();
        m.visit("", &mut |name, p| {
            if is_prefix_param(name) {
                out.insert(name.to_string(), (p.hf_shape(), p.to_hf_vec()));
            }
        });
        out
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` (separate from the base).
    pub fn save_prefix_adapter(&self, cfg: &PrefixConfig, base: &str, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
        let meta = json!({"peft_type": PEFT_TYPE, "base_model_name_or_path": base, "adapter_len": cfg.len, "adapter_layers": cfg.layers});
        fsutil::write_atomic(
            &dir.join("adapter_config.json"),
            serde_json::to_string_pretty(&meta)
                .expect("JSON")
                .as_bytes(),
        )?;
        crate::weights::save_safetensors(
            &dir.join("adapter_model.safetensors"),
            &self.prefix_tensors(),
            None,
        )
    }

    /// Attaches the LLaMA-Adapter saved in `dir`.
    pub fn load_prefix_adapter(&mut self, dir: &Path) -> Result<PrefixConfig> {
        let path = dir.join("adapter_config.json");
        let v = fsutil::read_json(&path)?;
        let num = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| CoreError::config(&path, k, "missing or not an integer"))
        };
        let cfg = PrefixConfig {
            len: num("adapter_len")?,
            layers: num("adapter_layers")?,
        };
        self.add_prefix_adapter(&cfg, 0)
            .map_err(|e| CoreError::config(&path, "adapter_layers", e.to_string()))?;
        let file = dir.join("adapter_model.safetensors");
        let mut raw = WeightMap::default();
        WeightMap::read_file(&file, &mut raw)?;
        let mut vb = VarBuilder::load(raw, &file, &self.device());
        let mut err = None;
        self.visit("", &mut |name, p| {
            if !is_prefix_param(name) || err.is_some() {
                return;
            }
            let res = match p {
                ParamMut::Matrix { t, .. } => {
                    let [a, b] = t.dims();
                    vb.matrix(name, a, b, false).map(|m| *t = m)
                }
                ParamMut::Vector(t) => {
                    let [n] = t.dims();
                    vb.vector(name, n, 0.0).map(|m| *t = m)
                }
            };
            if let Err(e) = res {
                err = Some(e);
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        vb.finish()?;
        Ok(cfg)
    }
}
