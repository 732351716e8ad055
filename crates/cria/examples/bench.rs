//! cria's side of the benchmarks in bench/compare.py (run that, not this, to get the ratio).
//!
//! `bench train STEPS` trains the benchmark LLaMA (vocab 4096, d 384, 6 layers, 6 heads,
//! SwiGLU 1024, seq 256, batch 8, AdamW) on random tokens through the real training loop;
//! `bench decode TOKENS` greedily decodes at batch 1 with the KV cache; `bench decode16 TOKENS`
//! decodes 16 left-padded rows (prompts of 9 to 16 tokens) in one batch; `bench serve STREAMS`
//! runs STREAMS concurrent requests (16-token prompts, 64 new tokens) through the serving
//! engine with as many slots; `bench rouge FILE POOL CANDIDATES` runs self-instruct's ROUGE-L
//! filter (each candidate's 10 most similar pool instructions, and whether any is above 0.7)
//! for the CANDIDATES lines of FILE after its first POOL lines (bench/rouge_compare.py).
//! Prints one JSON line.

use cria_core::config::{Arch, ModelConfig};
use cria_core::generate::{GenerateOptions, generate, generate_batch};
use cria_core::weights::VarBuilder;
use cria_core::{Llama, device};
use cria_train::TrainConfig;
use cria_train::batch::Batch;
use cria_train::data::DataSource;
use cria_train::metrics::{RunDir, Silent};
use cria_train::trainer::{self, TrainSpec};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::time::Instant;

#[path = "../src/alloc.rs"]
mod alloc;

const SEQ: usize = 256;
const BATCH: usize = 8;

fn config() -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        head: Default::default(),
        reward_offset: 0.0,
        vocab_size: 4096,
        hidden_size: 384,
        intermediate_size: 1024,
        num_hidden_layers: 6,
        num_attention_heads: 6,
        num_key_value_heads: 6,
        head_dim: 64,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: None,
        max_position_embeddings: 1024,
        tie_word_embeddings: false,
        qkv_bias: false,
        qk_norm: false,
        o_bias: false,
        mlp_bias: false,
        sliding_window: vec![None; 6],
        initializer_range: 0.02,
        bos_token_id: None,
        eos_token_id: vec![],
        pad_token_id: None,
        extras: Default::default(),
    }
}

struct Random;
impl DataSource for Random {
    fn train_batch(&mut self, k: u64) -> cria_train::Result<Batch> {
        let mut rng = StdRng::seed_from_u64(k);
        let ids: Vec<u32> = (0..BATCH * (SEQ + 1))
            .map(|_| rng.random_range(0..4096))
            .collect();
        let (mut inputs, mut targets) = (vec![], vec![]);
        for row in ids.chunks(SEQ + 1) {
            inputs.extend_from_slice(&row[..SEQ]);
            targets.extend_from_slice(&row[1..]);
        }
        Ok(Batch {
            inputs,
            targets,
            weights: None,
            b: BATCH,
            t: SEQ,
            ..Default::default()
        })
    }
    fn val_batches(&mut self, _: usize) -> cria_train::Result<Vec<Batch>> {
        Ok(vec![])
    }
    fn fingerprint(&self) -> String {
        "random".into()
    }
}

fn model() -> Llama {
    let cfg = config();
    let mut vb = VarBuilder::init(0, cfg.initializer_range, &device::inference_device());
    Llama::new(&cfg, &mut vb).expect("benchmark model")
}

