//! Each fused kernel equals its composed reference in value and gradient (f32, 1e-5).

use cria_core::kernels;
use cria_core::params::to_vec;
use cria_core::{Int, Tensor, TensorData, device};
use cria_testkit::{assert_close, rand_vec};

/// Value and input gradient of `f(x)`, with an arbitrary upstream gradient via a weighted sum.
fn value_and_grad<const D: usize>(
    x: &[f32],
    shape: [usize; D],
    f: impl Fn(Tensor<D>) -> Tensor<1>,
) -> (Vec<f32>, Vec<f32>) {
    let dev = device::training_device();
    let t = Tensor::<D>::from_data(TensorData::new(x.to_vec(), shape), &dev).require_grad();
    let y = f(t.clone());
    let n = y.dims()[0];
    let w = Tensor::<1>::from_data(TensorData::new(rand_vec(n, 99), [n]), &dev);
    let g = (y.clone() * w).sum().backward();
    (to_vec(y), to_vec(t.grad(&g).expect("input gradient")))
}

#[test]
fn cross_entropy_matches_log_softmax_gather() {
    let (n, v) = (37, 301);
    let x = rand_vec(n * v, 1);
    let targets: Vec<i64> = (0..n as i64).map(|i| (i * 53) % v as i64).collect();
    let dev = device::training_device();
    let tg = || Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [n]), &dev);
    let (y1, g1) = value_and_grad(&x, [n, v], |t| kernels::cross_entropy_rows(t, tg()));
    let (y2, g2) = value_and_grad(&x, [n, v], |t| {
        kernels::cross_entropy_rows_reference(t, tg())
    });
    assert_close(&y1, &y2, 1e-5, "loss");
    assert_close(&g1, &g2, 1e-6, "gradient");
    // And on the inference device (no autodiff) the value is the same.
    let inf = device::inference_device();
    let y3 = to_vec(kernels::cross_entropy_rows(
        Tensor::from_data(TensorData::new(x.clone(), [n, v]), &inf),
        Tensor::from_data(TensorData::new(targets.clone(), [n]), &inf),
    ));
    assert_close(&y1, &y3, 0.0, "inference path");
}

/// Value and gradients of q, k, v for an attention function, with a fixed upstream gradient.
fn attention_grads(
    dims: ([usize; 4], [usize; 4]),
    offset: usize,
    window: Option<usize>,
    f: fn(Tensor<4>, Tensor<4>, Tensor<4>, usize, Option<usize>) -> Tensor<4>,
) -> Vec<Vec<f32>> {
    let dev = device::training_device();
    let (qd, kd) = dims;
    let mk = |shape: [usize; 4], seed| {
        let n = shape.iter().product();
        Tensor::<4>::from_data(TensorData::new(rand_vec(n, seed), shape), &dev).require_grad()
    };
    let (q, k, v) = (mk(qd, 1), mk(kd, 2), mk(kd, 3));
    let y = f(q.clone(), k.clone(), v.clone(), offset, window);
    let n: usize = qd.iter().product();
    let w = Tensor::<4>::from_data(TensorData::new(rand_vec(n, 4), qd), &dev);
    let g = (y.clone() * w).sum().backward();
    vec![
        to_vec(y),
        to_vec(q.grad(&g).unwrap()),
        to_vec(k.grad(&g).unwrap()),
        to_vec(v.grad(&g).unwrap()),
    ]
}

#[test]
fn attention_matches_composed_ops_with_gqa_and_window() {
    // B=2, T queries, H=4 heads over KV=2 key/value heads, D=8. T=150 spans three query
    // blocks of the kernel (64 rows each, the last partial), each over its own key range.
    let cases = [
        (7, None, 0),
        (7, Some(3), 0),
        (7, None, 4),
        (7, Some(5), 4),
        (150, None, 0),
        (150, Some(40), 0),
        (150, None, 9),
        (150, Some(70), 9),
    ];
    for (t, window, offset) in cases {
        let dims = ([2, t, 4, 8], [2, t + offset, 2, 8]);
        let a = attention_grads(dims, offset, window, kernels::attention);
        let b = attention_grads(dims, offset, window, kernels::attention_reference);
        for (name, (x, y)) in ["out", "dq", "dk", "dv"].iter().zip(a.iter().zip(&b)) {
            assert_close(
                x,
                y,
                2e-5,
                &format!("{name} (T {t}, window {window:?}, offset {offset})"),
            );
        }
    }
}

/// Value and gradients of two inputs under `f`, with a fixed upstream gradient.
fn two_input_grads(
    a: (&[f32], [usize; 2]),
    b: (&[f32], [usize; 1]),
    f: impl Fn(Tensor<2>, Tensor<1>) -> Tensor<2>,
) -> Vec<Vec<f32>> {
    let dev = device::training_device();
    let x = Tensor::<2>::from_data(TensorData::new(a.0.to_vec(), a.1), &dev).require_grad();
    let w = Tensor::<1>::from_data(TensorData::new(b.0.to_vec(), b.1), &dev).require_grad();
    let y = f(x.clone(), w.clone());
    let up = Tensor::<2>::from_data(TensorData::new(rand_vec(a.1[0] * a.1[1], 5), a.1), &dev);
    let g = (y.clone() * up).sum().backward();
    vec![
        to_vec(y),
        to_vec(x.grad(&g).unwrap()),
        to_vec(w.grad(&g).unwrap()),
    ]
}

