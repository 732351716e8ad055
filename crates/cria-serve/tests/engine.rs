//! The engine on tiny transformers-made checkpoints (cria-core's fixtures): a request's output
//! does not depend on what else runs with it, requests join and leave a running batch, the
//! queue is bounded, a client that leaves frees its slot, a shared prefix is reused, and a
//! base runs with its adapters on one engine and one copy of its weights; a GGUF file's
//! quantized weights run on the same engine.

use cria_core::generate::{Finish, GenerateOptions, generate};
use cria_core::nn::is_adapter_param;
use cria_core::nn::prefix::PrefixConfig;
use cria_core::params::shared_storage;
use cria_core::sampling::SamplingParams;
use cria_core::{Llama, checkpoint, device};
use cria_serve::{Engine, EngineConfig, Event, Logprobs, Request, SubmitError, Usage};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

fn model(name: &str) -> Llama {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cria-core/tests/fixtures")
        .join(name);
    checkpoint::load_model(&dir, &device::inference_device()).unwrap()
}

fn greedy(prompt: Vec<u32>, max_new_tokens: usize) -> Request {
    Request {
        prompt,
        max_new_tokens,
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Every event of a request, to its end.
fn collect(rx: Receiver<Event>) -> (Vec<u32>, Finish, Usage) {
    let mut ids = vec![];
    for e in rx {
        match e {
            Event::Token { id, .. } => ids.push(id),
            Event::Prompt(_) => {}
            Event::Done { finish, usage } => return (ids, finish, usage),
        }
    }
    panic!("the request ended without Done after {ids:?}");
}

fn alone<M: cria_core::generate::NextLogits>(m: &M, req: &Request) -> Vec<u32> {
    let opts = GenerateOptions {
        max_new_tokens: req.max_new_tokens,
        sampling: req.sampling.clone(),
        stop_ids: req.stop_ids.clone(),
    };
    generate(m, &req.prompt, &opts, |_| true).unwrap().0
}

/// Prompts of different lengths, some longer than a prefill chunk.
fn prompts() -> Vec<Vec<u32>> {
    (0..7u32)
        .map(|i| {
            (0..(3 + 5 * i))
                .map(|j| (7 * i + 3 * j + 1) % 90 + 1)
                .collect()
        })
        .collect()
}

#[test]
fn each_output_equals_the_request_run_alone_while_others_join_and_leave() {
    for name in ["llama", "qwen3", "gemma3"] {
        let m = model(name);
        let reqs: Vec<Request> = prompts()
            .into_iter()
            .enumerate()
            .map(|(i, p)| greedy(p, 6 + 3 * i))
            .collect();
        let want: Vec<Vec<u32>> = reqs.iter().map(|r| alone(&m, r)).collect();
        // Three slots for seven requests, chunks of 8: sequences start and end mid-batch.
        let engine = Engine::start(
            m,
            EngineConfig {
                parallel: 3,
                prefill_chunk: 8,
                prefix_cache: 0,
                ..Default::default()
            },
        );
        let rxs: Vec<_> = reqs
            .iter()
            .map(|r| engine.submit(r.clone()).unwrap())
            .collect();
        for (i, (rx, want)) in rxs.into_iter().zip(&want).enumerate() {
            let (got, finish, usage) = collect(rx);
            assert_eq!(&got, want, "{name}: request {i}");
            assert_eq!(finish, Finish::Length);
            assert_eq!(usage.prompt_tokens, reqs[i].prompt.len());
            assert_eq!(usage.completion_tokens, want.len());
        }
        let s = engine.stats();
        let (steps, rows) = (
            s.decode_steps.load(Ordering::Relaxed),
            s.decode_rows.load(Ordering::Relaxed),
        );
        assert!(
            rows > steps,
            "{name}: sequences were decoded together ({rows} rows in {steps} steps)"
        );
    }
}

#[test]
fn sampled_outputs_follow_their_seed_not_the_batch() {
    let m = model("llama");
    let req = |seed| Request {
        sampling: SamplingParams {
            temperature: 1.0,
            seed,
            ..Default::default()
        },
        ..greedy(vec![1, 5, 9, 13], 12)
    };
    let want: Vec<Vec<u32>> = (0..4).map(|s| alone(&m, &req(s))).collect();
    assert_ne!(want[0], want[1], "different seeds sample differently");
    let engine = Engine::start(m, EngineConfig::default());
    let rxs: Vec<_> = (0..4).map(|s| engine.submit(req(s)).unwrap()).collect();
    for (rx, want) in rxs.into_iter().zip(want) {
        assert_eq!(collect(rx).0, want);
    }
}

#[test]
fn a_stop_id_ends_the_reply_and_is_sent() {
    let m = model("llama");
    let free = alone(&m, &greedy(vec![1, 2, 3], 8));
    let stop = free[3];
    let engine = Engine::start(m, EngineConfig::default());
    let rx = engine
        .submit(Request {
            stop_ids: vec![stop],
            ..greedy(vec![1, 2, 3], 8)
        })
        .unwrap();
    let (ids, finish, _) = collect(rx);
    let first = free.iter().position(|&t| t == stop).unwrap();
    assert_eq!(ids, free[..=first].to_vec());
    assert_eq!(finish, Finish::Stop);
}

#[test]
fn the_wait_queue_is_bounded_and_refused_requests_are_counted_out() {
    let engine = Engine::start(
        model("llama"),
        EngineConfig {
            parallel: 1,
            queue: 2,
            ..Default::default()
        },
    );
    // Ten long requests at once: one runs, two wait, the rest are refused (finishing one
    // takes far longer than submitting all ten).
    let results: Vec<_> = (0..10)
        .map(|i| engine.submit(greedy(vec![1, 2, 3 + i], 50)))
        .collect();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(SubmitError::QueueFull(_))))
        .count();
    assert!(refused >= 6, "{refused} of 10 refused");
    for r in results.into_iter().flatten() {
        assert_eq!(collect(r).0.len(), 50, "accepted requests complete");
    }
    assert_eq!(engine.stats().queued.load(Ordering::SeqCst), 0);
    // And a request fits again once the queue has drained.
    assert!(engine.submit(greedy(vec![1, 2], 2)).is_ok());

    // With no wait queue, free slots still take requests; the next one is refused.
    let engine = Engine::start(
        model("llama"),
        EngineConfig {
            parallel: 2,
            queue: 0,
            ..Default::default()
        },
    );
    let a = engine.submit(greedy(vec![1, 2, 3], 50)).unwrap();
    let b = engine.submit(greedy(vec![1, 2, 4], 50)).unwrap();
    assert!(matches!(
        engine.submit(greedy(vec![1, 2, 5], 50)),
        Err(SubmitError::QueueFull(_))
    ));
    assert_eq!((collect(a).0.len(), collect(b).0.len()), (50, 50));
}