fn train(steps: u64) {
    let tmp = std::env::temp_dir().join(format!("cria-bench-{}", std::process::id()));
    let cfg = TrainConfig {
        steps,
        batch_size: BATCH,
        lr: 3e-4,
        warmup_steps: 2,
        eval_every: 0,
        save_every: 0,
        ..TrainConfig::default()
    };
    let run = RunDir { root: tmp.clone() };
    let spec = TrainSpec {
        cfg: &cfg,
        run: &run,
        tokenizer_dir: None,
        resolved_config: String::new(),
        config_file: "bench.toml",
        adapter: None,
        trainable: None,
        extra_files: vec![],
        objective: &cria_train::trainer::LmLoss,
        world: cria_train::collective::world(),
    };
    // The final checkpoint write is outside the timed steps (read from the metrics).
    trainer::train(model(), &mut Random, &spec, &mut Silent).expect("training");
    let logs: Vec<serde_json::Value> = std::fs::read_to_string(run.metrics())
        .expect("metrics")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let _ = std::fs::remove_dir_all(&tmp);
    // Skip two warm-up steps; time the rest from the loop's own clock.
    let t = |i: usize| logs[i]["elapsed_s"].as_f64().expect("elapsed");
    let timed = logs.len() - 2;
    let secs = t(logs.len() - 1) - t(1);
    let tps = (timed * BATCH * SEQ) as f64 / secs;
    println!(
        "{}",
        serde_json::json!({"impl": "cria", "steps_timed": timed, "s_per_step": secs / timed as f64, "tokens_per_s": tps, "final_loss": logs.last().expect("a step")["loss"]})
    );
}

fn decode(tokens: usize) {
    let m = model();
    let prompt: Vec<u32> = (1..=16).collect();
    let opts = GenerateOptions {
        max_new_tokens: tokens,
        sampling: Default::default(),
        stop_ids: vec![],
    };
    generate(
        &m,
        &prompt,
        &GenerateOptions {
            max_new_tokens: 8,
            ..opts.clone_opts()
        },
        |_| true,
    )
    .expect("warm-up");
    let t0 = Instant::now();
    let (out, _) = generate(&m, &prompt, &opts, |_| true).expect("decode");
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"impl": "cria", "new_tokens": out.len(), "tokens_per_s": out.len() as f64 / secs})
    );
}

/// The batched decode of RL rollouts and serving: 16 rows of different prompt lengths (9 to 16
/// tokens, so the batch is left-padded), greedy, every row running the full length. Tokens/s
/// counts all rows' new tokens.
fn decode16(tokens: usize) {
    let m = model();
    let prompts: Vec<Vec<u32>> = (0..16u32)
        .map(|r| {
            (0..9 + r % 8)
                .map(|i| 1 + (r * 31 + i * 7) % 4000)
                .collect()
        })
        .collect();
    let seeds = vec![0; prompts.len()];
    let opts = GenerateOptions {
        max_new_tokens: tokens,
        sampling: Default::default(),
        stop_ids: vec![],
    };
    let warm = GenerateOptions {
        max_new_tokens: 8,
        ..opts.clone_opts()
    };
    generate_batch(&m, &prompts, &warm, &seeds, 0).expect("warm-up");
    let t0 = Instant::now();
    let out = generate_batch(&m, &prompts, &opts, &seeds, 0).expect("decode");
    let secs = t0.elapsed().as_secs_f64();
    let made: usize = out.iter().map(|(ids, _)| ids.len()).sum();
    println!(
        "{}",
        serde_json::json!({"impl": "cria", "rows": prompts.len(), "new_tokens": made, "tokens_per_s": made as f64 / secs})
    );
}

/// Concurrent streams on the serving engine: the bench model in burn, or a GGUF file's own
/// weights.
fn serve(streams: usize, gguf: Option<&String>) {
    match gguf {
        Some(f) => serve_on(
            cria_gguf::infer::QModel::open(std::path::Path::new(f)).expect("the GGUF file"),
            streams,
        ),
        None => serve_on(model(), streams),
    }
}

