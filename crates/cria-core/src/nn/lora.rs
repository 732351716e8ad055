//! LoRA (Hu et al. 2021): a frozen linear layer plus a trainable low-rank update,
//! `y = xW + (xA)B · alpha/r`, with A `(in, r)` and B `(r, out)`; B starts at zero so the
//! model is unchanged at step 0. Saved and loaded in PEFT's layout (`adapter_config.json`,
//! `adapter_model.safetensors` with `base_model.model.<module>.lora_A.weight` `(r, in)` and
//! `lora_B.weight` `(out, r)`), so PEFT loads what cria writes and the reverse.

use crate::error::{CoreError, Result};
use crate::fsutil;
use crate::model::Llama;
use crate::params::{ParamMut, Params};
use crate::weights::{NamedTensors, VarBuilder, WeightMap};
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;

/// The projections LoRA can adapt (PEFT's `target_modules` names).
pub const MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Prefix PEFT puts before module names in `adapter_model.safetensors`.
pub const PEFT_PREFIX: &str = "base_model.model.";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    /// Probability of zeroing each input feature of the adapter path while training (PEFT's
    /// `lora_dropout`: `B(A(dropout(x)))`); inference never drops.
    pub dropout: f64,
    pub target_modules: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
        }
    }
}

impl LoraConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(CoreError::Invalid(format!("lora: {m}")));
        if self.r == 0 {
            return bad("r must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad(format!("alpha must be positive, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!(
                "dropout {} must be at least 0 and below 1",
                self.dropout
            ));
        }
        if self.target_modules.is_empty() {
            return bad("target_modules is empty".into());
        }
        if let Some(m) = self
            .target_modules
            .iter()
            .find(|m| !MODULES.contains(&m.as_str()))
        {
            return bad(format!(
                "unknown target module `{m}` (one of {})",
                MODULES.join(", ")
            ));
        }
        Ok(())
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    /// `adapter_config.json` as PEFT writes it.
    pub fn peft_json(&self, base: &str) -> serde_json::Value {
        json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "r": self.r,
            "lora_alpha": self.alpha,
            "lora_dropout": self.dropout,
            "target_modules": self.target_modules,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "use_rslora": false,
            "use_dora": false,
            "modules_to_save": null,
            "layers_to_transform": null,
        })
    }

    /// Reads PEFT's `adapter_config.json`.
    pub fn from_peft(path: &Path) -> Result<LoraConfig> {
        let v = fsutil::read_json(path)?;
        let field = |k: &str| {
            v.get(k)
                .ok_or_else(|| CoreError::config(path, k, "missing"))
        };
        if field("peft_type")?.as_str() != Some("LORA") {
            return Err(CoreError::config(
                path,
                "peft_type",
                "only LORA adapters are read",
            ));
        }
        for (k, ok) in [
            ("use_rslora", false),
            ("use_dora", false),
            ("fan_in_fan_out", false),
        ] {
            if v.get(k).and_then(|x| x.as_bool()).is_some_and(|x| x != ok) {
                return Err(CoreError::config(path, k, "not supported"));
            }
        }
        // Per-layer ranks, layer subsets and extra trained modules change what is loaded.
        for k in [
            "rank_pattern",
            "alpha_pattern",
            "layers_to_transform",
            "modules_to_save",
        ] {
            let set = match v.get(k) {
                None | Some(serde_json::Value::Null) => false,
                Some(serde_json::Value::Object(o)) => !o.is_empty(),
                Some(_) => true,
            };
            if set {
                return Err(CoreError::config(path, k, "not supported"));
            }
        }
        let targets = match field("target_modules")? {
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            serde_json::Value::String(s) => vec![s.clone()],
            _ => {
                return Err(CoreError::config(
                    path,
                    "target_modules",
                    "expected a list of names",
                ));
            }
        };
        let cfg = LoraConfig {
            r: field("r")?
                .as_u64()
                .ok_or_else(|| CoreError::config(path, "r", "expected an integer"))?
                as usize,
            alpha: field("lora_alpha")?
                .as_f64()
                .ok_or_else(|| CoreError::config(path, "lora_alpha", "expected a number"))?,
            // Kept so a resumed run goes on dropping as it did; inference ignores it.
            dropout: match v.get("lora_dropout") {
                None | Some(serde_json::Value::Null) => 0.0,
                Some(x) => x
                    .as_f64()
                    .ok_or_else(|| CoreError::config(path, "lora_dropout", "expected a number"))?,
            },
            target_modules: targets,
        };
        cfg.validate()
            .map_err(|e| CoreError::config(path, "target_modules", e.to_string()))?;
        Ok(cfg)
    }
}

/// The low-rank update of one linear layer.
#[derive(Clone, Debug)]
pub struct Lora {
    /// `(in, r)`
    pub a: Tensor<2>,
    /// `(r, out)`
    pub b: Tensor<2>,
    pub scale: f64,
    /// Dropout probability on the adapter's input.
    pub dropout: f64,
    /// Seed of this forward pass's dropout mask while training; `None` at inference.
    pub train_key: Option<u64>,
}

/// An inverted-dropout mask of `n` values: 0 with probability `p`, else `1 / (1 - p)`; the same
/// `key` gives the same mask (what makes a resumed run identical to an uninterrupted one).
pub fn dropout_mask(key: u64, n: usize, p: f64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(key);
    let keep = (1.0 / (1.0 - p)) as f32;
    (0..n)
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
        .collect()
}