#[test]
fn a_client_that_leaves_frees_its_slot() {
    let m = model("llama");
    let want = alone(&m, &greedy(vec![4, 5, 6], 5));
    let engine = Engine::start(
        m,
        EngineConfig {
            parallel: 1,
            ..Default::default()
        },
    );
    // The first client leaves before its first token: the one slot must not stay taken.
    drop(engine.submit(greedy(vec![1, 2, 3], 50)).unwrap());
    let rx = engine.submit(greedy(vec![4, 5, 6], 5)).unwrap();
    assert_eq!(collect(rx).0, want);
    assert_eq!(
        engine.stats().models[0].cancelled.load(Ordering::Relaxed),
        1
    );
    assert!(
        engine.stats().models[0]
            .completion_tokens
            .load(Ordering::Relaxed)
            < 50
    );
}

#[test]
fn a_conversation_reuses_the_kv_of_its_earlier_turns() {
    let m = model("llama");
    let first = greedy(vec![1, 8, 15, 22, 29], 6);
    let reply = alone(&m, &first);
    // The next turn's prompt starts with the first prompt and its reply.
    let mut second = first.prompt.clone();
    second.extend(&reply);
    second.extend([30, 31, 32]);
    let second = greedy(second, 6);
    let want = alone(&m, &second);
    let engine = Engine::start(m, EngineConfig::default());
    let (got, _, usage) = collect(engine.submit(first.clone()).unwrap());
    assert_eq!(got, reply);
    assert_eq!(usage.cached_tokens, 0);
    let (got, _, usage) = collect(engine.submit(second.clone()).unwrap());
    // Everything but the reply's last token (sampled, never fed) came from the cache.
    assert_eq!(usage.cached_tokens, first.prompt.len() + reply.len() - 1);
    assert_eq!(got, want, "the same reply as computed from scratch");
}

