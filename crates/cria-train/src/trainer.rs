//! The training loop every gradient stage runs (pretraining, SFT, reward model, DPO):
//! micro-batches with gradient accumulation, the shared parameter update (global-norm clipping,
//! AdamW with warmup + cosine), validation, atomic checkpoints with exact resume, a metrics
//! JSONL, and a stop on a non-finite loss that keeps the last good checkpoint. With several
//! ranks ([`crate::dp`]) each runs its share of the micro-batches and only rank 0 writes.

use crate::batch::Batch;
use crate::collective::{Collective, CollectiveExt};
use crate::config::TrainConfig;
use crate::data::DataSource;
use crate::divergence::{self, CheckpointAt};
use crate::dp;
use crate::error::{Result, TrainError};
use crate::method::{Trainable, every_param};
use crate::metrics::{Metrics, Reporter, RunDir, StepLog, append_metrics, truncate_metrics};
use crate::optim::AdamW;
use crate::schedule::lr_at;
use crate::state::{
    OPTIMIZER_FILE, STATE_FILE, TrainerState, check_fingerprint, load_trained, optimizer_tensors,
    read_optimizer,
};
use crate::update::{Grads, NonFiniteNorm, Optimizer};
use cria_core::checkpoint::{self, SaveExtras};
use cria_core::nn::AdapterConfig;
use cria_core::{Device, Llama, Tensor};
use std::path::Path;
use std::time::Instant;

/// What a stage minimises: the loss of a micro-batch, and figures to log with it.
pub trait Objective {
    fn loss(&self, model: &Llama, batch: &Batch, device: &Device) -> Result<(Tensor<1>, Metrics)>;
}

/// Next-token cross-entropy over the batch's weighted positions (pretraining, SFT).
pub struct LmLoss;

