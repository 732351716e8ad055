//! cria's own inference on GGUF files: the f32 file gives the checkpoint's logits, the
//! quantized ones decode as llama.cpp does on the same files (greedy ids recorded from llama.cpp
//! by scripts/ref/gguf_fixtures.py), and the file's tokenizer is the checkpoint's.

use cria_core::checkpoint;
use cria_core::generate::{GenerateOptions, NextLogits, generate_with_logits};
use cria_core::sampling::SamplingParams;
use cria_gguf::export::{ExportOptions, export};
use cria_gguf::infer::QModel;
use cria_gguf::quant::GgmlType;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn export_to(name: &str, quant: GgmlType, dir: &Path) -> PathBuf {
    let model = checkpoint::load_model(
        &fixtures().join(name),
        &cria_core::device::inference_device(),
    )
    .unwrap();
    let out = dir.join(format!("{name}-{}.gguf", quant.name()));
    let opts = ExportOptions {
        quant,
        name: name.into(),
        chat_template: None,
    };
    export(&model, &fixtures().join(name), &opts, &out).unwrap();
    out
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Where two greedy runs part, cria's two best logits must be within `TIE` (logits here are
/// 2–5): llama.cpp accumulates attention outputs in f16 and sums in another order, so a near
/// tie may go either way. A wrong layout or kernel parts at once, by whole logits.
const TIE: f32 = 0.05;

#[test]
fn f32_file_gives_the_checkpoints_logits() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["llama", "qwen2"] {
        let ck = fixtures().join(name);
        let model = checkpoint::load_model(&ck, &cria_core::device::inference_device()).unwrap();
        let q = QModel::open(&export_to(name, GgmlType::F32, dir.path())).unwrap();
        let prompt = [5u32, 77, 140, 9, 200, 31, 64];
        // Whole prompt at once, then one token at a time after it: both paths of the cache.
        let (mut c1, mut c2) = (NextLogits::new_cache(&model), q.new_cache());
        let want = model.next_logits(&prompt, &mut c1);
        let got = q.forward(&prompt, &mut c2);
        // The KV cache is f16 (as llama.cpp's): logits within 5e-3 of the f32 checkpoint's.
        cria_testkit::assert_close(&got, &want, 5e-3, &format!("{name} prompt logits"));
        let want = model.next_logits(&[17], &mut c1);
        let got = q.forward(&[17], &mut c2);
        cria_testkit::assert_close(&got, &want, 5e-3, &format!("{name} next-token logits"));
    }
}