#[test]
fn bad_requests_are_refused_at_submit() {
    let engine = Engine::start(model("llama"), EngineConfig::default());
    let max = engine.max_len();
    assert!(matches!(
        engine.submit(greedy(vec![], 4)),
        Err(SubmitError::Invalid(_))
    ));
    let e = engine.submit(greedy(vec![1; max], 4)).unwrap_err();
    assert!(e.to_string().contains("context holds"), "{e}");
    // An id outside the vocabulary is refused, and the engine goes on for everyone else.
    let e = engine.submit(greedy(vec![1, 1_000_000], 4)).unwrap_err();
    assert!(e.to_string().contains("token id 1000000 is outside"), "{e}");
    // Nothing asked, nothing sampled, and still a Done.
    let (ids, finish, usage) = collect(engine.submit(greedy(vec![1, 2], 0)).unwrap());
    assert_eq!(
        (ids.len(), finish, usage.completion_tokens),
        (0, Finish::Length, 0)
    );
    // max_new_tokens beyond the context is cut to what fits.
    let (ids, finish, _) = collect(engine.submit(greedy(vec![1; max - 3], 100)).unwrap());
    assert_eq!((ids.len(), finish), (3, Finish::Length));
}

#[test]
fn several_choices_share_one_prefill_and_sample_with_their_own_seeds() {
    let m = model("llama");
    let prompt: Vec<u32> = (1..=20).collect();
    let req = |seed| Request {
        sampling: SamplingParams {
            temperature: 1.0,
            seed,
            ..Default::default()
        },
        ..greedy(prompt.clone(), 10)
    };
    // Choice i samples as the same request alone with seed + i.
    let want: Vec<Vec<u32>> = (0..3).map(|i| alone(&m, &req(40 + i))).collect();
    let engine = Engine::start(
        m,
        EngineConfig {
            parallel: 4,
            prefix_cache: 0,
            ..Default::default()
        },
    );
    let rxs = engine.submit_n(req(40), 3).unwrap();
    assert_eq!(rxs.len(), 3);
    for (rx, want) in rxs.into_iter().zip(&want) {
        let (got, _, usage) = collect(rx);
        assert_eq!(&got, want);
        assert_eq!(usage.prompt_tokens, 20);
    }
    // The prompt was computed once for the three.
    assert_eq!(engine.stats().prefill_tokens.load(Ordering::Relaxed), 20);
    // More choices than slots cannot run together.
    let e = engine.submit_n(req(1), 5).unwrap_err();
    assert!(e.to_string().contains("n = 5"), "{e}");
    // A request whose choices need more slots than are free waits its turn.
    let busy: Vec<_> = (0..2)
        .map(|i| engine.submit(greedy(vec![1, 2, 3 + i], 40)).unwrap())
        .collect();
    let three = engine.submit_n(greedy(vec![4, 5, 6], 5), 3).unwrap();
    let after = engine.submit(greedy(vec![7, 8], 3)).unwrap();
    for rx in busy {
        assert_eq!(collect(rx).0.len(), 40);
    }
    assert_eq!(collect(after).0.len(), 3);
    for rx in three {
        assert_eq!(collect(rx).0.len(), 5);
    }
}

