//! The inference engine: one scheduler thread owns the model and at most `parallel` running
//! sequences (slots). Each step it
//!
//! 1. admits waiting requests into free slots (a request joins the running batch at the next
//!    step), reusing the KV of a prompt prefix a finished sequence shared;
//! 2. prefills at most `prefill_chunk` prompt tokens of the admitted requests (in order, as
//!    many prompts as fit), so a long prompt does not stall the others' tokens;
//! 3. decodes one token of every sequence that has its prompt in the cache, all together
//!    ([`Runner::decode`]: one batched matmul per projection, each row at its own position
//!    with its own cache, no padding to the longest);
//! 4. retires the finished ones, and those whose client went away (its event receiver dropped,
//!    noticed when its next token is sent).
//!
//! A request may ask for several choices ([`Engine::submit_n`]): its prompt is prefilled once
//! and each choice then runs in a slot of its own, sampling with its own seed.
//!
//! The model is a checkpoint in burn or a GGUF file's quantized weights (see [`Runner`]).
//! One engine may run a base model and adapted versions of it ([`Engine::start_shared`]: LoRA
//! or LLaMA-Adapter on clones of the base, whose weight tensors are the base's own, not
//! copies). A request names the one it wants ([`Request::model`]); they share the slots, and a
//! decode step runs one batched pass per model that has rows in it.
//!
//! Each request samples with its own seeded sampler from its own row's logits, so its output
//! does not depend on what else is in the batch. The wait queue is bounded: beyond it,
//! [`Engine::submit`] refuses with [`SubmitError::QueueFull`] (a server answers 503).

use crate::prefix::PrefixCache;
use crate::runner::{Runner, Want};
use cria_core::generate::Finish;
use cria_core::sampling::{Sampler, SamplingParams};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences decoded together (slots).
    pub parallel: usize,
    /// Requests that may wait for a slot once every slot is busy; more are refused.
    pub queue: usize,
    /// Prompt tokens prefilled per step.
    pub prefill_chunk: usize,
    /// Finished sequences whose KV is kept for prompts that start the same way.
    pub prefix_cache: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            parallel: 4,
            queue: 64,
            prefill_chunk: 128,
            prefix_cache: 16,
        }
    }
}

/// One generation: token ids in, token ids out.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends after any of these ids (the id is sent).
    pub stop_ids: Vec<u32>,
    /// Send each sampled token's log-probability and those of the `n` likeliest tokens.
    pub logprobs: Option<usize>,
    /// Send the log-probability of every prompt token after the first, given those before it
    /// ([`Event::Prompt`], before the first token). The whole prompt is computed (no prefix
    /// reuse).
    pub prompt_logprobs: bool,
    /// Which of the engine's models runs it: 0 the first given to [`Engine::start_shared`]
    /// (the only one of [`Engine::start`]), `i` the `i`-th.
    pub model: usize,
}