impl Objective for LmLoss {
    fn loss(&self, model: &Llama, batch: &Batch, device: &Device) -> Result<(Tensor<1>, Metrics)> {
        Ok((
            crate::scoring::lm_loss(model, batch, device),
            Metrics::new(),
        ))
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
    /// `Some((adapter, base))`: checkpoints hold only the adapter (LoRA in PEFT's layout, or a
    /// LLaMA-Adapter) and a resume rebuilds the model from the base checkpoint plus that adapter.
    pub adapter: Option<(AdapterConfig<'a>, &'a Path)>,
    /// Which parameters train (by Hugging Face name); `None` trains all. Frozen parameters get
    /// no gradient and no optimizer state.
    pub trainable: Option<&'a Trainable>,
    /// Further files for every checkpoint, written after the tokenizer files (so they may
    /// replace one, e.g. a `tokenizer_config.json` with a chat template).
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// The loss (and figures) the stage minimises.
    pub objective: &'a dyn Objective,
    /// The ranks of the run: the process's own world unless a test gives another.
    pub world: &'a dyn Collective,
}

impl<'a> TrainSpec<'a> {
    /// The usual spec: every parameter trains, checkpoints carry the tokenizer files of
    /// `tokenizer_dir` and the resolved config as `config_file`, nothing else.
    pub fn new(
        cfg: &'a TrainConfig,
        run: &'a RunDir,
        tokenizer_dir: &'a Path,
        resolved_config: String,
        config_file: &'a str,
        objective: &'a dyn Objective,
    ) -> Self {
        TrainSpec {
            cfg,
            run,
            tokenizer_dir: Some(tokenizer_dir),
            resolved_config,
            config_file,
            adapter: None,
            trainable: None,
            extra_files: vec![],
            objective,
            world: crate::collective::world(),
        }
    }
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
    let (cfg, world) = (spec.cfg, spec.world);
    cfg.validate("train")?;
    dp::check_split(world, cfg.grad_accum)?;
    let train_dev = cria_core::device::training_device();
    let infer_dev = cria_core::device::inference_device();
    let fp = fingerprint(cfg, &model, data, spec.adapter.map(|a| a.0));
    dp::check_same_setup(world, &fp)?;
    let ckpt = spec.run.checkpoint();
    if world.is_root() {
        spec.run.prepare()?;
    }
    let resuming = world.agree(ckpt.join(STATE_FILE).exists());
    let (mut model, mut adamw, mut st) = if resuming && world.is_root() {
        resume(&ckpt, &fp, &infer_dev, spec.adapter.map(|a| a.1), cfg)?
    } else {
        (model, AdamW::default(), TrainerState::fresh(fp))
    };
    if world.size() > 1 {
        dp::share_start(world, &mut model, &mut adamw, &mut st)?;
        tracing::info!(
            ranks = world.size(),
            transport = %world.transport(),
            micro_batches_per_rank = cfg.grad_accum / world.size(),
            "data-parallel run: rank 0 writes checkpoints and metrics"
        );
    }
    st.train = Some(cfg.clone());
    if world.is_root() {
        truncate_metrics(&spec.run.metrics(), st.step)?;
    }
    let trainable: &Trainable = spec.trainable.unwrap_or(&every_param);
    let mut model = model.to_device(&train_dev).require_grad_where(trainable);
    let mut opt = Optimizer::new(cfg, adamw);
    rep.start(st.step, cfg.steps);
    let started = Instant::now();
    while st.step < cfg.steps {
        let t0 = Instant::now();
        let work = accumulate(&model, data, cfg, &mut st, &train_dev, spec)?;
        let lr = lr_at(cfg, st.step);
        let norm = opt
            .step(&mut model, work.grads, lr)
            .map_err(|NonFiniteNorm(n)| diverged(st.step + 1, "gradient norm", n, spec))?;
        st.step += 1;
        st.tokens_seen += work.tokens as u64;
        let log = StepLog {
            step: st.step,
            loss: work.loss,
            lr,
            grad_norm: norm,
            tokens_per_s: work.tokens as f64 / t0.elapsed().as_secs_f64(),
            tokens_seen: st.tokens_seen,
            elapsed_s: started.elapsed().as_secs_f64(),
            val_loss: None,
            metrics: work.metrics,
        };
        after_step(&model, &opt, &mut st, log, &work.last, data, spec, rep)?;
    }
    Ok(model.to_device(&infer_dev))
}

/// Validation when due, the blow-up guard, the metrics line and the checkpoint when due
/// (`batch` is the step's last micro-batch).
#[allow(clippy::too_many_arguments)]
fn after_step(
    model: &Llama,
    opt: &Optimizer,
    st: &mut TrainerState,
    mut log: StepLog,
    batch: &Batch,
    data: &mut dyn DataSource,
    spec: &TrainSpec<'_>,
    rep: &mut dyn Reporter,
) -> Result<()> {
    let (cfg, infer_dev, world) = (spec.cfg, cria_core::device::inference_device(), spec.world);
    let last = st.step == cfg.steps;
    if last || (cfg.eval_every > 0 && st.step.is_multiple_of(cfg.eval_every)) {
        let (v, vm) = validate_on(
            world,
            model,
            data,
            cfg.eval_batches,
            &infer_dev,
            spec.objective,
        )?;
        if let Some(x) = v.filter(|x| !x.is_finite()) {
            return Err(diverged(st.step, "validation loss", x, spec));
        }
        log.val_loss = v;
        log.metrics
            .extend(vm.into_iter().map(|(k, x)| (format!("val_{k}"), x)));
        st.last_val_loss = v;
    }
    if let Some(w) = st
        .guard
        .observe(log.loss, cfg.blowup_factor, cfg.blowup_steps)
    {
        tracing::warn!(step = st.step, "{w}");
    }
    if world.is_root() {
        append_metrics(&spec.run.metrics(), &log)?;
    }
    rep.step(&log);
    if last || (cfg.save_every > 0 && st.step.is_multiple_of(cfg.save_every)) {
        dp::check_in_step(world, model, st.step)?;
        if world.is_root() {
            if log.val_loss.is_none() {
                check_before_saving(model, batch, st, spec)?;
            }
            save_checkpoint(model, &opt.adamw, st, spec, &infer_dev)?;
        }
        rep.saved(st.step, &spec.run.checkpoint());
    }
    Ok(())
}

/// A checkpoint is only good if its weights give a finite loss: finite but blown-up weights
/// (a learning rate far too high) turn the next loss into NaN. Without a validation loss this
/// step, the updated weights are scored on the step's last micro-batch first.
fn check_before_saving(
    model: &Llama,
    batch: &Batch,
    st: &TrainerState,
    spec: &TrainSpec<'_>,
) -> Result<()> {
    let dev = cria_core::device::inference_device();
    let m = model.clone().to_device(&dev);
    let loss = spec.objective.loss(&m, batch, &dev)?.0.into_scalar::<f32>() as f64;
    if !loss.is_finite() {
        return Err(diverged(
            st.step,
            "loss of the weights to be saved",
            loss,
            spec,
        ));
    }
    Ok(())
}

/// What the micro-batches of one step produced.
struct StepWork {
    /// The mean loss.
    loss: f64,
    /// Positions that counted.
    tokens: usize,
    /// Gradients summed over the micro-batches.
    grads: Grads,
    /// The objective's figures averaged over the micro-batches.
    metrics: Metrics,
    /// The last micro-batch.
    last: Batch,
}

/// Runs this rank's micro-batches of one step and sums the results over the ranks.
fn accumulate(
    model: &Llama,
    data: &mut dyn DataSource,
    cfg: &TrainConfig,
    st: &mut TrainerState,
    device: &Device,
    spec: &TrainSpec<'_>,
) -> Result<StepWork> {
    let trainable: &Trainable = spec.trainable.unwrap_or(&every_param);
    let mut grads = Grads::default();
    let mut metrics = Metrics::new();
    let (mut loss_sum, mut tokens) = (0.0f64, 0usize);
    let mut last = Batch::default();
    let world = spec.world;
    for i in dp::my_micro_batches(world, cfg.grad_accum) {
        let cursor = st.micro_cursor + i as u64;
        let batch = data.train_batch(cursor)?;
        tokens += batch.num_tokens();
        // Dropout masks are keyed by seed and micro-batch, so a resume draws the same ones.
        let mut keyed = model.clone();
        keyed.set_train_key(Some(cria_core::hash::key(cfg.seed, cursor)));
        let (loss, m) = spec.objective.loss(&keyed, &batch, device)?;
        for (k, v) in m {
            *metrics.entry(k).or_default() += v / cfg.grad_accum as f64;
        }
        let loss = loss / cfg.grad_accum as f64;
        let value = loss.clone().into_scalar::<f32>() as f64;
        // Alone, stop before the backward pass; with ranks, after the sums (all stop alike).
        if !value.is_finite() && world.size() == 1 {
            return Err(diverged(st.step + 1, "loss", value, spec));
        }
        loss_sum += value;
        grads.add(model, loss.backward(), trainable)?;
        last = batch;
    }
    st.micro_cursor += cfg.grad_accum as u64;
    // With ranks, rank 0 logs its seconds waiting for the slowest rank, then in the sums.
    let t0 = Instant::now();
    world.barrier();
    let t1 = Instant::now();
    dp::reduce_figures(world, &mut loss_sum, &mut tokens, &mut metrics);
    if !loss_sum.is_finite() {
        return Err(diverged(st.step + 1, "loss", loss_sum, spec));
    }
    grads.all_reduce(world);
    if world.size() > 1 {
        metrics.insert("wait_s".into(), (t1 - t0).as_secs_f64());
        metrics.insert("comm_s".into(), t1.elapsed().as_secs_f64());
    }
    Ok(StepWork {
        loss: loss_sum,
        tokens,
        grads,
        metrics,
        last,
    })
}

/// The error for a non-finite figure at `step`, naming the last good checkpoint.
fn diverged(step: u64, what: &str, value: f64, spec: &TrainSpec<'_>) -> TrainError {
    let dir = spec.run.checkpoint();
    let at = CheckpointAt {
        dir: &dir,
        state_file: STATE_FILE,
        key: "step",
    };
    divergence::diverged(step, what, value, &at, spec.cfg.lr)
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
    validate_on(
        &crate::collective::Single,
        model,
        data,
        n,
        device,
        objective,
    )
}

/// As [`validate`], the batches dealt out over the ranks of `world` and the sums combined.
fn validate_on(
    world: &dyn Collective,
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
    let mut tokens = 0;
    for b in batches.iter().skip(world.rank()).step_by(world.size()) {
        let (loss, bm) = objective.loss(&m, b, device)?;
        sum += loss.into_scalar::<f32>() as f64;
        for (k, v) in bm {
            *metrics.entry(k).or_default() += v / batches.len() as f64;
        }
    }
    dp::reduce_figures(world, &mut sum, &mut tokens, &mut metrics);
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
    // Nothing non-finite is ever saved: the checkpoint on disk stays the last good one.
    if let Some(name) = divergence::first_non_finite(&m) {
        return Err(diverged(st.step, &format!("weight {name}"), f64::NAN, spec));
    }
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
    adapter_base: Option<&Path>,
    now: &TrainConfig,
) -> Result<(Llama, AdamW, TrainerState)> {
    let st = TrainerState::read(ckpt)?;
    check_fingerprint(&st.fingerprint, fp, &ckpt.join(STATE_FILE))?;
    for change in st
        .train
        .iter()
        .flat_map(|saved| divergence::changed(saved, now))
    {
        tracing::info!(step = st.step, "resuming with {change}");
    }
    let model = load_trained(ckpt, adapter_base, device)?;
    let opt = read_optimizer(ckpt)?;
    tracing::info!(step = st.step, dir = %ckpt.display(), "resuming");
    Ok((model, opt, st))
}