#[test]
fn rms_norm_matches_composed_ops() {
    let (n, c) = (150, 48);
    let x = rand_vec(n * c, 7);
    let w = rand_vec(c, 8);
    let a = two_input_grads((&x, [n, c]), (&w, [c]), |x, w| {
        kernels::rms_norm(x, w, 1e-5)
    });
    let b = two_input_grads((&x, [n, c]), (&w, [c]), |x, w| {
        kernels::rms_norm_reference(x, w, 1e-5)
    });
    for (name, (x, y)) in ["out", "dx", "dw"].iter().zip(a.iter().zip(&b)) {
        assert_close(x, y, 2e-5, name);
    }
}

#[test]
fn swiglu_matches_composed_ops() {
    let dev = device::training_device();
    let n = 3 * 1000 + 17;
    let run = |f: fn(Tensor<1>, Tensor<1>) -> Tensor<1>| {
        let g = Tensor::<1>::from_data(TensorData::new(rand_vec(n, 11), [n]), &dev).require_grad();
        let u = Tensor::<1>::from_data(TensorData::new(rand_vec(n, 12), [n]), &dev).require_grad();
        let y = f(g.clone(), u.clone());
        let up = Tensor::<1>::from_data(TensorData::new(rand_vec(n, 13), [n]), &dev);
        let gr = (y.clone() * up).sum().backward();
        vec![
            to_vec(y),
            to_vec(g.grad(&gr).unwrap()),
            to_vec(u.grad(&gr).unwrap()),
        ]
    };
    let a = run(kernels::swiglu);
    let b = run(kernels::swiglu_reference);
    for (name, (x, y)) in ["out", "dg", "du"].iter().zip(a.iter().zip(&b)) {
        assert_close(x, y, 1e-5, name);
    }
}

#[test]
fn linear_matches_matmul_in_value_and_both_gradients() {
    // 70 rows cut into uneven blocks across threads; a weight that is frozen (LoRA's base)
    // gets no gradient while the input still does.
    let dev = device::training_device();
    let (n, d_in, d_out) = (70, 24, 40);
    let run = |f: fn(Tensor<2>, Tensor<2>) -> Tensor<2>, frozen: bool| {
        let x = Tensor::<2>::from_data(TensorData::new(rand_vec(n * d_in, 21), [n, d_in]), &dev)
            .require_grad();
        let mut w = Tensor::<2>::from_data(
            TensorData::new(rand_vec(d_in * d_out, 22), [d_in, d_out]),
            &dev,
        );
        if !frozen {
            w = w.require_grad();
        }
        let y = f(x.clone(), w.clone());
        let up = Tensor::<2>::from_data(TensorData::new(rand_vec(n * d_out, 23), [n, d_out]), &dev);
        let gr = (y.clone() * up).sum().backward();
        let dw = w.grad(&gr).map(to_vec);
        (to_vec(y), to_vec(x.grad(&gr).unwrap()), dw)
    };
    let (y1, dx1, dw1) = run(kernels::linear, false);
    let (y2, dx2, dw2) = run(kernels::linear_reference, false);
    assert_close(&y1, &y2, 1e-5, "out");
    assert_close(&dx1, &dx2, 1e-5, "dx");
    assert_close(&dw1.unwrap(), &dw2.unwrap(), 1e-5, "dw");
    let (y3, dx3, dw3) = run(kernels::linear, true);
    assert!(dw3.is_none(), "a frozen weight has no gradient");
    assert_close(&y3, &y1, 0.0, "frozen out");
    assert_close(&dx3, &dx1, 0.0, "frozen dx");
    // Inference device (no autodiff): the same value.
    let inf = device::inference_device();
    let y4 = to_vec(kernels::linear(
        Tensor::from_data(TensorData::new(rand_vec(n * d_in, 21), [n, d_in]), &inf),
        Tensor::from_data(
            TensorData::new(rand_vec(d_in * d_out, 22), [d_in, d_out]),
            &inf,
        ),
    ));
    assert_close(&y4, &y1, 0.0, "inference path");
}

#[test]
fn rope_matches_composed_ops_at_an_offset() {
    let dev = device::training_device();
    let (b, t, h, d, max_len, offset) = (2, 5, 3, 8, 12, 4);
    // Tables with equal halves, as Rope builds them.
    let table = |f: fn(f32) -> f32| {
        let v: Vec<f32> = (0..max_len * d)
            .map(|i| f((i / d) as f32 * 0.3 / (1.0 + (i % d % (d / 2)) as f32)))
            .collect();
        Tensor::<2>::from_data(TensorData::new(v, [max_len, d]), &dev)
    };
    let (cos, sin) = (table(f32::cos), table(f32::sin));
    let n = b * t * h * d;
    let run = |f: fn(Tensor<4>, &Tensor<2>, &Tensor<2>, usize) -> Tensor<4>| {
        let x = Tensor::<4>::from_data(TensorData::new(rand_vec(n, 31), [b, t, h, d]), &dev)
            .require_grad();
        let y = f(x.clone(), &cos, &sin, offset);
        let up = Tensor::<4>::from_data(TensorData::new(rand_vec(n, 32), [b, t, h, d]), &dev);
        let gr = (y.clone() * up).sum().backward();
        (to_vec(y), to_vec(x.grad(&gr).unwrap()))
    };
    let (y1, g1) = run(kernels::rope);
    let (y2, g2) = run(kernels::rope_reference);
    assert_close(&y1, &y2, 1e-6, "rotated");
    assert_close(&g1, &g2, 1e-6, "gradient");
}
