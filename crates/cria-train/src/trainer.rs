//! The training loop every gradient stage runs (pretraining, SFT, reward model, DPO):
//! micro-batches with gradient accumulation, the shared parameter update (global-norm clipping,
//! AdamW with warmup + cosine), validation, atomic checkpoints with exact resume, a metrics
//! JSONL, and a stop on a non-finite loss that keeps the last good checkpoint.

use crate::batch::Batch;
use crate::config::TrainConfig;
use crate::data::DataSource;
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
    let cfg = spec.cfg;
    if cfg.batch_size == 0 || cfg.grad_accum == 0 {
        return Err(TrainError::Invalid(
            "batch_size and grad_accum must be at least 1".into(),
        ));
    }
    let train_dev = cria_core::device::training_device();
    let infer_dev = cria_core::device::inference_device();
    let fp = fingerprint(cfg, &model, data, spec.adapter.map(|a| a.0));
    spec.run.prepare()?;
    let ckpt = spec.run.checkpoint();
    let (model, adamw, mut st) = if ckpt.join(STATE_FILE).exists() {
        resume(&ckpt, &fp, &infer_dev, spec.adapter.map(|a| a.1))?
    } else {
        (model, AdamW::default(), TrainerState::fresh(fp))
    };
    truncate_metrics(&spec.run.metrics(), st.step)?;
    let trainable: &Trainable = spec.trainable.unwrap_or(&every_param);
    let mut model = model.to_device(&train_dev).require_grad_where(trainable);
    let mut opt = Optimizer::new(cfg, adamw);
    rep.start(st.step, cfg.steps);
    let started = Instant::now();
    while st.step < cfg.steps {
        let t0 = Instant::now();
        let (loss, tokens, grads, metrics) =
            accumulate(&model, data, cfg, &mut st, &train_dev, &ckpt, spec)?;
        let lr = lr_at(cfg, st.step);
        let norm = opt
            .step(&mut model, grads, lr)
            .map_err(|NonFiniteNorm(n)| non_finite(st.step + 1, n, &ckpt))?;
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
            save_checkpoint(&model, &opt.adamw, &st, spec, &infer_dev)?;
            rep.saved(st.step, &ckpt);
        }
    }
    Ok(model.to_device(&infer_dev))
}

/// Runs the micro-batches of one step, returning the mean loss, tokens, summed gradients and
/// the objective's figures averaged over the micro-batches.
fn accumulate(
    model: &Llama,
    data: &mut dyn DataSource,
    cfg: &TrainConfig,
    st: &mut TrainerState,
    device: &Device,
    ckpt: &Path,
    spec: &TrainSpec<'_>,
) -> Result<(f64, usize, Grads, Metrics)> {
    let trainable: &Trainable = spec.trainable.unwrap_or(&every_param);
    let mut grads = Grads::default();
    let mut metrics = Metrics::new();
    let (mut loss_sum, mut tokens) = (0.0f64, 0usize);
    for _ in 0..cfg.grad_accum {
        let batch = data.train_batch(st.micro_cursor)?;
        tokens += batch.num_tokens();
        // Dropout masks are keyed by seed and micro-batch, so a resume draws the same ones.
        let mut keyed = model.clone();
        keyed.set_train_key(Some(cria_core::hash::key(cfg.seed, st.micro_cursor)));
        let (loss, m) = spec.objective.loss(&keyed, &batch, device)?;
        for (k, v) in m {
            *metrics.entry(k).or_default() += v / cfg.grad_accum as f64;
        }
        let loss = loss / cfg.grad_accum as f64;
        let value = loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            return Err(non_finite(st.step + 1, value, ckpt));
        }
        loss_sum += value;
        grads.add(model, &loss.backward(), trainable)?;
        st.micro_cursor += 1;
    }
    Ok((loss_sum, tokens, grads, metrics))
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
    adapter_base: Option<&Path>,
) -> Result<(Llama, AdamW, TrainerState)> {
    let st = TrainerState::read(ckpt)?;
    check_fingerprint(&st.fingerprint, fp, &ckpt.join(STATE_FILE))?;
    let model = load_trained(ckpt, adapter_base, device)?;
    let opt = read_optimizer(ckpt)?;
    tracing::info!(step = st.step, dir = %ckpt.display(), "resuming");
    Ok((model, opt, st))
}