/// A token's log-probability under the model (log-softmax of its raw logits, before any
/// temperature or penalty), and the likeliest tokens' at the same position, most likely first.
#[derive(Debug, Clone, PartialEq)]
pub struct Logprobs {
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

impl Logprobs {
    /// `id`'s log-probability among `logits`, with the `top` likeliest.
    pub fn of(logits: &[f32], id: u32, top: usize) -> Logprobs {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = max + logits.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
        let mut best: Vec<u32> = (0..logits.len() as u32).collect();
        let by_logit = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        let top = top.min(best.len());
        if top > 0 && top < best.len() {
            best.select_nth_unstable_by(top - 1, by_logit);
        }
        best.truncate(top);
        best.sort_unstable_by(by_logit);
        Logprobs {
            id,
            logprob: logits[id as usize] - lse,
            top: best
                .into_iter()
                .map(|t| (t, logits[t as usize] - lse))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
}

/// What a request's receiver gets: its tokens as they are sampled, then how it ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A sampled id, with its log-probabilities when the request asked for them.
    Token {
        id: u32,
        logprobs: Option<Logprobs>,
    },
    /// The prompt's log-probabilities, when asked ([`Request::prompt_logprobs`]).
    Prompt(Vec<Logprobs>),
    Done {
        finish: Finish,
        usage: Usage,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the wait queue is full ({0} requests waiting); retry later")]
    QueueFull(usize),
    #[error("the engine has stopped")]
    Stopped,
    #[error("{0}")]
    Invalid(String),
}

/// Counters a server reports (`/metrics`): the engine's, and each of its models'.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests waiting for a slot.
    pub queued: AtomicUsize,
    /// Slots running a sequence.
    pub busy: AtomicUsize,
    /// Prompt tokens computed (a prefix reused, or a prompt shared by several choices, once).
    pub prefill_tokens: AtomicU64,
    /// Decode steps, and the rows they carried (their ratio is the mean batch size).
    pub decode_steps: AtomicU64,
    pub decode_rows: AtomicU64,
    /// By model, in the order the engine was given them.
    pub models: Vec<Counts>,
}

/// What one of an engine's models did.
#[derive(Debug, Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub cached_tokens: AtomicU64,
    /// Sequences retired because their client went away.
    pub cancelled: AtomicU64,
    /// Its requests waiting for a slot, and its sequences running.
    pub queued: AtomicUsize,
    pub busy: AtomicUsize,
}

/// A request and one event sender per choice.
type Job = (Request, Vec<Sender<Event>>);

pub struct Engine {
    tx: Option<SyncSender<Job>>,
    stats: Arc<Stats>,
    queue: usize,
    parallel: usize,
    max_len: usize,
    /// Ids each model embeds: others are refused at submit, never reach the scheduler.
    vocab: Vec<usize>,
    worker: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the scheduler thread, which owns `model` from now on.
    pub fn start<M: Runner>(model: M, cfg: EngineConfig) -> Engine {
        Engine::start_shared(vec![model], cfg)
    }

    /// Starts one scheduler thread for several models that share their weights (a base and
    /// adapted clones of it, see the module's docs); requests pick one by index.
    ///
    /// # Panics
    /// When `models` is empty or they differ in context length.
    pub fn start_shared<M: Runner>(models: Vec<M>, cfg: EngineConfig) -> Engine {
        assert!(!models.is_empty(), "an engine runs at least one model");
        let max_len = models[0].max_len();
        // By model: an adapter's tokenizer may have grown chat tokens its base lacks.
        let vocab = models.iter().map(Runner::vocab).collect();
        assert!(
            models.iter().all(|m| m.max_len() == max_len),
            "models sharing an engine share one context length"
        );
        let cfg = EngineConfig {
            parallel: cfg.parallel.max(1),
            prefill_chunk: cfg.prefill_chunk.max(1),
            ..cfg
        };
        // Requests pass through the channel on their way to a free slot too.
        let (tx, rx) = mpsc::sync_channel::<Job>(cfg.queue + cfg.parallel);
        let stats = Arc::new(Stats {
            models: models.iter().map(|_| Counts::default()).collect(),
            ..Default::default()
        });
        let (queue, parallel) = (cfg.queue, cfg.parallel);
        let worker = {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("cria-engine".into())
                .spawn(move || Scheduler::new(models, cfg, stats).run(rx))
                .expect("spawning the engine thread")
        };
        Engine {
            tx: Some(tx),
            stats,
            queue,
            parallel,
            max_len,
            vocab,
            worker: Some(worker),
        }
    }

    /// How many models this engine runs.
    pub fn models(&self) -> usize {
        self.stats.models.len()
    }

    /// Queues `req`; its events arrive on the returned receiver. Dropping the receiver cancels
    /// the request (its slot is freed at the next step).
    pub fn submit(&self, req: Request) -> Result<Receiver<Event>, SubmitError> {
        Ok(self.submit_n(req, 1)?.remove(0))
    }

