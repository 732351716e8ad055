//! `cria ppo`: reinforcement learning from the reward model (InstructGPT step 3). Each iteration
//! samples replies to a batch of prompts with the policy (one left-padded batch, KV cache),
//! scores them with the reward model, subtracts a per-token KL penalty `β (log π - log π_sft)`
//! against the frozen SFT policy, estimates advantages with GAE against a value model
//! (initialised from the reward model), and runs epochs of minibatch updates of the clipped
//! policy and value losses; optionally mixed with the pretraining loss (PPO-ptx).
//!
//! `ppo.algorithm` also offers the critic-free RLOO and GRPO: several replies to each prompt,
//! each reply's advantage taken against its siblings (leave-one-out mean, or the group's mean
//! and standard deviation), no value model.
//!
//! Memory: the policy trains; the reference is the policy's starting weights (with LoRA, the
//! same weights with the adapter off, so nothing is copied); the reward model is frozen; the
//! value model trains. Checkpoints are written between iterations and hold everything a resume
//! needs (policy, value model, both optimizers, β); rollout seeds derive from the seed and the
//! iteration, so a resumed run draws the same replies.

//!
//! One iteration reads as the algorithm: [`rollout`] → [`score`] → [`advantages`] →
//! [`update::epochs`] → [`kl_control`] → [`log_and_save`].

mod advantages;
mod checkpoint;
mod config;
mod rollout;
mod setup;
mod update;

use crate::collective::CollectiveExt;
use crate::data::TokenShards;
use crate::error::Result;
use crate::metrics::{Reporter, RunDir, StepLog, append_metrics, peak_rss_mib, truncate_metrics};
use crate::schedule::lr_at;
use advantages::{Buffer, advantages};
use checkpoint::{Optimizers, PpoState};
use cria_core::{Device, device};
use cria_data::shards::Order;
use rollout::{Rollout, Scores, rollout, score};
use setup::{Models, Setup};
use std::path::PathBuf;
use std::time::Instant;
use update::UpdateStats;

pub use checkpoint::STATE_FILE;
pub use config::{PpoConfig, PpoDataConfig, PpoParams, RolloutConfig, check_context};

/// What stays fixed for the run.
struct Ctx<'a> {
    cfg: &'a PpoConfig,
    setup: Setup<'a>,
    resolved: String,
    run: RunDir,
    inf: Device,
    train_dev: Device,
}

impl Ctx<'_> {
    /// The error for a non-finite figure at iteration `it`, naming the last good checkpoint.
    fn diverged(&self, it: u64, what: &str, value: f64) -> crate::TrainError {
        let dir = self.run.checkpoint();
        let at = crate::divergence::CheckpointAt {
            dir: &dir,
            state_file: STATE_FILE,
            key: "iteration",
        };
        crate::divergence::diverged(it, what, value, &at, self.cfg.train.lr)
    }
}

/// What changes from iteration to iteration.
struct Live {
    models: Models,
    opts: Optimizers,
    st: PpoState,
    ptx: Option<TokenShards>,
    /// The seeded order prompts are drawn in.
    order: Order,
}

impl PpoConfig {
    /// Range checks of every setting (the context is checked once the policy is known).
    pub fn validate(&self) -> Result<()> {
        config::validate(self)
    }
}

/// Runs PPO; returns the checkpoint directory.
pub fn run(cfg: &PpoConfig, resolved: String, rep: &mut dyn Reporter) -> Result<PathBuf> {
    cfg.validate()?;
    let (setup, loaded) = setup::load(cfg)?;
    let ctx = Ctx {
        cfg,
        setup,
        resolved,
        run: RunDir::new(&cfg.out),
        inf: device::inference_device(),
        train_dev: device::training_device(),
    };
    let world = crate::collective::world();
    check_split(cfg, world.size())?;
    crate::dp::check_same_setup(world, &ctx.setup.fingerprint)?;
    if world.is_root() {
        ctx.run.prepare()?;
    }
    let (mut models, mut opts, mut st) =
        checkpoint::resume_or_start(&ctx, loaded.policy, loaded.reference, loaded.reward)?;
    if world.size() > 1 {
        checkpoint::share(&mut models, &mut opts, &mut st)?;
        tracing::info!(
            ranks = world.size(),
            transport = %world.transport(),
            "data-parallel PPO: each rank samples, scores and trains on a share of the rows; \
             rank 0 writes checkpoints and metrics"
        );
    }
    st.train = Some(cfg.train.clone());
    if world.is_root() {
        truncate_metrics(&ctx.run.metrics(), st.iteration)?;
    }
    let trainable = ctx
        .setup
        .adapted
        .trainable
        .unwrap_or(&crate::method::every_param);
    models.policy = models
        .policy
        .to_device(&ctx.train_dev)
        .require_grad_where(trainable);
    models.value = models
        .value
        .map(|v| v.to_device(&ctx.train_dev).require_grad());
    let mut live = Live {
        order: Order::new(cfg.train.seed, ctx.setup.prompts.len()),
        models,
        opts,
        st,
        ptx: loaded.ptx,
    };
    rep.start(live.st.iteration, cfg.train.steps);
    let started = Instant::now();
    while live.st.iteration < cfg.train.steps {
        iteration(&ctx, &mut live, rep, started)?;
    }
    Ok(ctx.run.checkpoint())
}

/// With `ranks` ranks, every one needs whole rows of each rollout and each minibatch.
fn check_split(cfg: &PpoConfig, ranks: usize) -> Result<()> {
    for (key, n) in [
        ("rollout.batch_size x samples_per_prompt", cfg.replies()),
        ("ppo.minibatch_size", cfg.ppo.minibatch_size),
    ] {
        if !n.is_multiple_of(ranks) {
            return Err(crate::TrainError::Invalid(format!(
                "{key} = {n} does not split over {ranks} ranks: each rank samples and trains on \
                 whole replies, so set it to a multiple of {ranks}"
            )));
        }
    }
    Ok(())
}

