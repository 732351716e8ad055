//! Phi-3 stores q, k and v as one `qkv_proj` (rows `[q; k; v]`) and gate and up as one
//! `gate_up_proj` (rows `[gate; up]`). cria's blocks keep them apart (one GEMM kernel path for
//! every family, LoRA targets by their usual names), so a Phi-3 checkpoint is split on load and
//! fused again on save: the file transformers reads is Phi-3's own layout.

use crate::config::ModelConfig;
use crate::error::{CoreError, Result};
use crate::weights::{NamedTensors, RawTensor, WeightMap};

/// `(fused name, parts and their row counts)` of each fused projection of layer `i`.
fn fusions(cfg: &ModelConfig, i: usize) -> [(String, Vec<(String, usize)>); 2] {
    let p = |s: &str| format!("model.layers.{i}.{s}.weight");
    let (q, kv) = (
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
    );
    let f = cfg.intermediate_size;
    [
        (
            p("self_attn.qkv_proj"),
            vec![
                (p("self_attn.q_proj"), q),
                (p("self_attn.k_proj"), kv),
                (p("self_attn.v_proj"), kv),
            ],
        ),
        (
            p("mlp.gate_up_proj"),
            vec![(p("mlp.gate_proj"), f), (p("mlp.up_proj"), f)],
        ),
    ]
}

/// Splits every fused projection of a loaded Phi-3 checkpoint into its parts (HF layout,
/// `[out, in]`: each part is a run of rows).
pub fn split(cfg: &ModelConfig, map: &mut WeightMap) -> Result<()> {
    for i in 0..cfg.num_hidden_layers {
        for (fused, parts) in fusions(cfg, i) {
            let Some(raw) = map.tensors.remove(&fused) else {
                return Err(CoreError::MissingTensor {
                    path: std::path::PathBuf::from("(Phi-3 checkpoint)"),
                    name: fused,
                });
            };
            let rows: usize = parts.iter().map(|(_, r)| r).sum();
            let cols = raw.shape.get(1).copied().unwrap_or(0);
            if raw.shape.len() != 2 || raw.shape[0] != rows {
                return Err(CoreError::Shape {
                    path: raw.file,
                    name: fused,
                    got: raw.shape,
                    expected: vec![rows, cols],
                });
            }
            let mut at = 0;
            for (name, r) in parts {
                let data = raw.data[at * cols..(at + r) * cols].to_vec();
                at += r;
                let part = RawTensor {
                    shape: vec![r, cols],
                    data,
                    file: raw.file.clone(),
                };
                map.tensors.insert(name, part);
            }
        }
    }
    Ok(())
}

/// Fuses the split projections back into Phi-3's tensors, for the checkpoint file.
pub fn fuse(cfg: &ModelConfig, tensors: &mut NamedTensors) {
    for i in 0..cfg.num_hidden_layers {
        for (fused, parts) in fusions(cfg, i) {
            let mut data = vec![];
            let mut rows = 0;
            let mut cols = 0;
            for (name, _) in parts {
                let (shape, d) = tensors.remove(&name).expect("a Phi-3 model has every part");
                rows += shape[0];
                cols = shape[1];
                data.extend(d);
            }
            tensors.insert(fused, (vec![rows, cols], data));
        }
    }
}
