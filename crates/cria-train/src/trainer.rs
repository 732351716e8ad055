//! The training loop every stage runs: micro-batches with gradient accumulation, global-norm
//! clipping, AdamW with warmup + cosine, validation, atomic checkpoints with exact resume, a
//! metrics JSONL, and a stop on a non-finite loss that keeps the last good checkpoint.

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, AdamWParams, clip_factor, global_norm};
use crate::schedule::lr_at;
use crate::state::{OPTIMIZER_FILE, STATE_FILE, TrainerState, optimizer_tensors, read_optimizer};
use cria_core::checkpoint::{self, SaveExtras};
use cria_core::model::cross_entropy;
use cria_core::nn::AdapterConfig;
use cria_core::nn::lora::mix;
use cria_core::params::{ParamMut, Params, to_vec};
use cria_core::{Device, Int, Llama, Tensor, TensorData};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One micro-batch: `b` rows of `t` input ids and their targets; `weights` (0/1 per target)
/// select which positions count toward the loss (all when `None`).
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub weights: Option<Vec<f32>>,
    pub b: usize,
    pub t: usize,
    /// What preference objectives need besides tokens.
    pub aux: Aux,
}

/// Per-row facts of preference batches: rows come in groups of one prompt's responses, best
/// first.
#[derive(Debug, Clone, Default)]
pub struct Aux {
    /// Tokens before padding, per row (the reward is read at `lengths[i] - 1`).
    pub lengths: Vec<usize>,
    /// Rows per group, in order.
    pub groups: Vec<usize>,
    /// The frozen reference model's log-probability of each row's response (DPO).
    pub ref_logps: Vec<f32>,
}

/// Named figures a stage logs besides the loss (averaged over a step's micro-batches).
pub type Metrics = BTreeMap<String, f64>;

/// What a stage minimises: the loss of a micro-batch, and figures to log with it.
pub trait Objective {
    fn loss(&self, model: &Llama, batch: &Batch, device: &Device) -> Result<(Tensor<1>, Metrics)>;
}

/// Next-token cross-entropy over the batch's weighted positions (pretraining, SFT).
pub struct LmLoss;

impl Objective for LmLoss {
    fn loss(&self, model: &Llama, batch: &Batch, device: &Device) -> Result<(Tensor<1>, Metrics)> {
        Ok((batch_loss(model, batch, device), Metrics::new()))
    }
}

/// `(B, T)` int ids of a batch's inputs.
pub fn input_ids(batch: &Batch, device: &Device) -> Tensor<2, Int> {
    Tensor::<2, Int>::from_data(
        TensorData::new(
            batch.inputs.iter().map(|&x| x as i64).collect::<Vec<_>>(),
            [batch.b, batch.t],
        ),
        device,
    )
}

impl Batch {
    /// Positions that count toward the loss.
    pub fn num_tokens(&self) -> usize {
        match &self.weights {
            Some(w) => w.iter().filter(|x| **x != 0.0).count(),
            None => self.b * self.t,
        }
    }
}

/// Where a stage's batches come from. `train_batch(k)` must return the same batch for the same
/// `k` in every run: exact resume depends on it.
pub trait DataSource {
    fn train_batch(&mut self, k: u64) -> Result<Batch>;
    fn val_batches(&mut self, n: usize) -> Result<Vec<Batch>>;
    /// Identifies the data, so a resume on different data is refused.
    fn fingerprint(&self) -> String;
}

/// Examples served `batch_size` per micro-batch in a seeded order (validation in file order),
/// `make` turning the chosen examples into a batch: SFT rows and preference groups both.
pub struct Shuffled<T> {
    pub train: Vec<T>,
    pub val: Vec<T>,
    batch_size: usize,
    fingerprint: String,
    order: cria_data::shards::Order,
    make: MakeBatch<T>,
}

/// Turns the examples chosen for a micro-batch into a batch.
type MakeBatch<T> = Box<dyn Fn(&[&T]) -> Batch>;

impl<T> Shuffled<T> {
    pub fn new(
        train: Vec<T>,
        val: Vec<T>,
        seed: u64,
        batch_size: usize,
        fingerprint: String,
        make: impl Fn(&[&T]) -> Batch + 'static,
    ) -> Self {
        Shuffled {
            order: cria_data::shards::Order::new(seed, train.len()),
            train,
            val,
            batch_size,
            fingerprint,
            make: Box::new(make),
        }
    }
}

impl<T> DataSource for Shuffled<T> {
    fn train_batch(&mut self, k: u64) -> Result<Batch> {
        let bs = self.batch_size as u64;
        let rows: Vec<&T> = (0..bs)
            .map(|j| &self.train[self.order.index(k * bs + j)])
            .collect();
        Ok((self.make)(&rows))
    }