/// Seconds spent in each step of an iteration.
struct Clock {
    start: Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Clock {
    fn start() -> Self {
        Clock {
            start: Instant::now(),
            laps: vec![],
        }
    }
    /// Records the time since the previous lap as `name`.
    fn lap(&mut self, name: &'static str) {
        let done: f64 = self.laps.iter().map(|l| l.1).sum();
        self.laps
            .push((name, self.start.elapsed().as_secs_f64() - done));
    }
}

/// One iteration of InstructGPT's step 3.
fn iteration(
    ctx: &Ctx<'_>,
    live: &mut Live,
    rep: &mut dyn Reporter,
    started: Instant,
) -> Result<()> {
    let mut clock = Clock::start();
    let k = live.st.iteration;
    let policy = live.models.policy.clone().to_device(&ctx.inf);
    let r = rollout(ctx, &policy, &mut live.order, k)?;
    // Dropped before the update, which then moves the policy's weights through the optimizer
    // without copying them (nothing else holds them).
    drop(policy);
    clock.lap("rollout");
    let scores = score(ctx, &live.models.reward, &r)?;
    clock.lap("score");
    let m = &live.models;
    let buf = advantages(
        ctx,
        &m.reference,
        m.value.as_ref(),
        &r.samples,
        &scores.shaped,
        live.st.beta,
    );
    clock.lap("prepare");
    let lr = lr_at(&ctx.cfg.train, k);
    let stats = update::epochs(ctx, live, &buf, r.key, lr)?;
    clock.lap("update");
    live.st.beta = kl_control(live.st.beta, buf.kl, buf.batch.b, &ctx.cfg.ppo);
    live.st.iteration += 1;
    live.st.replies_seen += buf.batch.b as u64;
    log_and_save(
        ctx,
        live,
        rep,
        Outcome {
            r: &r,
            scores: &scores,
            buf: &buf,
            stats,
            lr,
            clock,
            started,
        },
    )
}

/// The adaptive KL controller (Ziegler et al. 2019): with `target_kl` set, β moves toward the
/// target by at most ±20% of the error, scaled by the batch over `kl_horizon` replies.
fn kl_control(beta: f64, kl: f64, replies: usize, p: &PpoParams) -> f64 {
    match p.target_kl {
        Some(target) => {
            let err = (kl / target - 1.0).clamp(-0.2, 0.2);
            beta * (1.0 + err * replies as f64 / p.kl_horizon)
        }
        None => beta,
    }
}

/// What an iteration measured, for its log line.
struct Outcome<'a> {
    r: &'a Rollout,
    scores: &'a Scores,
    buf: &'a Buffer,
    stats: UpdateStats,
    lr: f64,
    clock: Clock,
    started: Instant,
}

/// Appends the iteration's figures to the metrics file, tells the reporter, and checkpoints
/// every `save_every` iterations and at the end.
fn log_and_save(ctx: &Ctx<'_>, live: &Live, rep: &mut dyn Reporter, o: Outcome<'_>) -> Result<()> {
    let st = &live.st;
    let n = o.buf.batch.b as f64;
    let mean = |v: &[f32]| v.iter().map(|x| *x as f64).sum::<f64>() / n;
    let reply_len =
        o.r.samples
            .iter()
            .map(|s| s.reply.len() as f64)
            .sum::<f64>()
            / n;
    let mut metrics = o.stats.metrics;
    // Where the iteration's time went: sampling (which also gives the old log-probs),
    // reward-model scoring, the reference log-probs (and PPO's values) with the advantages,
    // and the updates.
    for (name, secs) in &o.clock.laps {
        metrics.insert(format!("time_{name}_s"), *secs);
    }
    metrics.insert("reward".into(), mean(&o.scores.raw));
    metrics.insert("kl".into(), o.buf.kl);
    metrics.insert("beta".into(), st.beta);
    metrics.insert("entropy".into(), o.stats.entropy_sum / n);
    metrics.insert("reply_len".into(), reply_len);
    let finished = o.r.samples.iter().filter(|s| s.finished).count();
    metrics.insert("finished".into(), finished as f64 / n);
    if let Some(flat) = o.buf.flat_groups {
        metrics.insert("flat_groups".into(), flat);
    }
    if let Some(rss) = peak_rss_mib() {
        metrics.insert("peak_rss_mib".into(), rss);
    }
    let log = StepLog {
        step: st.iteration,
        loss: metrics["policy_loss"],
        lr: o.lr,
        grad_norm: o.stats.grad_norm,
        tokens_per_s: o.buf.reply_tokens as f64 / o.clock.start.elapsed().as_secs_f64(),
        tokens_seen: st.replies_seen,
        elapsed_s: o.started.elapsed().as_secs_f64(),
        val_loss: None,
        metrics,
    };
    let world = crate::collective::world();
    if world.is_root() {
        append_metrics(&ctx.run.metrics(), &log)?;
    }
    rep.step(&log);
    let save_every = ctx.cfg.train.save_every;
    if st.iteration == ctx.cfg.train.steps
        || (save_every > 0 && st.iteration.is_multiple_of(save_every))
    {
        crate::dp::check_in_step(world, &live.models.policy, st.iteration)?;
        if let Some(value) = &live.models.value {
            crate::dp::check_in_step(world, value, st.iteration)?;
        }
        if world.is_root() {
            checkpoint::save(ctx, &live.models, &live.opts, st)?;
        }
        rep.saved(st.iteration, &ctx.run.checkpoint());
    }
    Ok(())
}
