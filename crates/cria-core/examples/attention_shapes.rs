//! Forward and backward time of the fused causal attention kernel at the bench model's shape
//! (2048 tokens a step, 6 heads of 64) as 8 sequences of 256 and 2 of 1024: best of 10.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p cria-core --example attention_shapes`

use cria_core::{Tensor, TensorData, device, kernels};
use std::time::Instant;
fn main() {
    let dev = device::training_device();
    for t in [256usize, 1024] {
        let b = 8 * 256 / t;
        let (h, d) = (6, 64);
        let n = b * t * h * d;
        let mk = |seed: u64| {
            let v: Vec<f32> = (0..n)
                .map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f32 / 1000.0) - 0.5)
                .collect();
            Tensor::<4>::from_data(TensorData::new(v, [b, t, h, d]), &dev).require_grad()
        };
        let (q, k, v) = (mk(1), mk(2), mk(3));
        let mut best = f64::MAX;
        for _ in 0..10 {
            let s = Instant::now();
            let y = kernels::attention(q.clone(), k.clone(), v.clone(), 0, None);
            let g = y.sum().backward();
            std::hint::black_box(q.grad(&g));
            best = best.min(s.elapsed().as_secs_f64());
        }
        println!("T {t} B {b}: fwd+bwd {:.1} ms", best * 1e3);
    }
}