    /// Queues `req` for `n` choices sampled from one prefill (choice `i` samples with seed
    /// `seed + i`), each on its own receiver and in its own slot.
    pub fn submit_n(&self, req: Request, n: usize) -> Result<Vec<Receiver<Event>>, SubmitError> {
        if n == 0 || n > self.parallel {
            return Err(SubmitError::Invalid(format!(
                "n = {n}: this engine runs 1 to {} choices at once",
                self.parallel
            )));
        }
        if req.prompt.is_empty() {
            return Err(SubmitError::Invalid("the prompt has no tokens".into()));
        }
        if req.model >= self.models() {
            return Err(SubmitError::Invalid(format!(
                "model {} of an engine running {}",
                req.model,
                self.models()
            )));
        }
        let vocab = self.vocab[req.model];
        if let Some(t) = req.prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(SubmitError::Invalid(format!(
                "token id {t} is outside this model's vocabulary of {vocab}"
            )));
        }
        if req.prompt.len() >= self.max_len {
            return Err(SubmitError::Invalid(format!(
                "the prompt has {} tokens; this model's context holds {}",
                req.prompt.len(),
                self.max_len
            )));
        }
        let tx = self.tx.as_ref().ok_or(SubmitError::Stopped)?;
        let waiting = self.stats.queued.fetch_add(1, Ordering::SeqCst);
        // Up to `queue` may wait beyond the slots that are free.
        let free = self
            .parallel
            .saturating_sub(self.stats.busy.load(Ordering::SeqCst));
        if waiting >= self.queue + free {
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull(waiting));
        }
        let (etx, erx): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel()).unzip();
        let counts = &self.stats.models[req.model];
        counts.queued.fetch_add(1, Ordering::SeqCst);
        match tx.try_send((req, etx)) {
            Ok(()) => Ok(erx),
            Err(e) => {
                self.stats.queued.fetch_sub(1, Ordering::SeqCst);
                counts.queued.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => SubmitError::QueueFull(waiting),
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                })
            }
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Sequences it decodes together (the most choices one request may have).
    pub fn parallel(&self) -> usize {
        self.parallel
    }

    /// Longest prompt plus reply a request may have.
    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

impl Drop for Engine {
    /// Stops taking requests, lets the running and queued ones finish, and joins the thread.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// A running sequence, its keys and values in a `C`.
struct Seq<C> {
    /// Which of the engine's models runs it.
    model: usize,
    events: Sender<Event>,
    cache: C,
    /// Its whole prompt is in the cache (it decodes from now on).
    ready: bool,
    /// Every id in the cache, in order.
    ids: Vec<u32>,
    /// Prompt ids not yet in the cache.
    pending: Vec<u32>,
    /// The last sampled id, to be fed next.
    next: Option<u32>,
    sampler: Sampler,
    stop_ids: Vec<u32>,
    logprobs: Option<usize>,
    /// The prompt's log-probabilities so far, while they are asked for and being computed.
    prompt_lp: Option<Vec<Logprobs>>,
    budget: usize,
    usage: Usage,
    /// Finished (or its client left); retired at the end of the step.
    done: bool,
    /// Its client went away (noticed by the send of its next token).
    gone: bool,
    /// The other choices' senders: they fork from this sequence once its prompt is in.
    forks: Vec<Sender<Event>>,
    /// The seed the choices count from.
    seed: u64,
}

struct Scheduler<M: Runner> {
    /// The models requests pick from (a base and its adapted clones share weight tensors).
    models: Vec<M>,
    cfg: EngineConfig,
    stats: Arc<Stats>,
    prefix: PrefixCache<M::Cache>,
    slots: Vec<Seq<M::Cache>>,
    /// A request received that needs more free slots than there are (its choices).
    held: Option<Job>,
}

impl<M: Runner> Scheduler<M> {
    fn new(models: Vec<M>, cfg: EngineConfig, stats: Arc<Stats>) -> Self {
        Scheduler {
            prefix: PrefixCache::new(cfg.prefix_cache),
            models,
            cfg,
            stats,
            slots: Vec::new(),
            held: None,
        }
    }

    fn run(mut self, rx: Receiver<Job>) {
        while self.admit(&rx) {
            self.prefill();
            self.decode();
            self.retire();
        }
    }

    /// Fills free slots from the queue, waiting when nothing runs; false once the engine is
    /// dropped and nothing is left to do.
    fn admit(&mut self, rx: &Receiver<Job>) -> bool {
        while self.slots.len() < self.cfg.parallel {
            let job = match self.held.take() {
                Some(j) => j,
                None if self.slots.is_empty() => match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return false,
                },
                None => match rx.try_recv() {
                    Ok(j) => j,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                },
            };
            // Its choices take a slot each: wait (in order) until they fit.
            if self.slots.len() + job.1.len() > self.cfg.parallel {
                self.held = Some(job);
                break;
            }
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            let counts = &self.stats.models[job.0.model];
            counts.queued.fetch_sub(1, Ordering::SeqCst);
            counts.requests.fetch_add(1, Ordering::Relaxed);
            let seq = self.start(job);
            self.slots.push(seq);
        }
        self.count_busy();
        true
    }