    fn val_batches(&mut self, n: usize) -> Result<Vec<Batch>> {
        Ok(self
            .val
            .chunks(self.batch_size)
            .take(n)
            .map(|c| (self.make)(&c.iter().collect::<Vec<_>>()))
            .collect())
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

/// The loss of a batch: the one loss path shared by every stage that trains on tokens.
pub fn batch_loss(model: &Llama, batch: &Batch, device: &Device) -> Tensor<1> {
    let to_int = |v: &[u32]| {
        Tensor::<2, Int>::from_data(
            TensorData::new(
                v.iter().map(|&x| x as i64).collect::<Vec<_>>(),
                [batch.b, batch.t],
            ),
            device,
        )
    };
    let logits = model.forward(to_int(&batch.inputs), None);
    let weights = batch
        .weights
        .as_ref()
        .map(|w| Tensor::<2>::from_data(TensorData::new(w.clone(), [batch.b, batch.t]), device));
    cross_entropy(logits, to_int(&batch.targets), weights)
}

/// One line of the metrics file.
#[derive(Debug, Clone, Serialize)]
pub struct StepLog {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub tokens_seen: u64,
    pub elapsed_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// The objective's figures; validation ones are prefixed `val_`.
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// What the loop tells its caller (progress bars and log lines live in the binary).
pub trait Reporter {
    fn start(&mut self, _first_step: u64, _total: u64) {}
    fn step(&mut self, _log: &StepLog) {}
    fn saved(&mut self, _step: u64, _dir: &Path) {}
}

/// A reporter that says nothing.
pub struct Silent;
impl Reporter for Silent {}

/// Where a run keeps its files.
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
}

/// Everything the loop needs besides the model and data.
pub struct TrainSpec<'a> {
    pub cfg: &'a TrainConfig,
    pub run: &'a RunDir,
    /// Copied into every checkpoint (tokenizer files).
    pub tokenizer_dir: Option<&'a Path>,
    /// The resolved stage config, written beside every checkpoint.
    pub resolved_config: String,
    /// Name of that file.
    pub config_file: &'a str,
    /// `Some((lora, base))`: checkpoints hold only the LoRA adapter (PEFT layout) and a resume
    /// rebuilds the model from the base checkpoint plus that adapter.
    pub adapter: Option<(AdapterConfig<'a>, &'a Path)>,
    /// Which parameters train (by Hugging Face name); `None` trains all. Frozen parameters get
    /// no gradient and no optimizer state.
    pub trainable: Option<&'a dyn Fn(&str) -> bool>,
    /// Further files for every checkpoint, written after the tokenizer files (so they may
    /// replace one, e.g. a `tokenizer_config.json` with a chat template).
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// The loss (and figures) the stage minimises.
    pub objective: &'a dyn Objective,
}

fn fingerprint(
    cfg: &TrainConfig,
    model: &Llama,
    data: &dyn DataSource,
    adapter: Option<AdapterConfig<'_>>,
) -> String {
    format!(
        "model={} lora={adapter:?} batch_size={} grad_accum={} seed={} data={}",
        serde_json::to_string(&model.cfg.to_json()).expect("JSON"),
        cfg.batch_size,
        cfg.grad_accum,
        cfg.seed,
        data.fingerprint()
    )
}

/// Runs (or resumes) training until `cfg.steps`, returning the trained model on the inference
/// device. `model` is the starting point; when the run directory holds a checkpoint the run
/// resumes from it instead.
pub fn train(
    model: Llama,
    data: &mut dyn DataSource,
    spec: &TrainSpec<'_>,
    rep: &mut dyn Reporter,
) -> Result<Llama> {
    let cfg = spec.cfg;
    if cfg.batch_size == 0 || cfg.grad_accum == 0 {
        return Err(TrainError::Invalid(
            "batch_size and grad_accum must be at least 1".into(),
        ));
    }
    let train_dev = cria_core::device::training_device();
    let infer_dev = cria_core::device::inference_device();
    let fp = fingerprint(cfg, &model, data, spec.adapter.map(|a| a.0));
    let root = &spec.run.root;
    std::fs::create_dir_all(root).map_err(|e| cria_core::CoreError::io(root, e))?;
    let ckpt = spec.run.checkpoint();
    cria_core::fsutil::recover_dir(&ckpt)?;
    let (mut model, mut opt, mut st) = if ckpt.join(STATE_FILE).exists() {
        resume(&ckpt, &fp, &infer_dev, spec.adapter)?
    } else {
        let st = TrainerState {
            step: 0,
            micro_cursor: 0,
            tokens_seen: 0,
            fingerprint: fp.clone(),
            last_val_loss: None,
        };
        (model, AdamW::default(), st)
    };
    truncate_metrics(&spec.run.metrics(), st.step)?;
    let all = |_: &str| true;
    let trainable: &dyn Fn(&str) -> bool = spec.trainable.unwrap_or(&all);
    model = model.to_device(&train_dev).require_grad_where(trainable);
    let hp = AdamWParams {
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
    };
    rep.start(st.step, cfg.steps);
    let started = Instant::now();
    while st.step < cfg.steps {
        let t0 = Instant::now();
        let (loss, tokens, mut grads, metrics) = accumulate(
            &model,
            data,
            cfg,
            &mut st,
            &train_dev,
            &ckpt,
            trainable,
            spec.objective,
        )?;
        let norm = global_norm(&grads.values().map(|g| g.as_slice()).collect::<Vec<_>>());
        if !norm.is_finite() {
            return Err(non_finite(st.step + 1, norm, &ckpt));
        }
        let factor = clip_factor(norm, cfg.grad_clip) as f32;
        let lr = lr_at(cfg, st.step);
        opt.begin_step();
        model.visit("", &mut |name, p| {
            let Some(g) = grads.get_mut(name) else {
                return; // frozen
            };
            if factor != 1.0 {
                g.iter_mut().for_each(|x| *x *= factor);
            }
            let decay = matches!(p, ParamMut::Matrix { .. });
            let mut values = to_vec(p.flat());
            opt.update(name, &mut values, g, lr, &hp, decay);
            set_flat(p, values, &train_dev);
        });
        st.step += 1;
        st.tokens_seen += tokens as u64;
        let mut log = StepLog {
            step: st.step,
            loss,
            lr,
            grad_norm: norm,
            tokens_per_s: tokens as f64 / t0.elapsed().as_secs_f64(),
            tokens_seen: st.tokens_seen,
            elapsed_s: started.elapsed().as_secs_f64(),
            val_loss: None,
            metrics,
        };
        let last = st.step == cfg.steps;
        if last || (cfg.eval_every > 0 && st.step % cfg.eval_every == 0) {
            let (v, vm) = validate(&model, data, cfg.eval_batches, &infer_dev, spec.objective)?;
            log.val_loss = v;
            log.metrics
                .extend(vm.into_iter().map(|(k, x)| (format!("val_{k}"), x)));
            st.last_val_loss = v;
        }
        append_metrics(&spec.run.metrics(), &log)?;
        rep.step(&log);
        if last || (cfg.save_every > 0 && st.step % cfg.save_every == 0) {
            save_checkpoint(&model, &opt, &st, spec, &infer_dev)?;
            rep.saved(st.step, &ckpt);
        }
    }
    Ok(model.to_device(&infer_dev))
}

type Grads = BTreeMap<String, Vec<f32>>;

/// Runs the micro-batches of one step, returning the mean loss, tokens, summed gradients and
/// the objective's figures averaged over the micro-batches.
#[allow(clippy::too_many_arguments)]
fn accumulate(
    model: &Llama,
    data: &mut dyn DataSource,
    cfg: &TrainConfig,
    st: &mut TrainerState,
    device: &Device,
    ckpt: &Path,
    trainable: &dyn Fn(&str) -> bool,
    objective: &dyn Objective,
) -> Result<(f64, usize, Grads, Metrics)> {
    let mut grads: Grads = BTreeMap::new();
    let mut metrics = Metrics::new();
    let (mut loss_sum, mut tokens) = (0.0f64, 0usize);
    for _ in 0..cfg.grad_accum {
        let batch = data.train_batch(st.micro_cursor)?;
        tokens += batch.num_tokens();
        // Dropout masks are keyed by seed and micro-batch, so a resume draws the same ones.
        let mut keyed = model.clone();
        keyed.set_train_key(Some(mix(cfg.seed ^ mix(st.micro_cursor))));
        let (loss, m) = objective.loss(&keyed, &batch, device)?;
        for (k, v) in m {
            *metrics.entry(k).or_default() += v / cfg.grad_accum as f64;
        }
        let loss = loss / cfg.grad_accum as f64;
        let value = loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            return Err(non_finite(st.step + 1, value, ckpt));
        }
        loss_sum += value;
        let g = loss.backward();
        let mut missing = None;
        let mut m = model.clone();
        m.visit("", &mut |name, p| {
            if !trainable(name) {
                return;
            }
            let grad = match &p {
                ParamMut::Vector(t) => t.grad(&g).map(to_vec),
                ParamMut::Matrix { t, .. } => t.grad(&g).map(to_vec),
            };
            match grad {
                Some(v) => match grads.get_mut(name) {
                    Some(acc) => acc.iter_mut().zip(&v).for_each(|(a, b)| *a += b),
                    None => {
                        grads.insert(name.to_string(), v);
                    }
                },
                None => missing = Some(name.to_string()),
            }
        });
        if let Some(name) = missing {
            return Err(TrainError::Invalid(format!(
                "parameter `{name}` received no gradient"
            )));
        }
        st.micro_cursor += 1;
    }
    Ok((loss_sum, tokens, grads, metrics))
}

