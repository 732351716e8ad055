//! Helpers shared by cria's tests (a dev-dependency only): reading committed fixtures,
//! comparisons that report the worst difference and where, deterministic pseudo-random
//! values, and leaf tensors on the training device.

pub mod browser;

use cria_core::{Int, Tensor, TensorData, device};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::path::Path;

/// A JSON fixture.
pub fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON array of numbers as f32.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

/// A JSON array of non-negative integers.
pub fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_u64().expect("an integer") as usize)
        .collect()
}

/// A tensor from a safetensors file as (shape, f64 values); ints and floats both accepted.
pub fn read_tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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

/// All tensors of one safetensors file.
pub fn weights(path: &Path) -> cria_core::weights::WeightMap {
    let mut m = cria_core::weights::WeightMap::default();
    cria_core::weights::WeightMap::read_file(path, &mut m).unwrap();
    m
}

/// `(B, T)` int ids from fixture values.
pub fn ids_tensor(ids: &[f64], b: usize, t: usize, device: &cria_core::Device) -> Tensor<2, Int> {
    Tensor::from_data(
        TensorData::new(ids.iter().map(|x| *x as i64).collect::<Vec<_>>(), [b, t]),
        device,
    )
}

/// A leaf tensor on the training device that tracks gradients.
pub fn leaf<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(v, shape), &device::training_device()).require_grad()
}

/// A 1-D leaf tensor on the training device that tracks gradients.
pub fn leaf_vec(v: Vec<f32>) -> Tensor<1> {
    let n = v.len();
    leaf(v, [n])
}

/// Largest absolute difference between ours (f32) and the reference (f64), and its index.
pub fn max_diff(a: &[f32], b: &[f64]) -> (f64, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| ((*x as f64 - y).abs(), i))
        .fold((0.0, 0), |m, x| if x.0 > m.0 { x } else { m })
}

/// Asserts `|a - b| <= tol` everywhere, naming the worst position.
pub fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let (d, i) = a
        .iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| ((x - y).abs(), i))
        .fold((0.0, 0), |m, x| if x.0 > m.0 { x } else { m });
    assert!(
        d <= tol,
        "{what}: max diff {d:e} at {i} ({} vs {})",
        a[i],
        b[i]
    );
}

/// Asserts each `|a - b| <= tol * max(|b|, 1)` (relative for large values, absolute near 0),
/// with `b` the reference.
pub fn assert_close_rel(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * y.abs().max(1.0),
            "{what}[{i}]: {x} vs reference {y}"
        );
    }
}

/// Asserts `|a - b| <= tol * max(|b|, 1)` for one value, `b` the reference.
pub fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!(
        (a - b).abs() <= tol * b.abs().max(1.0),
        "{what}: {a} vs reference {b}"
    );
}

/// `|a - b| / |b|`, the relative error of `a` against the reference `b`.
pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// `n` values uniform in [-3, 3) from a linear congruential generator: the same for the same
/// seed on every machine.
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
        })
        .collect()
}