#[test]
fn logprobs_are_the_models_distribution_over_prompt_and_reply() {
    let m = model("llama");
    // Longer than two prefill chunks: the prompt's scores span chunks.
    let prompt: Vec<u32> = vec![1, 5, 9, 13, 17, 21, 2, 8, 30, 4, 11];
    let engine = Engine::start(
        model("llama"),
        EngineConfig {
            prefill_chunk: 4,
            ..Default::default()
        },
    );
    let req = Request {
        logprobs: Some(3),
        prompt_logprobs: true,
        ..greedy(prompt.clone(), 5)
    };
    let mut scored = vec![];
    let mut prompt_lp = None;
    for e in engine.submit(req).unwrap() {
        match e {
            Event::Prompt(lp) => prompt_lp = Some(lp),
            Event::Token { id, logprobs } => scored.push((id, logprobs.expect("asked for"))),
            Event::Done { .. } => break,
        }
    }
    let prompt_lp = prompt_lp.expect("the prompt's log-probabilities come before the tokens");
    assert_eq!(prompt_lp.len(), prompt.len() - 1);
    // The reference: one forward pass over the prompt and the reply.
    let all: Vec<u32> = prompt
        .iter()
        .copied()
        .chain(scored.iter().map(|(id, _)| *id))
        .collect();
    let ids: Vec<f64> = all.iter().map(|&t| t as f64).collect();
    let x = cria_testkit::ids_tensor(&ids, 1, all.len(), &m.device());
    let logits = cria_core::params::to_vec(m.logits(m.hidden(x, None)));
    let v = logits.len() / all.len();
    let want = |pos: usize, id: u32| Logprobs::of(&logits[pos * v..(pos + 1) * v], id, 3);
    let expected = (0..prompt.len() - 1)
        .map(|j| want(j, all[j + 1]))
        .chain((0..scored.len()).map(|k| want(prompt.len() - 1 + k, all[prompt.len() + k])));
    let got = prompt_lp.iter().chain(scored.iter().map(|(_, lp)| lp));
    for (k, (g, w)) in got.zip(expected).enumerate() {
        assert_eq!(g.id, w.id, "position {k}");
        assert!(
            (g.logprob - w.logprob).abs() < 1e-4,
            "position {k}: {g:?} vs {w:?}"
        );
        assert_eq!(g.top.len(), 3);
        for ((gi, gl), (wi, wl)) in g.top.iter().zip(&w.top) {
            assert_eq!(gi, wi, "position {k}");
            assert!((gl - wl).abs() < 1e-4, "position {k}");
        }
        assert!(
            g.top.windows(2).all(|p| p[0].1 >= p[1].1),
            "most likely first"
        );
        assert!(g.logprob <= 0.0);
    }
    // Greedy: each reply token is the likeliest.
    for (id, lp) in &scored {
        assert_eq!(lp.top[0].0, *id);
    }
    // The log-probabilities of one position make a distribution.
    let total: f32 = (0..v as u32)
        .map(|t| Logprobs::of(&logits[..v], t, 0).logprob.exp())
        .sum();
    assert!((total - 1.0).abs() < 1e-4, "{total}");
}

#[test]
fn a_base_and_its_adapters_share_one_engine_and_their_weights() {
    let lora_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cria-core/tests/fixtures/lora");
    let base = checkpoint::load_model(&lora_dir.join("base"), &device::inference_device()).unwrap();
    // A PEFT LoRA on every projection (made by PEFT), and a LLaMA-Adapter with open gates.
    let mut lora = base.clone();
    lora.load_lora(&lora_dir.join("adapter")).unwrap();
    let mut prefix = base.clone();
    prefix
        .add_prefix_adapter(&PrefixConfig { len: 3, layers: 1 }, 7)
        .unwrap();
    for block in &mut prefix.layers {
        if let Some(p) = &mut block.self_attn.prefix {
            p.gate = p.gate.clone().ones_like();
        }
    }
    for m in [&lora, &prefix] {
        let (shared, total) = shared_storage(m, &base, |n| !is_adapter_param(n));
        assert_eq!(shared, total, "every base weight is the base's own storage");
        assert!(total > 10);
    }
    // A second load is a copy: nothing shared (the check can tell).
    let again =
        checkpoint::load_model(&lora_dir.join("base"), &device::inference_device()).unwrap();
    assert_eq!(shared_storage(&again, &base, |_| true).0, 0);

    let models = [base, lora, prefix];
    let reqs: Vec<Request> = prompts()
        .into_iter()
        .enumerate()
        .map(|(i, p)| Request {
            model: i % 3,
            // This model's vocabulary has 64 tokens.
            ..greedy(p.iter().map(|t| t % 60 + 1).collect(), 5 + 2 * i)
        })
        .collect();
    let want: Vec<Vec<u32>> = reqs.iter().map(|r| alone(&models[r.model], r)).collect();
    // The adapters change what the model says (the test would pass vacuously otherwise).
    let same_prompt = greedy(vec![3, 1, 4, 1, 5, 9, 2, 6], 8);
    let replies: Vec<Vec<u32>> = models.iter().map(|m| alone(m, &same_prompt)).collect();
    assert_ne!(replies[0], replies[1], "LoRA changes the reply");
    assert_ne!(replies[0], replies[2], "LLaMA-Adapter changes the reply");

    let engine = Engine::start_shared(
        models.to_vec(),
        EngineConfig {
            parallel: 4,
            prefill_chunk: 8,
            ..Default::default()
        },
    );
    assert_eq!(engine.models(), 3);
    let rxs: Vec<_> = reqs
        .iter()
        .map(|r| engine.submit(r.clone()).unwrap())
        .collect();
    for (i, (rx, want)) in rxs.into_iter().zip(&want).enumerate() {
        assert_eq!(
            &collect(rx).0,
            want,
            "request {i} on model {}",
            reqs[i].model
        );
    }
    // The same prompt on each model, one after the other: a finished sequence's KV serves
    // only its own model's later prompts.
    for (m, reply) in replies.iter().enumerate() {
        let rx = engine
            .submit(Request {
                model: m,
                ..same_prompt.clone()
            })
            .unwrap();
        let (got, _, usage) = collect(rx);
        assert_eq!(&got, reply, "model {m}");
        if m > 0 {
            assert_eq!(
                usage.cached_tokens, 0,
                "model {m} reused another model's KV"
            );
        }
    }
    let counts = &engine.stats().models;
    assert_eq!(counts[1].requests.load(Ordering::Relaxed), 3);
    assert!(matches!(
        engine.submit(Request {
            model: 3,
            ..greedy(vec![1, 2], 2)
        }),
        Err(SubmitError::Invalid(_))
    ));
}

