//! Data parallelism: what the training loop does differently when a run has several ranks.
//! The micro-batches of a step are dealt out round-robin (rank r takes micro-batches r, r+n,
//! … of the step), each rank sums its gradients, and one all-reduce makes every rank's sum the
//! sum over the whole step — so with the same settings a run of n ranks takes the steps one
//! process takes, up to the order f32 additions happen in. Rank 0's weights, optimizer
//! moments and resume state are broadcast at the start, so every rank starts from the same
//! place even when only rank 0's disk holds the checkpoint.

use crate::collective::{Collective, CollectiveExt};
use crate::error::{Result, TrainError};
use crate::metrics::Metrics;
use crate::optim::{AdamW, Moments};
use crate::state::TrainerState;
use crate::update::set_values;
use cria_core::Llama;
use cria_core::hash::{FNV_OFFSET, fnv1a};
use cria_core::params::{Params, to_vec};

/// The micro-batches of a step this rank runs: indices into the step's `grad_accum`.
pub fn my_micro_batches(world: &dyn Collective, grad_accum: usize) -> Vec<usize> {
    (world.rank()..grad_accum).step_by(world.size()).collect()
}

/// A step's micro-batches must split evenly over the ranks: a rank without one would have no
/// gradient to give, and uneven shares leave ranks idle.
pub fn check_split(world: &dyn Collective, grad_accum: usize) -> Result<()> {
    let n = world.size();
    if n > 1 && !grad_accum.is_multiple_of(n) {
        return Err(TrainError::Invalid(format!(
            "train.grad_accum = {grad_accum} does not split over {n} ranks: each rank runs whole \
             micro-batches of the step, so set train.grad_accum to a multiple of {n} (the global \
             batch is batch_size × grad_accum, as in one process)"
        )));
    }
    Ok(())
}

/// Every rank's setup must be rank 0's: the same model shape, batch layout, seed and data.
pub fn check_same_setup(world: &dyn Collective, fingerprint: &str) -> Result<()> {
    let root = world.broadcast_string(fingerprint);
    let differs = world.any(root != fingerprint);
    if differs {
        return Err(TrainError::Invalid(if root == fingerprint {
            "another rank's setup differs from rank 0's (see its error)".to_string()
        } else {
            format!(
                "rank {}'s setup differs from rank 0's: every rank must run the same config on \
                 the same data.\n  rank 0: {root}\n  rank {}: {fingerprint}",
                world.rank(),
                world.rank()
            )
        }));
    }
    Ok(())
}

/// Rank 0's weights, optimizer state and trainer state on every rank.
pub fn share_start(
    world: &dyn Collective,
    model: &mut Llama,
    opt: &mut AdamW,
    st: &mut TrainerState,
) -> Result<()> {
    let mut bytes = st.to_bytes();
    world.broadcast_bytes(&mut bytes, 0);
    *st = serde_json::from_slice(&bytes).expect("rank 0's state is JSON");
    broadcast_params(world, model)?;
    broadcast_optimizer(world, opt);
    Ok(())
}

/// The names and sizes of a model's parameters, in visiting order.
fn layout(model: &Llama) -> String {
    let mut out = String::new();
    model.clone().visit("", &mut |name, p| {
        out.push_str(&format!("{name}:{};", p.num_elements()));
    });
    out
}

/// Rank 0's parameter values in `model` on every rank (the same parameters are checked first).
pub fn broadcast_params(world: &dyn Collective, model: &mut Llama) -> Result<()> {
    let mine = layout(model);
    let root = world.broadcast_string(&mine);
    if world.any(root != mine) {
        return Err(TrainError::Invalid(format!(
            "rank {}'s model has other parameters than rank 0's: every rank must start from \
             the same checkpoint and method",
            world.rank()
        )));
    }
    let device = model.device();
    model.visit("", &mut |_, p| {
        let mut v = to_vec(p.flat());
        world.broadcast_f32(&mut v, 0);
        set_values(p, v, &device);
    });
    Ok(())
}