/// Replaces a parameter with new values, as a fresh leaf that requires gradients.
pub fn set_flat(p: ParamMut<'_>, values: Vec<f32>, device: &Device) {
    match p {
        ParamMut::Vector(t) => {
            let n = values.len();
            *t = Tensor::from_data(TensorData::new(values, [n]), device).require_grad();
        }
        ParamMut::Matrix { t, .. } => {
            let dims = t.dims();
            *t = Tensor::from_data(TensorData::new(values, dims), device).require_grad();
        }
    }
}

fn non_finite(step: u64, value: f64, ckpt: &Path) -> TrainError {
    TrainError::NonFinite {
        step,
        value: format!("{value}"),
        checkpoint: ckpt.to_path_buf(),
    }
}

/// Mean validation loss and figures over up to `n` batches; `None` when there is no
/// validation data.
pub fn validate(
    model: &Llama,
    data: &mut dyn DataSource,
    n: usize,
    device: &Device,
    objective: &dyn Objective,
) -> Result<(Option<f64>, Metrics)> {
    let batches = data.val_batches(n)?;
    let mut metrics = Metrics::new();
    if batches.is_empty() {
        return Ok((None, metrics));
    }
    let m = model.clone().to_device(device);
    let mut sum = 0.0;
    for b in &batches {
        let (loss, bm) = objective.loss(&m, b, device)?;
        sum += loss.into_scalar::<f32>() as f64;
        for (k, v) in bm {
            *metrics.entry(k).or_default() += v / batches.len() as f64;
        }
    }
    Ok((Some(sum / batches.len() as f64), metrics))
}

