//! Safetensors I/O: single files and sharded indexes (`model.safetensors.index.json`), f32, f16
//! and bf16 read into f32; f32 written with Hugging Face tensor names. Also the builder layers
//! use to get their weights, either loaded from a file or freshly initialised.

use crate::error::{CoreError, Result};
use crate::fsutil;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Named tensors in Hugging Face layout: name -> (shape, row-major values).
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// A tensor read from disk, in Hugging Face layout.
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub file: PathBuf,
}

/// All tensors of a checkpoint by name.
#[derive(Default)]
pub struct WeightMap {
    pub tensors: HashMap<String, RawTensor>,
    /// Names stored under another name: safetensors' `save_model` keeps a shared tensor once
    /// and names the dropped alias in the file's metadata (`{"model.embed_tokens.weight":
    /// "lm_head.weight"}` for tied embeddings).
    pub aliases: HashMap<String, String>,
}

fn st_err(path: &Path, e: impl std::fmt::Display) -> CoreError {
    CoreError::Safetensors {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

impl WeightMap {
    /// Reads one safetensors file.
    pub fn read_file(path: &Path, into: &mut WeightMap) -> Result<()> {
        let file = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
        // SAFETY: the map is read-only and dropped before returning; a concurrent writer
        // would be a user error that at worst yields garbage values, which checks below catch
        // only partly: cria itself never rewrites a file in place (it renames).
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| CoreError::io(path, e))?;
        let st = SafeTensors::deserialize(&mmap).map_err(|e| st_err(path, e))?;
        let (_, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| st_err(path, e))?;
        let names: HashSet<String> = st.names().into_iter().map(String::from).collect();
        for (alias, target) in meta.metadata().iter().flatten() {
            if names.contains(target) && !names.contains(alias) {
                into.aliases.insert(alias.clone(), target.clone());
            }
        }
        for (name, view) in st.tensors() {
            let data = decode(view.dtype(), view.data()).ok_or_else(|| CoreError::Dtype {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            into.tensors.insert(
                name,
                RawTensor {
                    shape: view.shape().to_vec(),
                    data,
                    file: path.to_path_buf(),
                },
            );
        }
        Ok(())
    }

    /// Reads `model.safetensors`, or every shard named by `model.safetensors.index.json`.
    pub fn read_dir(dir: &Path) -> Result<WeightMap> {
        let mut map = WeightMap::default();
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.exists() {
            Self::read_file(&single, &mut map)?;
        } else if index.exists() {
            let v = fsutil::read_json(&index)?;
            let wm = v
                .get("weight_map")
                .and_then(|w| w.as_object())
                .ok_or_else(|| {
                    CoreError::config(&index, "weight_map", "missing or not an object")
                })?;
            let mut shards: Vec<&str> = wm.values().filter_map(|s| s.as_str()).collect();
            shards.sort();
            shards.dedup();
            for shard in shards {
                let p = dir.join(shard);
                if !p.exists() {
                    return Err(CoreError::MissingFile {
                        dir: dir.to_path_buf(),
                        file: format!("{shard} (named in model.safetensors.index.json)"),
                    });
                }
                Self::read_file(&p, &mut map)?;
            }
        } else {
            return Err(CoreError::MissingFile {
                dir: dir.to_path_buf(),
                file: "model.safetensors (or model.safetensors.index.json)".into(),
            });
        }
        Ok(map)
    }
}

fn decode(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let f = |b: &[u8]| [b[0], b[1]];
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes(f(b)).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes(f(b)).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Writes named f32 tensors (Hugging Face layout) as one safetensors file, atomically.
pub fn save_safetensors(
    path: &Path,
    tensors: &NamedTensors,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, (s, d))| {
            let b: Vec<u8> = d.iter().flat_map(|x| x.to_le_bytes()).collect();
            (n.clone(), s.clone(), b)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            let v = safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                .map_err(|e| st_err(path, e))?;
            Ok((n.clone(), v))
        })
        .collect::<Result<_>>()?;
    let out = safetensors::serialize(views, metadata).map_err(|e| st_err(path, e))?;
    fsutil::write_atomic(path, &out)
}

/// How a layer gets its weights.
pub enum Source {
    /// Fresh weights: normal(0, std) for matrices, as transformers' `_init_weights` does.
    Init { rng: Box<StdRng>, std: f64 },
    /// Weights from a checkpoint; `used` tracks names so leftovers can be reported.
    Load {
        map: WeightMap,
        used: HashSet<String>,
    },
}

/// Hands out tensors by Hugging Face name, checking shapes against the config.
pub struct VarBuilder {
    pub source: Source,
    pub device: Device,
    /// Where the weights come from, for error messages.
    pub origin: PathBuf,
}

impl VarBuilder {
    pub fn init(seed: u64, std: f64, device: &Device) -> Self {
        VarBuilder {
            source: Source::Init {
                rng: Box::new(StdRng::seed_from_u64(seed)),
                std,
            },
            device: device.clone(),
            origin: PathBuf::from("(random init)"),
        }
    }

    pub fn load(map: WeightMap, origin: &Path, device: &Device) -> Self {
        VarBuilder {
            source: Source::Load {
                map,
                used: HashSet::new(),
            },
            device: device.clone(),
            origin: origin.to_path_buf(),
        }
    }

    fn take(&mut self, name: &str, hf_shape: &[usize]) -> Result<Option<Vec<f32>>> {
        let Source::Load { map, used } = &mut self.source else {
            return Ok(None);
        };
        let stored = match map.tensors.get(name) {
            Some(_) => name,
            None => map.aliases.get(name).map_or(name, String::as_str),
        };
        let Some(raw) = map.tensors.get(stored) else {
            return Err(CoreError::MissingTensor {
                path: self.origin.clone(),
                name: name.to_string(),
            });
        };
        if raw.shape != hf_shape {
            return Err(CoreError::Shape {
                path: raw.file.clone(),
                name: stored.to_string(),
                got: raw.shape.clone(),
                expected: hf_shape.to_vec(),
            });
        }
        used.insert(stored.to_string());
        Ok(Some(raw.data.clone()))
    }

    /// True when `name` exists in the loaded checkpoint (under its own name or an alias).
    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            Source::Load { map, .. } => {
                map.tensors.contains_key(name) || map.aliases.contains_key(name)
            }
            Source::Init { .. } => false,
        }
    }

    /// Reads `name` from `stored` when the checkpoint holds only the latter (a tied weight
    /// saved under its other name, with no metadata saying so).
    pub fn alias_if_missing(&mut self, name: &str, stored: &str) {
        if let Source::Load { map, .. } = &mut self.source
            && !map.tensors.contains_key(name)
            && !map.aliases.contains_key(name)
            && map.tensors.contains_key(stored)
        {
            map.aliases.insert(name.to_string(), stored.to_string());
        }
    }

    /// A matrix whose Hugging Face shape is `[rows, cols]`; stored `[cols, rows]` if `transposed`.
    pub fn matrix(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
        transposed: bool,
    ) -> Result<Tensor<2>> {
        let data = match self.take(name, &[rows, cols])? {
            Some(d) => d,
            None => self.normal(rows * cols),
        };
        let t = Tensor::<2>::from_data(TensorData::new(data, [rows, cols]), &self.device);
        Ok(if transposed { transpose_copy(t) } else { t })
    }

    /// A vector filled with `fill` when initialising.
    pub fn vector(&mut self, name: &str, len: usize, fill: f32) -> Result<Tensor<1>> {
        let data = self.take(name, &[len])?.unwrap_or_else(|| vec![fill; len]);
        Ok(Tensor::<1>::from_data(
            TensorData::new(data, [len]),
            &self.device,
        ))
    }

    fn normal(&mut self, n: usize) -> Vec<f32> {
        let Source::Init { rng, std } = &mut self.source else {
            unreachable!("normal() is only called when initialising")
        };
        normal_vec(rng, n, *std)
    }

    /// Errors if the checkpoint holds tensors no layer asked for (a different architecture or a
    /// misnamed file).
    pub fn finish(self) -> Result<()> {
        if let Source::Load { map, used } = self.source {
            let mut extra: Vec<&String> =
                map.tensors.keys().filter(|k| !used.contains(*k)).collect();
            extra.sort();
            // transformers may keep the rotary buffer in old checkpoints; it is recomputed.
            extra.retain(|k| !k.ends_with("rotary_emb.inv_freq"));
            if let Some(name) = extra.first() {
                let raw = &map.tensors[*name];
                return Err(CoreError::UnexpectedTensor {
                    path: raw.file.clone(),
                    name: (*name).clone(),
                });
            }
        }
        Ok(())
    }
}

/// Materialises a transposed copy (contiguous), so later matmuls read rows in order.
pub fn transpose_copy(t: Tensor<2>) -> Tensor<2> {
    let [a, b] = t.dims();
    let device = t.device();
    let data = crate::params::to_vec(t);
    let mut out = vec![0f32; a * b];
    for i in 0..a {
        for j in 0..b {
            out[j * a + i] = data[i * b + j];
        }
    }
    Tensor::from_data(TensorData::new(out, [b, a]), &device)
}

/// `n` draws from normal(0, std) by Box-Muller, deterministic for a seeded generator.
pub fn normal_vec(rng: &mut StdRng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let th = std::f64::consts::TAU * u2;
        out.push((r * th.cos()) as f32);
        out.push((r * th.sin()) as f32);
    }
    out.truncate(n);
    out
}