fn serve_on<M: cria_serve::Runner>(m: M, streams: usize) {
    use cria_serve::{Engine, EngineConfig, Event, Request};
    let cfg = EngineConfig {
        parallel: streams,
        ..EngineConfig::default()
    };
    let vocab = m.vocab();
    let engine = Engine::start(m, cfg);
    let request = |i: usize, n: usize| Request {
        prompt: (0..16)
            .map(|j| ((1 + i * 31 + j * 7) % vocab.min(4096)) as u32)
            .collect(),
        max_new_tokens: n,
        ..Default::default()
    };
    // Warm-up, then all streams at once.
    let warm = engine.submit(request(0, 8)).expect("warm-up");
    assert!(warm.iter().count() > 0);
    let t0 = Instant::now();
    let rxs: Vec<_> = (0..streams)
        .map(|i| engine.submit(request(i, 64)).expect("submit"))
        .collect();
    // One reader per stream, as one client each: time to first token as each client sees it.
    let readers: Vec<_> = rxs
        .into_iter()
        .map(|rx| {
            std::thread::spawn(move || {
                let (mut n, mut first) = (0usize, None);
                for e in rx {
                    if let Event::Token { .. } = e {
                        first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
                        n += 1;
                    }
                }
                (n, first.expect("a token"))
            })
        })
        .collect();
    let (mut tokens, mut ttft) = (0usize, vec![]);
    for r in readers {
        let (n, first) = r.join().expect("reader");
        tokens += n;
        ttft.push(first);
    }
    let secs = t0.elapsed().as_secs_f64();
    ttft.sort_by(f64::total_cmp);
    let s = engine.stats();
    let rows = s.decode_rows.load(std::sync::atomic::Ordering::Relaxed) as f64;
    let steps = s.decode_steps.load(std::sync::atomic::Ordering::Relaxed) as f64;
    println!(
        "{}",
        serde_json::json!({"impl": "cria", "streams": streams, "tokens": tokens,
                           "tokens_per_s": tokens as f64 / secs,
                           "ttft_p50_s": ttft[ttft.len() / 2], "ttft_max_s": ttft[ttft.len() - 1],
                           "mean_batch": rows / steps})
    );
}

trait CloneOpts {
    fn clone_opts(&self) -> GenerateOptions;
}
impl CloneOpts for GenerateOptions {
    fn clone_opts(&self) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            sampling: self.sampling.clone(),
            stop_ids: self.stop_ids.clone(),
        }
    }
}

fn rouge(args: &[String]) {
    use cria_instruct::rouge::Pool;
    let text = std::fs::read_to_string(&args[0]).expect("the instructions file");
    let lines: Vec<&str> = text.lines().collect();
    let (n_pool, n_cand): (usize, usize) = (args[1].parse().unwrap(), args[2].parse().unwrap());
    let t0 = Instant::now();
    let mut pool = Pool::new();
    for l in &lines[..n_pool] {
        pool.add(l);
    }
    let cands: Vec<Vec<u32>> = lines[n_pool..n_pool + n_cand]
        .iter()
        .map(|l| pool.vocab.encode(l))
        .collect();
    let prep = t0.elapsed().as_secs_f64();
    let best = pool.most_similar_all(&cands, 10);
    let secs = t0.elapsed().as_secs_f64();
    let above = best
        .iter()
        .filter(|b| b.first().is_some_and(|s| s.score > 0.7))
        .count();
    let checksum: f64 = best.iter().filter_map(|b| b.first()).map(|s| s.score).sum();
    println!(
        "{{\"pool\": {n_pool}, \"candidates\": {n_cand}, \"seconds\": {secs:.3}, \"tokenize_seconds\": {prep:.3}, \"above_0_7\": {above}, \"sum_of_max\": {checksum:.6}, \"threads\": {}}}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}

fn main() {
    alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    match args.get(1).map(String::as_str) {
        Some("train") => train(n),
        Some("decode") => decode(n as usize),
        Some("decode16") => decode16(n as usize),
        Some("serve") => serve(n as usize, args.get(3)),
        Some("rouge") => rouge(&args[2..]),
        _ => eprintln!(
            "usage: bench train STEPS | bench decode TOKENS | bench decode16 TOKENS | bench serve STREAMS [FILE.gguf] | bench rouge FILE POOL CANDIDATES"
        ),
    }
}