    /// The busy-slot gauges, engine-wide and by model.
    fn count_busy(&self) {
        self.stats.busy.store(self.slots.len(), Ordering::Relaxed);
        for (i, c) in self.stats.models.iter().enumerate() {
            let n = self.slots.iter().filter(|s| s.model == i).count();
            c.busy.store(n, Ordering::Relaxed);
        }
    }

    fn start(&mut self, (req, mut events): Job) -> Seq<M::Cache> {
        let forks = events.split_off(1);
        let events = events.pop().expect("one sender per choice");
        let model = &self.models[req.model];
        let reuse = if req.prompt_logprobs {
            None
        } else {
            self.prefix
                .lookup(req.model, &req.prompt, |c, n| model.prefix(c, n))
        };
        let (cache, cached) = reuse.unwrap_or_else(|| (model.new_cache(), 0));
        let usage = Usage {
            prompt_tokens: req.prompt.len(),
            completion_tokens: 0,
            cached_tokens: cached,
        };
        let budget = req.max_new_tokens.min(model.max_len() - req.prompt.len());
        if budget == 0 {
            for e in std::iter::once(&events).chain(&forks) {
                let _ = e.send(Event::Done {
                    finish: Finish::Length,
                    usage,
                });
            }
        }
        let seed = req.sampling.seed;
        Seq {
            model: req.model,
            forks,
            seed,
            events,
            cache,
            ready: false,
            ids: req.prompt[..cached].to_vec(),
            pending: req.prompt[cached..].to_vec(),
            next: None,
            sampler: Sampler::new(req.sampling),
            stop_ids: req.stop_ids,
            logprobs: req.logprobs,
            prompt_lp: req.prompt_logprobs.then(Vec::new),
            budget,
            usage,
            done: budget == 0,
            gone: false,
        }
    }

    /// Prompt tokens into their caches, at most `prefill_chunk` of them this step: the
    /// waiting prompts in order, as many as fit (many short prompts arriving together start
    /// in one step, a long one takes several).
    fn prefill(&mut self) {
        let mut budget = self.cfg.prefill_chunk;
        while budget > 0 {
            let Some(i) = self
                .slots
                .iter()
                .position(|s| !s.done && !s.pending.is_empty())
            else {
                return;
            };
            let n = budget.min(self.slots[i].pending.len());
            self.prefill_part(i, n);
            budget -= n;
        }
    }

    /// The next `n` prompt tokens of slot `i` into its cache; the first reply token once the
    /// whole prompt is in.
    fn prefill_part(&mut self, i: usize, n: usize) {
        let s = &mut self.slots[i];
        let model = &self.models[s.model];
        let part: Vec<u32> = s.pending.drain(..n).collect();
        let want = match (&s.prompt_lp, s.pending.is_empty()) {
            (Some(_), _) => Want::All,
            (None, true) => Want::Last,
            (None, false) => Want::Nothing,
        };
        let logits = model.prefill(&part, &mut s.cache, want);
        self.stats
            .prefill_tokens
            .fetch_add(n as u64, Ordering::Relaxed);
        let logits = match &mut s.prompt_lp {
            // Each position's logits score the prompt token after it.
            Some(lp) => {
                let all = logits;
                let v = all.len() / n;
                let next = part[1..].iter().chain(s.pending.first());
                for (j, &t) in next.enumerate() {
                    lp.push(Logprobs::of(
                        &all[j * v..(j + 1) * v],
                        t,
                        s.logprobs.unwrap_or(0),
                    ));
                }
                all[(n - 1) * v..].to_vec()
            }
            None => logits,
        };
        s.ids.extend(part);
        if s.pending.is_empty() {
            s.ready = true;
            if let Some(lp) = s.prompt_lp.take() {
                for e in std::iter::once(&s.events).chain(&s.forks) {
                    let _ = e.send(Event::Prompt(lp.clone()));
                }
            }
            // The other choices start here, from the same cache and logits.
            let forks: Vec<Seq<M::Cache>> = std::mem::take(&mut s.forks)
                .into_iter()
                .enumerate()
                .map(|(i, events)| s.fork(events, i as u64 + 1))
                .collect();
            let next = s.sampler.sample(&logits);
            s.emit(next, &logits);
            for mut f in forks {
                let next = f.sampler.sample(&logits);
                f.emit(next, &logits);
                self.slots.push(f);
            }
        }
    }

