//! Named parameters. Every layer exposes its tensors under their Hugging Face names through one
//! visitor, which checkpoint I/O, the optimizer and gradient code all use, so there is a single
//! source of truth for what a model's parameters are called and how they are laid out.

use burn::tensor::Tensor;

/// A parameter handed to a visitor. Matrices carry whether cria stores them transposed relative
/// to the Hugging Face layout (`nn.Linear` is `[out, in]` there, `[in, out]` here).
pub enum ParamMut<'a> {
    Vector(&'a mut Tensor<1>),
    Matrix {
        t: &'a mut Tensor<2>,
        transposed: bool,
    },
}

impl ParamMut<'_> {
    /// The shape as Hugging Face stores it.
    pub fn hf_shape(&self) -> Vec<usize> {
        match self {
            ParamMut::Vector(t) => t.dims().to_vec(),
            ParamMut::Matrix { t, transposed } => {
                let [a, b] = t.dims();
                if *transposed { vec![b, a] } else { vec![a, b] }
            }
        }
    }

    pub fn num_elements(&self) -> usize {
        self.hf_shape().iter().product()
    }

    /// The values in Hugging Face layout, row-major.
    pub fn to_hf_vec(&self) -> Vec<f32> {
        let t = match self {
            ParamMut::Vector(t) => return to_vec((*t).clone()),
            ParamMut::Matrix { t, transposed } => {
                if *transposed {
                    (**t).clone().transpose()
                } else {
                    (*t).clone()
                }
            }
        };
        to_vec(t)
    }

    /// Applies `f` to the tensor as a flat vector of the same element order as storage.
    pub fn map_flat(&mut self, f: impl FnOnce(Tensor<1>) -> Tensor<1>) {
        match self {
            ParamMut::Vector(t) => **t = f((*t).clone()),
            ParamMut::Matrix { t, .. } => {
                let dims = t.dims();
                **t = f((*t).clone().reshape([dims[0] * dims[1]])).reshape(dims);
            }
        }
    }

    /// The tensor flattened to 1-D in storage order (a cheap handle).
    pub fn flat(&self) -> Tensor<1> {
        match self {
            ParamMut::Vector(t) => (*t).clone(),
            ParamMut::Matrix { t, .. } => {
                let [a, b] = t.dims();
                (*t).clone().reshape([a * b])
            }
        }
    }
}

/// Reads a tensor's values as `f32` (taking its buffer when the tensor held the only reference).
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    // `try_into_vec` keeps the tensor's own buffer when nothing else holds it (no copy).
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensor data")
}

/// Anything with named parameters.
pub trait Params {
    /// Calls `f` with every parameter's full Hugging Face name, in a fixed order.
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_>));
}

/// Joins a prefix and a name with a dot.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Where a tensor's values live (`None` off the CPU backend): two tensors at the same address
/// are one storage, not equal copies.
fn storage<const D: usize>(t: &Tensor<D>) -> Option<usize> {
    let f = t.clone().try_into_primitive::<burn::backend::Flex>().ok()?;
    f.as_slice::<f32>().map(|s| s.as_ptr() as usize)
}

/// How many of `a`'s parameters that `keep` selects are the very storage of `b`'s parameter
/// of the same name, of how many there are: a model cloned from another and then given an
/// adapter shares every base weight (`keep` leaving the adapter's own out).
pub fn shared_storage<P: Params + Clone>(
    a: &P,
    b: &P,
    keep: impl Fn(&str) -> bool,
) -> (usize, usize) {
    let addresses = |m: &P| {
        let mut out = std::collections::BTreeMap::new();
        m.clone().visit("", &mut |name, p| {
            if keep(name) {
                let at = match p {
                    ParamMut::Vector(t) => storage(t),
                    ParamMut::Matrix { t, .. } => storage(t),
                };
                out.insert(name.to_string(), at);
            }
        });
        out
    };
    let (a, b) = (addresses(a), addresses(b));
    let shared = a
        .iter()
        .filter(|(name, at)| at.is_some() && b.get(*name) == Some(*at))
        .count();
    (shared, a.len())
}