#[test]
fn quantized_files_decode_as_llama_cpp_does() {
    let dir = tempfile::tempdir().unwrap();
    let ref_: Json = cria_testkit::read_json(&fixtures().join("llama_cpp.json"));
    let mut compared = 0;
    for name in ["llama", "qwen2"] {
        let e = &ref_[name];
        for q in [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_0] {
            let path = export_to(name, q, dir.path());
            let m = QModel::open(&path).unwrap();
            let tok = cria_gguf::tokenizer::tokenizer(&m.file).unwrap();
            let stops = cria_gguf::tokenizer::stop_ids(&m.file, &tok);
            for (text, want) in e["texts"]
                .as_array()
                .unwrap()
                .iter()
                .zip(e["tokens"].as_array().unwrap())
            {
                assert_eq!(
                    tok.encode(text.as_str().unwrap(), true).unwrap(),
                    ids(want),
                    "{name}: the file's tokenizer on {text}"
                );
            }
            let prompts = e["prompts"].as_array().unwrap();
            for (p, want) in prompts
                .iter()
                .zip(e["greedy"][q.name()].as_array().unwrap())
            {
                let want = ids(want);
                let prompt = tok.encode(p.as_str().unwrap(), true).unwrap();
                let opts = GenerateOptions {
                    max_new_tokens: 16,
                    sampling: SamplingParams {
                        temperature: 0.0,
                        ..Default::default()
                    },
                    stop_ids: stops.clone(),
                };
                let mut gaps = Vec::new();
                let (got, _) = generate_with_logits(&m, &prompt, &opts, |_, l| {
                    let mut s = l.to_vec();
                    s.sort_by(|a, b| b.total_cmp(a));
                    gaps.push(s[0] - s[1]);
                    true
                })
                .unwrap();
                match got.iter().zip(&want).position(|(a, b)| a != b) {
                    None => assert_eq!(
                        got.len(),
                        want.len(),
                        "{name} {q:?} after {p}: {got:?} vs llama.cpp {want:?}"
                    ),
                    Some(k) => assert!(
                        gaps[k] < TIE,
                        "{name} {q:?} after {p}: token {k} differs (gap {}): {got:?} vs llama.cpp {want:?}",
                        gaps[k]
                    ),
                }
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 18);
}

#[test]
fn unsupported_files_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = export_to("llama", GgmlType::Q8_0, dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Rename the architecture in place ("llama" -> "gemma", same length).
    let pos = bytes.windows(5).position(|w| w == b"llama").unwrap();
    let key_end = bytes
        .windows(20)
        .position(|w| w == b"general.architecture")
        .unwrap();
    assert!(pos > key_end);
    bytes[pos..pos + 5].copy_from_slice(b"gemma");
    let p = dir.path().join("gemma.gguf");
    std::fs::write(&p, &bytes).unwrap();
    let err = QModel::open(&p).err().unwrap().to_string();
    assert!(
        err.contains("gemma.gguf") && err.contains("architecture \"gemma\""),
        "{err}"
    );
}

/// Several sequences in one pass (what `cria serve` runs) get exactly the logits each gets
/// alone: prompts of different lengths prefilled together, then decoded together with one
/// sequence joining late, on every weight type and both RoPE layouts.
#[test]
fn sequences_in_one_pass_equal_each_alone() {
    let dir = tempfile::tempdir().unwrap();
    let prompts: [&[u32]; 3] = [
        &[5, 77, 140, 9, 200],
        &[31],
        &[64, 3, 18, 250, 7, 99, 12, 41],
    ];
    for (name, quant) in [
        ("llama", GgmlType::Q4_0),
        ("llama", GgmlType::Q8_0),
        ("qwen2", GgmlType::Q8_0),
        ("qwen2", GgmlType::F16),
        ("llama", GgmlType::F32),
    ] {
        let q = QModel::open(&export_to(name, quant, dir.path())).unwrap();
        let what = format!("{name} {}", quant.name());
        // Alone: each prompt, then four greedy steps.
        let alone: Vec<Vec<Vec<f32>>> = prompts
            .iter()
            .map(|p| {
                let mut c = q.new_cache();
                let mut out = vec![q.forward(p, &mut c)];
                for _ in 0..4 {
                    let next = argmax(out.last().unwrap());
                    out.push(q.forward(&[next], &mut c));
                }
                out
            })
            .collect();
        // Together: the first two prompts in one pass, then the third prompt in a pass of its
        // own while the others take their first decode step... all decoding together after.
        let mut caches: Vec<_> = (0..3).map(|_| q.new_cache()).collect();
        let [c0, c1, c2] = &mut caches[..] else {
            unreachable!()
        };
        let first = q.forward_rows(&mut [(prompts[0], &mut *c0), (prompts[1], &mut *c1)], false);
        let mut got = vec![vec![first[0].clone()], vec![first[1].clone()], vec![]];
        let (n0, n1) = (argmax(&first[0]), argmax(&first[1]));
        let mixed = q.forward_rows(
            &mut [(&[n0], &mut *c0), (prompts[2], &mut *c2), (&[n1], &mut *c1)],
            false,
        );
        got[0].push(mixed[0].clone());
        got[2].push(mixed[1].clone());
        got[1].push(mixed[2].clone());
        while got[2].len() < 5 {
            let next: Vec<u32> = got.iter().map(|g| argmax(g.last().unwrap())).collect();
            let mut seqs: Vec<(&[u32], &mut _)> = vec![];
            let [c0, c1, c2] = &mut caches[..] else {
                unreachable!()
            };
            for (i, c) in [c0, c1, c2].into_iter().enumerate() {
                if got[i].len() < 5 {
                    seqs.push((std::slice::from_ref(&next[i]), c));
                }
            }
            let live: Vec<usize> = (0..3).filter(|&i| got[i].len() < 5).collect();
            for (i, l) in live.into_iter().zip(q.forward_rows(&mut seqs, false)) {
                got[i].push(l);
            }
        }
        for (s, (a, g)) in alone.iter().zip(&got).enumerate() {
            for (step, (a, g)) in a.iter().zip(g).enumerate() {
                assert!(
                    a.iter().zip(g).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{what}: sequence {s}, step {step}: logits differ from the sequence alone"
                );
            }
        }
        // Every position's logits at once: the last row is the one-row answer.
        let mut c = q.new_cache();
        let all = q.forward_rows(&mut [(prompts[2], &mut c)], true);
        assert_eq!(all.len(), prompts[2].len());
        assert_eq!(all.last().unwrap(), &alone[2][0], "{what}: all positions");
        // A prompt longer than one attention block (16 rows) and one panel tile (6 rows) reads
        // to the same logits at every position as feeding it one id at a time.
        let long: Vec<u32> = (0..41).map(|i| (i * 37 + 11) % 250).collect();
        let mut c = q.new_cache();
        let all = q.forward_rows(&mut [(&long[..], &mut c)], true);
        let mut one = q.new_cache();
        for (p, (&id, want)) in long.iter().zip(&all).enumerate() {
            let got = q.forward(&[id], &mut one);
            assert!(
                got.iter()
                    .zip(want)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{what}: position {p} of a long prompt differs from decoding it id by id"
            );
        }
        // A cache cut to a prefix continues as if only the prefix had been read.
        let mut full = q.new_cache();
        q.forward(prompts[2], &mut full);
        let mut cut = full.prefix(3);
        assert_eq!(cut.len(), 3);
        let mut fresh = q.new_cache();
        q.forward(&prompts[2][..3], &mut fresh);
        assert_eq!(
            q.forward(&prompts[2][3..], &mut cut),
            q.forward(&prompts[2][3..], &mut fresh),
            "{what}: prefix"
        );
    }
}

fn argmax(x: &[f32]) -> u32 {
    x.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0 as u32
}