    /// One token of every sequence whose prompt is in: one batched pass per model that has
    /// rows this step.
    fn decode(&mut self) {
        for m in 0..self.models.len() {
            self.decode_model(m);
        }
    }

    /// One token of every running sequence of model `m`, all in one batched pass.
    fn decode_model(&mut self, m: usize) {
        let mut rows: Vec<&mut Seq<M::Cache>> = self
            .slots
            .iter_mut()
            .filter(|s| s.model == m && !s.done && s.next.is_some() && s.ready)
            .collect();
        if rows.is_empty() {
            return;
        }
        let tokens: Vec<u32> = rows.iter().map(|s| s.next.expect("filtered")).collect();
        let logits = {
            let mut caches: Vec<&mut M::Cache> = rows.iter_mut().map(|s| &mut s.cache).collect();
            self.models[m].decode(&tokens, &mut caches)
        };
        self.stats.decode_steps.fetch_add(1, Ordering::Relaxed);
        self.stats
            .decode_rows
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        let v = logits.len() / rows.len();
        for (r, (s, t)) in rows.into_iter().zip(tokens).enumerate() {
            s.ids.push(t);
            let row = &logits[r * v..(r + 1) * v];
            let next = s.sampler.sample(row);
            s.emit(next, row);
        }
    }

    /// Removes finished sequences, keeping their caches for prompts that share a prefix.
    fn retire(&mut self) {
        let mut i = 0;
        while i < self.slots.len() {
            if !self.slots[i].done {
                i += 1;
                continue;
            }
            let s = self.slots.swap_remove(i);
            let (u, c) = (s.usage, &self.stats.models[s.model]);
            c.prompt_tokens
                .fetch_add(u.prompt_tokens as u64, Ordering::Relaxed);
            c.completion_tokens
                .fetch_add(u.completion_tokens as u64, Ordering::Relaxed);
            c.cached_tokens
                .fetch_add(u.cached_tokens as u64, Ordering::Relaxed);
            if s.gone {
                c.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            // The cache holds exactly `ids` (the last sampled id was never fed).
            if s.ready {
                self.prefix.put(s.model, s.ids, s.cache);
            }
        }
        self.count_busy();
    }
}

impl<C: Clone> Seq<C> {
    /// Choice `i` of this sequence's request: the same cache, sampled with `seed + i`.
    fn fork(&self, events: Sender<Event>, i: u64) -> Seq<C> {
        let mut params = self.sampler.params().clone();
        params.seed = self.seed.wrapping_add(i);
        Seq {
            model: self.model,
            events,
            cache: self.cache.clone(),
            ready: self.ready,
            ids: self.ids.clone(),
            pending: vec![],
            next: None,
            sampler: Sampler::new(params),
            stop_ids: self.stop_ids.clone(),
            logprobs: self.logprobs,
            prompt_lp: None,
            budget: self.budget,
            usage: self.usage,
            done: false,
            gone: false,
            forks: vec![],
            seed: self.seed,
        }
    }

    /// Sends a sampled id; ends the sequence at a stop id, at its budget, or when the client
    /// has gone.
    fn emit(&mut self, id: u32, logits: &[f32]) {
        self.usage.completion_tokens += 1;
        let logprobs = self.logprobs.map(|top| Logprobs::of(logits, id, top));
        if self.events.send(Event::Token { id, logprobs }).is_err() {
            self.done = true;
            self.gone = true;
            return;
        }
        let finish = if self.stop_ids.contains(&id) {
            Some(Finish::Stop)
        } else if self.usage.completion_tokens >= self.budget {
            Some(Finish::Length)
        } else {
            None
        };
        match finish {
            Some(finish) => {
                let _ = self.events.send(Event::Done {
                    finish,
                    usage: self.usage,
                });
                self.done = true;
                self.next = None;
            }
            None => self.next = Some(id),
        }
    }
}