fn save_checkpoint(
    model: &Llama,
    opt: &AdamW,
    st: &TrainerState,
    spec: &TrainSpec<'_>,
    device: &Device,
) -> Result<()> {
    let m = model.clone().to_device(device);
    let extras = SaveExtras {
        tokenizer_from: spec.tokenizer_dir,
        files: [
            (STATE_FILE.to_string(), st.to_bytes()),
            (
                spec.config_file.to_string(),
                spec.resolved_config.clone().into_bytes(),
            ),
        ]
        .into_iter()
        .chain(spec.extra_files.iter().cloned())
        .collect(),
        tensors: vec![(OPTIMIZER_FILE.to_string(), optimizer_tensors(opt))],
        adapter: spec
            .adapter
            .map(|(cfg, base)| (cfg, base.to_str().unwrap_or_default())),
    };
    checkpoint::save(&m, &spec.run.checkpoint(), extras)?;
    Ok(())
}

fn resume(
    ckpt: &Path,
    fp: &str,
    device: &Device,
    adapter: Option<(AdapterConfig<'_>, &Path)>,
) -> Result<(Llama, AdamW, TrainerState)> {
    let st = TrainerState::read(ckpt)?;
    if st.fingerprint != fp {
        return Err(TrainError::Resume {
            path: ckpt.join(STATE_FILE),
            msg: format!(
                "the checkpoint was made with a different setup; start a new run directory or restore \
                 the original config.\n  checkpoint: {}\n  now:        {fp}",
                st.fingerprint
            ),
        });
    }
    let model = match adapter {
        None => checkpoint::load_model(ckpt, device)?,
        Some((_, base)) => {
            let mut m = checkpoint::load_model(base, device)?;
            m.load_adapter(ckpt)?;
            m
        }
    };
    let opt = read_optimizer(ckpt)?;
    tracing::info!(step = st.step, dir = %ckpt.display(), "resuming");
    Ok((model, opt, st))
}

/// Drops metric lines after `step` (written after the checkpoint a resumed run restarts from).
pub fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    cria_core::fsutil::write_atomic(path, kept.as_bytes())?;
    Ok(())
}

pub fn append_metrics(path: &Path, log: &StepLog) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| cria_core::CoreError::io(path, e))?;
    let line = serde_json::to_string(log).expect("serialisable");
    writeln!(f, "{line}").map_err(|e| cria_core::CoreError::io(path, e))?;
    Ok(())
}
