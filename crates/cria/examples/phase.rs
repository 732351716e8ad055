use burn::tensor::module::linear;
use cria_core::{Tensor, TensorData, device};
use std::time::Instant;
fn time<F: FnMut() -> f32>(name: &str, flops: f64, mut f: F) {
    f();
    let t0 = Instant::now();
    let mut s = 0.0;
    for _ in 0..5 {
        s += f();
    }
    let dt = t0.elapsed().as_secs_f64() / 5.0;
    eprintln!(
        "{name:40} {:8.2} ms  {:6.1} GFLOP/s {s}",
        dt * 1e3,
        flops / dt / 1e9
    );
}
fn rnd<const D: usize>(shape: [usize; D], dev: &cria_core::Device) -> Tensor<D> {
    let n: usize = shape.iter().product();
    Tensor::from_data(
        TensorData::new(
            (0..n)
                .map(|i| ((i * 7919 % 1000) as f32) / 1000.0 - 0.5)
                .collect::<Vec<f32>>(),
            shape,
        ),
        dev,
    )
}
fn main() {
    for (label, dev) in [
        ("infer", device::inference_device()),
        ("autodiff", device::training_device()),
    ] {
        let x3 = rnd([8, 256, 384], &dev);
        let x2 = rnd([2048, 384], &dev);
        let w = rnd([384, 1024], &dev);
        let f = 2.0 * 2048.0 * 384.0 * 1024.0;
        time(&format!("{label} linear 3d"), f, || {
            linear(x3.clone(), w.clone(), None)
                .sum()
                .into_scalar::<f32>()
        });
        time(&format!("{label} matmul 2d"), f, || {
            x2.clone().matmul(w.clone()).sum().into_scalar::<f32>()
        });
        time(&format!("{label} matmul 3d x bcast"), f, || {
            x3.clone()
                .matmul(w.clone().unsqueeze::<3>())
                .sum()
                .into_scalar::<f32>()
        });
        let q = rnd([8, 6, 256, 64], &dev);
        time(
            &format!("{label} qk^T"),
            2.0 * 48.0 * 256.0 * 256.0 * 64.0,
            || {
                q.clone()
                    .matmul(q.clone().swap_dims(2, 3))
                    .sum()
                    .into_scalar::<f32>()
            },
        );
        let s = rnd([8, 6, 256, 256], &dev);
        time(&format!("{label} softmax"), 0.0, || {
            burn::tensor::activation::softmax(s.clone(), 3)
                .sum()
                .into_scalar::<f32>()
        });
        let h = rnd([8, 256, 1024], &dev);
        time(&format!("{label} silu*mul"), 0.0, || {
            (burn::tensor::activation::silu(h.clone()) * h.clone())
                .sum()
                .into_scalar::<f32>()
        });
        time(&format!("{label} sum only"), 0.0, || {
            h.clone().sum().into_scalar::<f32>()
        });
        let l = rnd([2048, 4096], &dev);
        time(&format!("{label} log_softmax"), 0.0, || {
            burn::tensor::activation::log_softmax(l.clone(), 1)
                .sum()
                .into_scalar::<f32>()
        });
        time(&format!("{label} rmsnorm"), 0.0, || {
            let r = (x3.clone().square().mean_dim(2) + 1e-5).sqrt();
            (x3.clone() / r).sum().into_scalar::<f32>()
        });
        time(&format!("{label} swap_dims+reshape"), 0.0, || {
            q.clone()
                .swap_dims(1, 2)
                .reshape([8, 256, 384])
                .sum()
                .into_scalar::<f32>()
        });
    }
}
