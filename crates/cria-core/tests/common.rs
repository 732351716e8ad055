//! Helpers shared by cria-core's integration tests.
#![allow(dead_code)]

use cria_core::{Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A tensor from a safetensors file as (shape, f64 values); ints and floats both accepted.
pub fn read_tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let v = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
    let d = v.data();
    let vals: Vec<f64> = match v.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("unsupported dtype {other:?}"),
    };
    (v.shape().to_vec(), vals)
}

pub fn ids_tensor(ids: &[f64], b: usize, t: usize, device: &cria_core::Device) -> Tensor<2, Int> {
    Tensor::from_data(
        TensorData::new(ids.iter().map(|x| *x as i64).collect::<Vec<_>>(), [b, t]),
        device,
    )
}

/// Largest absolute difference and its index.
pub fn max_diff(a: &[f32], b: &[f64]) -> (f64, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| ((*x as f64 - y).abs(), i))
        .fold((0.0, 0), |m, x| if x.0 > m.0 { x } else { m })
}

/// All tensors of one safetensors file.
pub fn weights(path: &Path) -> cria_core::weights::WeightMap {
    let mut m = cria_core::weights::WeightMap::default();
    cria_core::weights::WeightMap::read_file(path, &mut m).unwrap();
    m
}