/// A GGUF file (q4_0 and q8_0, exported from the fixture) on the engine: every request's
/// greedy reply equals the file's own decoding alone, with sequences joining and leaving,
/// long prompts prefilled in chunks, and follow-up turns continuing from a reused prefix.
#[test]
fn gguf_files_run_on_the_engine_as_alone() {
    use cria_gguf::export::{ExportOptions, export};
    use cria_gguf::infer::QModel;
    use cria_gguf::quant::GgmlType;
    // cria-gguf's fixture: the one above has LLaMA 3.1's rope scaling, which GGUF export refuses.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cria-gguf/tests/fixtures/llama");
    let base = checkpoint::load_model(&dir, &device::inference_device()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for quant in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let file = tmp.path().join(format!("llama-{}.gguf", quant.name()));
        let opts = ExportOptions {
            quant,
            name: "llama".into(),
            chat_template: None,
        };
        export(&base, &dir, &opts, &file).unwrap();
        let q = QModel::open(&file).unwrap();
        let reqs: Vec<Request> = prompts()
            .into_iter()
            .enumerate()
            .map(|(i, p)| greedy(p, 6 + 3 * i))
            .collect();
        let want: Vec<Vec<u32>> = reqs.iter().map(|r| alone(&q, r)).collect();
        // Each conversation's next turn: its prompt, its reply, and a new message.
        let follow: Vec<Request> = reqs
            .iter()
            .zip(&want)
            .map(|(r, w)| greedy([&r.prompt[..], w, &[4, 8, 15]].concat(), 5))
            .collect();
        let want_follow: Vec<Vec<u32>> = follow.iter().map(|r| alone(&q, r)).collect();
        let engine = Engine::start(
            QModel::open(&file).unwrap(),
            EngineConfig {
                parallel: 3,
                prefill_chunk: 8,
                // Room for both rounds' entries: none evicted before its follow-up comes.
                prefix_cache: 16,
                ..Default::default()
            },
        );
        for (round, (reqs, want)) in [(&reqs, &want), (&follow, &want_follow)]
            .into_iter()
            .enumerate()
        {
            let rxs: Vec<_> = reqs
                .iter()
                .map(|r| engine.submit(r.clone()).unwrap())
                .collect();
            for (i, (rx, want)) in rxs.into_iter().zip(want).enumerate() {
                let (got, _, usage) = collect(rx);
                assert_eq!(&got, want, "{}: round {round}, request {i}", quant.name());
                if round == 1 {
                    // The earlier turn's cache was reused (all but the new message).
                    assert_eq!(
                        usage.cached_tokens,
                        reqs[i].prompt.len() - 4,
                        "{}: request {i}",
                        quant.name()
                    );
                }
            }
        }
        let s = engine.stats();
        assert!(s.decode_rows.load(Ordering::Relaxed) > s.decode_steps.load(Ordering::Relaxed));
    }
}
