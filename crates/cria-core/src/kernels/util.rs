//! Moving between burn-flex tensors and slices.

use burn::backend::Flex;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::grads::Gradients;
use burn::tensor::{DType, TensorData};
use burn_flex::FlexTensor;

/// The tensor's values as contiguous `f32` (copied only if strided).
pub fn f32s(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    assert_eq!(t.dtype(), DType::F32, "cria kernels run in f32");
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("contiguous")
                .to_vec(),
        ),
    }
}

/// A vector of `n` values written by `fill` over disjoint chunks of `chunk` elements in
/// parallel (`fill(i, part)` gets chunk `i`), never zeroed first: for outputs every element of
/// which a kernel writes (zeroing them cost a pass over memory on the thread driving the graph).
///
/// # Safety
/// `fill` must write every element of the chunk it is given.
pub unsafe fn filled(
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, part)| fill(i, part));
    // SAFETY: the chunks cover all n elements and the caller's `fill` wrote each of them.
    unsafe { v.set_len(n) };
    v
}

/// Integer tensor values as `usize` indices.
pub fn indices(t: &FlexTensor) -> Vec<usize> {
    let c = t.to_contiguous();
    match c.dtype() {
        DType::I64 => c
            .as_slice::<i64>()
            .expect("contiguous")
            .iter()
            .map(|&x| x as usize)
            .collect(),
        DType::I32 => c
            .as_slice::<i32>()
            .expect("contiguous")
            .iter()
            .map(|&x| x as usize)
            .collect(),
        other => panic!("index tensor of dtype {other:?}"),
    }
}

pub fn shape(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().to_vec()
}

pub fn tensor(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
}

/// Hands each input's gradient to its parent node, skipping inputs that need none.
/// Pass `ops.parents.map(|p| p.map(|n| n.id))`.
pub fn register<const N: usize>(
    grads: &mut Gradients,
    parents: [Option<NodeId>; N],
    values: [FlexTensor; N],
) {
    for (parent, value) in parents.into_iter().zip(values) {
        if let Some(id) = parent {
            grads.register::<Flex>(id, value);
        }
    }
}
