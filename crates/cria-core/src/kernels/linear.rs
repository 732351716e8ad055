//! `x · W` for `x (N, in)` and `W (in, out)` on the gemm crate, with a backward that computes
//! `dx = dy · Wᵀ` and `dW = xᵀ · dy` side by side on the pool (burn runs them one after the
//! other), each from strided views of the saved tensors: no transposed copies.

use super::gemm::{Mat, product_par};
use super::util::{f32s, shape, tensor};
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Flex};
use burn_flex::FlexTensor;

fn dims(x: &FlexTensor, w: &FlexTensor) -> (usize, usize, usize) {
    let (xs, ws) = (shape(x), shape(w));
    assert!(
        xs.len() == 2 && ws.len() == 2,
        "linear takes 2-D input and weight"
    );
    assert_eq!(xs[1], ws[0], "input width equals the weight's rows");
    (xs[0], ws[0], ws[1])
}

pub fn forward(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
    let (n, d_in, d_out) = dims(x, w);
    let (xs, ws) = (f32s(x), f32s(w));
    let y = product_par(Mat::dense(&xs, n, d_in), Mat::dense(&ws, d_in, d_out));
    tensor(y, &[n, d_out])
}

/// `(dx, dW)`, each only where asked for.
fn backward(
    x: &FlexTensor,
    w: &FlexTensor,
    dy: &FlexTensor,
    want: [bool; 2],
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    let (n, d_in, d_out) = dims(x, w);
    let dys = f32s(dy);
    let dy = Mat::dense(&dys, n, d_out);
    rayon::join(
        || {
            want[0].then(|| {
                let ws = f32s(w);
                let dx = product_par(dy, Mat::dense(&ws, d_in, d_out).t());
                tensor(dx, &[n, d_in])
            })
        },
        || {
            want[1].then(|| {
                let xs = f32s(x);
                let dw = product_par(Mat::dense(&xs, n, d_in).t(), dy);
                tensor(dw, &[d_in, d_out])
            })
        },
    )
}

#[derive(Debug)]
struct LinearOp;

impl Backward<Flex, 2> for LinearOp {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w) = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        let [px, pw] = ops.parents.map(|p| p.map(|n| n.id));
        let (dx, dw) = backward(&x, &w, &dy, [px.is_some(), pw.is_some()]);
        for (parent, value) in [(px, dx), (pw, dw)] {
            if let (Some(id), Some(value)) = (parent, value) {
                grads.register::<Flex>(id, value);
            }
        }
    }
}

pub fn run_autodiff<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    w: FloatTensor<Autodiff<Flex, C>>,
) -> FloatTensor<Autodiff<Flex, C>> {
    let nodes = [x.node(), w.node()];
    let x = <Autodiff<Flex, C> as AutodiffBackend>::inner(x);
    let w = <Autodiff<Flex, C> as AutodiffBackend>::inner(w);
    let y = forward(&x, &w);
    match LinearOp.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((x, w), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}