/// Rank 0's AdamW step count and moments on every rank.
pub fn broadcast_optimizer(world: &dyn Collective, opt: &mut AdamW) {
    let names: Vec<(String, usize)> = opt
        .state
        .iter()
        .map(|(k, m)| (k.clone(), m.m.len()))
        .collect();
    let header = serde_json::to_string(&(opt.t, names)).expect("JSON");
    let (t, names): (u64, Vec<(String, usize)>) =
        serde_json::from_str(&world.broadcast_string(&header)).expect("rank 0's header");
    opt.t = t;
    let mut state = std::collections::BTreeMap::new();
    for (name, len) in names {
        let mut mv = match opt.state.remove(&name) {
            Some(Moments { m, v }) if world.is_root() => [m, v].concat(),
            _ => vec![0.0; 2 * len],
        };
        world.broadcast_f32(&mut mv, 0);
        let v = mv.split_off(len);
        state.insert(name, Moments { m: mv, v });
    }
    opt.state = state;
}

/// Sums a step's figures over the ranks: the loss, the positions that counted and the
/// objective's figures (each rank's already divided by the step's micro-batch count).
pub fn reduce_figures(world: &dyn Collective, loss: &mut f64, tokens: &mut usize, m: &mut Metrics) {
    if world.size() == 1 {
        return;
    }
    let keys = agreed_keys(world, m);
    let mut buf: Vec<f64> = [*loss, *tokens as f64]
        .into_iter()
        .chain(keys.iter().map(|k| m.get(k).copied().unwrap_or(0.0)))
        .collect();
    world.all_reduce_f64(&mut buf);
    *loss = buf[0];
    *tokens = buf[1].round() as usize;
    *m = keys.into_iter().zip(buf[2..].iter().copied()).collect();
}

/// Rank 0's figure names (a rank that ran no batch has none of its own).
pub fn agreed_keys(world: &dyn Collective, m: &Metrics) -> Vec<String> {
    let mine: Vec<String> = m.keys().cloned().collect();
    let text = world.broadcast_string(&serde_json::to_string(&mine).expect("JSON"));
    serde_json::from_str(&text).expect("rank 0's names")
}

/// Every rank's weights must stay bit-identical (each applies the same summed gradients); the
/// check runs before every checkpoint, so a drift is caught instead of saved.
pub fn check_in_step(world: &dyn Collective, model: &Llama, step: u64) -> Result<()> {
    if world.size() == 1 {
        return Ok(());
    }
    let mut h = FNV_OFFSET;
    model.clone().visit("", &mut |_, p| {
        let v = to_vec(p.flat());
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect();
        h = fnv1a(&bytes, h);
    });
    let mine = format!("{h:016x}");
    let root = world.broadcast_string(&mine);
    if world.any(root != mine) {
        return Err(TrainError::Invalid(format!(
            "after step {step} the ranks' weights differ (rank {} has {mine}, rank 0 {root}): \
             the collective did not give every rank the same sums",
            world.rank()
        )));
    }
    Ok(())
}

/// This rank's rows of `n`: a contiguous share, the first ranks taking one more when `n` does
/// not split evenly.
pub fn my_rows(world: &dyn Collective, n: usize) -> std::ops::Range<usize> {
    let (r, w) = (world.rank(), world.size());
    n * r / w..n * (r + 1) / w
}

/// Every rank's rows of a row-major `[n, width]` array, gathered on every rank: `mine` holds
/// this rank's rows [`my_rows`] and the others are filled in (zeros summed with each rank's
/// own part, so each value arrives unchanged).
pub fn gather_rows(world: &dyn Collective, n: usize, width: usize, mine: &[f32]) -> Vec<f32> {
    let rows = my_rows(world, n);
    assert_eq!(mine.len(), rows.len() * width, "this rank's rows");
    let mut all = vec![0.0f32; n * width];
    all[rows.start * width..rows.end * width].copy_from_slice(mine);
    world.all_reduce_f32(&mut all);
    all
}

/// Every rank's items gathered in rank order on every rank (each rank's list in turn
/// broadcast as JSON).
pub fn gather_json<T: serde::Serialize + serde::de::DeserializeOwned>(
    world: &dyn Collective,
    mine: Vec<T>,
) -> Vec<T> {
    if world.size() == 1 {
        return mine;
    }
    let mut out = Vec::new();
    let text = serde_json::to_vec(&mine).expect("JSON");
    for r in 0..world.size() {
        let mut b = if r == world.rank() {
            text.clone()
        } else {
            vec![]
        };
        world.broadcast_bytes(&mut b, r);
        out.extend(serde_json::from_slice::<Vec<T>>(&b).expect("a rank's items"));
    }
    out
}