impl Lora {
    /// PEFT's initialisation: A ~ kaiming_uniform(a=√5) = U(±1/√in), B = 0.
    pub fn init(
        d_in: usize,
        d_out: usize,
        cfg: &LoraConfig,
        rng: &mut StdRng,
        device: &burn::tensor::Device,
    ) -> Lora {
        let bound = 1.0 / (d_in as f64).sqrt();
        let a: Vec<f32> = (0..d_in * cfg.r)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        Lora {
            a: Tensor::from_data(TensorData::new(a, [d_in, cfg.r]), device),
            b: Tensor::zeros([cfg.r, d_out], device),
            scale: cfg.scale(),
            dropout: cfg.dropout,
            train_key: None,
        }
    }

    /// # Shapes
    /// `(N, in)` -> `(N, out)`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = match self.train_key {
            Some(key) if self.dropout > 0.0 => {
                let dims = x.dims();
                let mask = dropout_mask(key, dims[0] * dims[1], self.dropout);
                let mask = Tensor::<2>::from_data(TensorData::new(mask, dims), &x.device());
                x * mask
            }
            _ => x,
        };
        let xa = crate::kernels::linear(x, self.a.clone());
        crate::kernels::linear(xa, self.b.clone()) * self.scale
    }

    /// The dense update `A·B·scale`, `(in, out)`.
    pub fn delta(&self) -> Tensor<2> {
        self.a.clone().matmul(self.b.clone()) * self.scale
    }

    pub fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        f(
            &format!("{prefix}.lora_A.weight"),
            ParamMut::Matrix {
                t: &mut self.a,
                transposed: true,
            },
        );
        f(
            &format!("{prefix}.lora_B.weight"),
            ParamMut::Matrix {
                t: &mut self.b,
                transposed: true,
            },
        );
    }
}

/// True for the names of LoRA parameters (what trains when fine-tuning with LoRA).
pub fn is_lora_param(name: &str) -> bool {
    name.contains(".lora_A.") || name.contains(".lora_B.")
}

impl Llama {
    /// Attaches freshly initialised adapters to the target projections of every layer.
    pub fn add_lora(&mut self, cfg: &LoraConfig, seed: u64) -> Result<()> {
        cfg.validate()?;
        if self.cfg.arch == crate::config::Arch::Phi3 {
            // PEFT adapts Phi-3's fused qkv_proj and gate_up_proj as wholes; an adapter on
            // the parts would not load in PEFT, nor PEFT's here.
            return Err(CoreError::Invalid(
                "LoRA on Phi-3 is not supported yet (its q/k/v and gate/up projections are                  fused in PEFT's layout); use method = \"full\" or \"llama-adapter\""
                    .into(),
            ));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let device = self.device();
        for block in &mut self.layers {
            for (name, lin) in block.projections_mut() {
                if cfg.target_modules.iter().any(|m| m == name) {
                    let [d_in, d_out] = lin.weight.dims();
                    lin.lora = Some(Lora::init(d_in, d_out, cfg, &mut rng, &device));
                }
            }
        }
        Ok(())
    }

    /// Turns training-time randomness (LoRA dropout) on with masks derived from `key` (one key
    /// per micro-batch gives a fresh mask per forward pass that a resume reproduces), or off
    /// with `None` (inference, validation).
    pub fn set_train_key(&mut self, key: Option<u64>) {
        let mut i = 0u64;
        for block in &mut self.layers {
            for (_, lin) in block.projections_mut() {
                if let Some(l) = &mut lin.lora {
                    l.train_key = key.map(|k| crate::hash::key(k, i));
                }
                i += 1;
            }
        }
    }

    /// Folds every adapter into its base weight and removes it.
    pub fn merge_lora(&mut self) {
        for block in &mut self.layers {
            for (_, lin) in block.projections_mut() {
                if let Some(l) = lin.lora.take() {
                    lin.weight = lin.weight.clone() + l.delta();
                }
            }
        }
    }

    /// LoRA parameters in PEFT's names and layout.
    pub fn lora_tensors(&self) -> NamedTensors {
        let mut out = NamedTensors::new();
        let mut m = self.clone();
        m.visit("", &mut |name, p| {
            if is_lora_param(name) {
                out.insert(
                    format!("{PEFT_PREFIX}{name}"),
                    (p.hf_shape(), p.to_hf_vec()),
                );
            }
        });
        out
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir`.
    pub fn save_lora(&self, cfg: &LoraConfig, base: &str, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
        let text = serde_json::to_string_pretty(&cfg.peft_json(base)).expect("JSON value");
        fsutil::write_atomic(&dir.join("adapter_config.json"), text.as_bytes())?;
        crate::weights::save_safetensors(
            &dir.join("adapter_model.safetensors"),
            &self.lora_tensors(),
            None,
        )
    }

    /// Attaches the PEFT LoRA adapter in `dir`, checking it fits this model.
    pub fn load_lora(&mut self, dir: &Path) -> Result<LoraConfig> {
        let cfg = LoraConfig::from_peft(&dir.join("adapter_config.json"))?;
        self.add_lora(&cfg, 0)?;
        let file = dir.join("adapter_model.safetensors");
        let mut raw = WeightMap::default();
        WeightMap::read_file(&file, &mut raw)?;
        raw.tensors = raw
            .tensors
            .into_iter()
            .map(|(k, v)| (k.strip_prefix(PEFT_PREFIX).unwrap_or(&k).to_string(), v))
            .collect();
        let mut vb = VarBuilder::load(raw, &file, &self.device());
        let mut err = None;
        self.visit("", &mut |name, p| {
            if !is_lora_param(name) || err.is_some() {
                return;
            }
            if let ParamMut::Matrix { t, .. } = p {
                let [rows, cols] = t.dims();
                match vb.matrix(name, cols, rows, true) {
                    Ok(m) => *t = m,
                    Err(e) => err = Some(e),
                }
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        vb.finish()?;
        Ok(cfg)
    }
}
