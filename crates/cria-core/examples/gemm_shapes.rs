//! GFLOP/s of the f32 products of the bench model's training step (B·T = 2048 rows, d 384,
//! SwiGLU 1024, vocabulary 4096) and of its decoding steps (16 rows and 1 row; their weights
//! stay in cache here, unlike a real step's) through the gemm crate: with its own threading, and cut into
//! row blocks the way cria's linear kernel runs them (`kernels::gemm::product_par`). Each
//! shape's best of 20 runs; one JSON line per shape. `bench/gemm_shapes.py` sets these beside
//! PyTorch's (MKL) and NumPy's (OpenBLAS) on the same shapes.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p cria-core --example gemm_shapes`

use cria_core::kernels::gemm::{Mat, product_par};
use std::time::Instant;

/// (name, m, n, k, a stored transposed, b stored transposed)
const SHAPES: [(&str, usize, usize, usize, bool, bool); 15] = [
    ("q/k/v/o forward", 2048, 384, 384, false, false),
    ("gate/up forward", 2048, 1024, 384, false, false),
    ("down forward", 2048, 384, 1024, false, false),
    ("head forward", 2048, 4096, 384, false, false),
    ("head dx = dy·Wᵀ", 2048, 384, 4096, false, true),
    ("head dW = xᵀ·dy", 384, 4096, 2048, true, false),
    ("gate dx = dy·Wᵀ", 2048, 384, 1024, false, true),
    ("gate dW = xᵀ·dy", 384, 1024, 2048, true, false),
    ("down dW = xᵀ·dy", 1024, 384, 2048, true, false),
    ("decode16 q/k/v/o", 16, 384, 384, false, false),
    ("decode16 gate/up", 16, 1024, 384, false, false),
    ("decode16 down", 16, 384, 1024, false, false),
    ("decode16 head", 16, 4096, 384, false, false),
    ("decode1 gate/up", 1, 1024, 384, false, false),
    ("decode1 head", 1, 4096, 384, false, false),
];

fn best_of(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let threads = rayon::current_num_threads();
    for (name, m, n, k, ta, tb) in SHAPES {
        let runs = if m < 64 { 400 } else { 20 };
        let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.1).collect();
        let av = if ta {
            Mat::dense(&a, k, m).t()
        } else {
            Mat::dense(&a, m, k)
        };
        let bv = if tb {
            Mat::dense(&b, n, k).t()
        } else {
            Mat::dense(&b, k, n)
        };
        let mut c = vec![0f32; m * n];
        let own = best_of(runs, || {
            // SAFETY: c holds m·n; the views are in bounds (Mat::dense checked them).
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    av.data.as_ptr(),
                    av.cs as isize,
                    av.rs as isize,
                    bv.data.as_ptr(),
                    bv.cs as isize,
                    bv.rs as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(threads),
                )
            }
        });
        let blocks = best_of(runs, || {
            std::hint::black_box(product_par(av, bv));
        });
        let gflops = |s: f64| 2.0 * (m * n * k) as f64 / s / 1e9;
        println!(
            "{}",
            serde_json::json!({"shape": name, "m": m, "n": n, "k": k, "threads": threads,
                "gemm_threaded_gflops": gflops(own), "row_blocks_gflops": gflops(blocks)})
        );
    }
}
