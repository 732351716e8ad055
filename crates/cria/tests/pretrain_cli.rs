//! End-to-end tests of the `cria` binary for tokenizer training, pretraining, generation,
//! exact resume after SIGKILL, and bad input, in temporary directories on tiny data.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn tokenizer_pretrain_generate() {
    let s = Setup::new();
    let tok: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.root.join("tok/tokenizer.json")).unwrap()).unwrap();
    let added: Vec<&str> = tok["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        &added[..3],
        &["<|begin_of_text|>", "<|end_of_text|>", "<|end_of_turn|>"]
    );

    let cfg = s.config(6, 3);
    let out = run_ok(&mut pretrain(&s, &cfg, "run"));
    let ckpt = s.root.join("run/checkpoint");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        ckpt.display().to_string()
    );
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "trainer_state.json",
        "optimizer.safetensors",
        "pretrain.toml",
    ] {
        assert!(ckpt.join(f).exists(), "{f} missing from the checkpoint");
    }
    let metrics = std::fs::read_to_string(s.root.join("run/metrics.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps.len(), 6);
    assert!(steps[5]["val_loss"].as_f64().is_some());
    assert!(steps[5]["loss"].as_f64().unwrap() < steps[0]["loss"].as_f64().unwrap());
    // The log lines on a non-terminal stderr have the fixed format.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("step 00006/00006 | loss "), "{err}");

    let out = run_ok(cria().args(["generate", "--model"]).arg(&ckpt).args([
        "--prompt",
        "Ana gave",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
    ]));
    let a = String::from_utf8(out.stdout).unwrap();
    let out = run_ok(cria().args(["generate", "--model"]).arg(&ckpt).args([
        "--prompt",
        "Ana gave",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
    ]));
    assert_eq!(
        a,
        String::from_utf8(out.stdout).unwrap(),
        "greedy decoding is deterministic"
    );
    // A stop string ends the output before it.
    let out = run_ok(cria().args(["generate", "--model"]).arg(&ckpt).args([
        "--prompt",
        "Ana gave",
        "--max-new-tokens",
        "30",
        "--temperature",
        "0",
        "--stop",
        "e",
    ]));
    assert!(!String::from_utf8(out.stdout).unwrap().contains('e'));
}

#[test]
fn resume_after_sigkill_is_bit_identical() {
    let s = Setup::new();
    let cfg = s.config(120, 4);
    run_ok(&mut pretrain(&s, &cfg, "straight"));

    // Kill the second run with SIGKILL once it has checkpointed a few times.
    let mut child = pretrain(&s, &cfg, "killed")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let killed_dir = s.root.join("killed");
    let deadline = Instant::now() + Duration::from_secs(120);
    while state_step(&killed_dir).unwrap_or(0) < 12 {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let at_kill = state_step(&killed_dir).unwrap();
    assert!(
        at_kill < 120,
        "killed mid-run (checkpoint at step {at_kill})"
    );

    run_ok(&mut pretrain(&s, &cfg, "killed"));
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ] {
        let a = std::fs::read(s.root.join("straight/checkpoint").join(f)).unwrap();
        let b = std::fs::read(killed_dir.join("checkpoint").join(f)).unwrap();
        assert!(
            a == b,
            "{f} differs between the uninterrupted and the resumed run"
        );
    }
    let lines = |d: &str| {
        std::fs::read_to_string(s.root.join(d).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(
        lines("killed"),
        120,
        "metrics are not duplicated by the resume"
    );
    assert_eq!(lines("straight"), 120);
}

#[test]
fn resume_with_a_different_model_is_refused() {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    run_ok(&mut pretrain(&s, &cfg, "run"));
    let before = std::fs::read(s.root.join("run/checkpoint/model.safetensors")).unwrap();
    let err =
        run_err(pretrain(&s, &cfg, "run").args(["--set", "model.hidden_size=64", "--steps", "4"]));
    assert!(
        err.contains("cannot resume") && err.contains("trainer_state.json"),
        "{err}"
    );
    assert_eq!(
        before,
        std::fs::read(s.root.join("run/checkpoint/model.safetensors")).unwrap(),
        "checkpoint untouched"
    );
}

#[test]
fn unknown_config_key_is_an_error() {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    let err = run_err(pretrain(&s, &cfg, "run").args(["--set", "train.learning_rate=1e-3"]));
    assert!(
        err.contains("unknown field `learning_rate`") && err.contains("pretrain.toml"),
        "{err}"
    );
    assert!(!s.root.join("run").exists(), "nothing written");
}

#[test]
fn empty_corpus_is_an_error_and_writes_nothing() {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    std::fs::create_dir_all(s.root.join("empty")).unwrap();
    std::fs::write(s.root.join("empty/blank.txt"), "  \n\n").unwrap();
    let err = run_err(pretrain(&s, &cfg, "run").args([
        "--set",
        &format!(
            "data.inputs=[{:?}]",
            s.root.join("empty").display().to_string()
        ),
    ]));
    assert!(
        err.contains("the corpus is empty") && err.contains("blank.txt"),
        "{err}"
    );
    assert!(!s.root.join("run/checkpoint").exists());
}

#[test]
fn non_utf8_text_names_file_and_line() {
    let s = Setup::new();
    let bad = s.root.join("bad.txt");
    std::fs::write(&bad, b"fine line\nsecond line\nbad \xff byte\n").unwrap();
    let err = run_err(
        cria()
            .args(["tokenizer", "train", "--input"])
            .arg(&bad)
            .args(["--out"])
            .arg(s.root.join("t2")),
    );
    assert!(err.contains("bad.txt:3: not valid UTF-8"), "{err}");
    assert!(!s.root.join("t2").exists(), "no partial output");
}

#[test]
fn jsonl_record_without_text_names_line_and_field() {
    let s = Setup::new();
    let bad = s.root.join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"ok\"}\n{\"body\": \"no text\"}\n").unwrap();
    let err = run_err(
        cria()
            .args(["tokenizer", "train", "--input"])
            .arg(&bad)
            .args(["--out"])
            .arg(s.root.join("t2")),
    );
    assert!(err.contains("bad.jsonl:2: field `text`: missing"), "{err}");
}

#[test]
fn gzip_corpus_is_read_transparently() {
    use std::io::Write;
    let s = Setup::new();
    let gz = s.root.join("corpus.txt.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all("zebra zebra zebra quokka quokka\n".repeat(100).as_bytes())
        .unwrap();
    enc.finish().unwrap();
    run_ok(
        cria()
            .args(["tokenizer", "train", "--input"])
            .arg(&gz)
            .args(["--vocab-size", "280", "--out"])
            .arg(s.root.join("tgz")),
    );
    let tok = std::fs::read_to_string(s.root.join("tgz/tokenizer.json")).unwrap();
    assert!(
        tok.contains("zebra") || tok.contains("Ġzebra"),
        "merges learnt from the gzipped text"
    );
}

#[test]
fn generate_from_a_directory_missing_files() {
    let s = Setup::new();
    std::fs::create_dir_all(s.root.join("nomodel")).unwrap();
    let err = run_err(
        cria()
            .args(["generate", "--model"])
            .arg(s.root.join("nomodel"))
            .args(["--prompt", "hi"]),
    );
    assert!(err.contains("missing config.json"), "{err}");
}

#[test]
fn too_small_vocab_is_explained() {
    let s = Setup::new();
    let err = run_err(
        cria()
            .args(["tokenizer", "train", "--input"])
            .arg(s.root.join("corpus"))
            .args(["--vocab-size", "100", "--out"])
            .arg(s.root.join("t3")),
    );
    assert!(err.contains("--vocab-size 100 is too small"), "{err}");
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let s = Setup::new();
    let cfg = s.config(4, 1);
    run_ok(&mut pretrain(&s, &cfg, "run"));
    // Continued with an absurd learning rate, the weights blow up within a few steps.
    let err = run_err(pretrain(&s, &cfg, "run").args([
        "--steps",
        "50",
        "--set",
        "train.lr=1e9",
        "--set",
        "train.warmup_steps=0",
        "--set",
        "train.grad_clip=false",
    ]));
    assert!(err.contains("stopping. The last good checkpoint"), "{err}");
    let good = state_step(&s.root.join("run")).expect("a checkpoint from before the blow-up");
    assert!((4..50).contains(&good), "{good}");
    assert!(err.contains(&format!("step {good}, is in")), "{err}");
    assert!(err.contains("--set train.lr=1e8"), "{err}");
    // The kept checkpoint is complete, every weight finite, and it loads.
    let weights = cria_core::weights::WeightMap::read_dir(&s.root.join("run/checkpoint")).unwrap();
    assert!(
        weights
            .tensors
            .values()
            .all(|t| t.data.iter().all(|x| x.is_finite()))
    );
    let out = run_ok(
        cria()
            .args(["generate", "--model"])
            .arg(s.root.join("run/checkpoint"))
            .args(["--prompt", "Ana", "--max-new-tokens", "2"]),
    );
    assert!(out.status.success());
    // Resuming from it with a lower rate, as the message says, is accepted and logged.
    let out = run_ok(
        pretrain(&s, &cfg, "run")
            .env("RUST_LOG", "info")
            .args(["--steps", &(good + 2).to_string()])
            .args(["--set", "train.lr=1e-3", "--set", "train.warmup_steps=0"]),
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("resuming with train.lr = 0.001 (was 1000000000.0)"),
        "{log}"
    );
    assert_eq!(state_step(&s.root.join("run")), Some(good + 2));
}

#[test]
fn divergence_without_a_good_checkpoint_says_so() {
    let s = Setup::new();
    // No checkpoint before the blow-up: nothing to name.
    let cfg = s.config(50, 100);
    let err = run_err(pretrain(&s, &cfg, "run").args([
        "--set",
        "train.lr=1e9",
        "--set",
        "train.warmup_steps=0",
        "--set",
        "train.grad_clip=false",
    ]));
    assert!(
        err.contains("There is no good checkpoint to resume from"),
        "{err}"
    );
    assert!(!s.root.join("run/checkpoint").exists());
    // A checkpoint whose weights are not finite (as older builds could leave) is not good.
    let cfg = s.config(2, 2);
    run_ok(&mut pretrain(&s, &cfg, "nan"));
    let file = s.root.join("nan/checkpoint/model.safetensors");
    let mut map = cria_core::weights::WeightMap::default();
    cria_core::weights::WeightMap::read_file(&file, &mut map).unwrap();
    let mut tensors: cria_core::weights::NamedTensors = map
        .tensors
        .into_iter()
        .map(|(k, t)| (k, (t.shape, t.data)))
        .collect();
    tensors.get_mut("model.norm.weight").unwrap().1[0] = f32::NAN;
    cria_core::weights::save_safetensors(&file, &tensors, None).unwrap();
    let err = run_err(pretrain(&s, &cfg, "nan").args(["--steps", "4"]));
    assert!(
        err.contains("There is no good checkpoint to resume from"),
        "{err}"
    );
}

#[test]
fn continued_pretraining_from_a_checkpoint() {
    let s = Setup::new();
    let cfg = s.config(4, 4);
    run_ok(&mut pretrain(&s, &cfg, "base"));
    let base = s.root.join("base/checkpoint");
    // A new corpus; the model shape and tokenizer come from the checkpoint, not [model].
    std::fs::create_dir_all(s.root.join("new")).unwrap();
    std::fs::write(
        s.root.join("new/n.txt"),
        "Bo sold maps and tea to Cy. ".repeat(200),
    )
    .unwrap();
    let new_inputs = format!(
        "data.inputs=[{:?}]",
        s.root.join("new").display().to_string()
    );
    run_ok(pretrain(&s, &cfg, "cont").arg("--init").arg(&base).args([
        "--set",
        &new_inputs,
        "--set",
        "model.hidden_size=999",
    ]));
    let a = std::fs::read_to_string(base.join("config.json")).unwrap();
    let b = std::fs::read_to_string(s.root.join("cont/checkpoint/config.json")).unwrap();
    assert_eq!(a, b, "same architecture as the checkpoint it continued");
    assert_ne!(
        std::fs::read(base.join("model.safetensors")).unwrap(),
        std::fs::read(s.root.join("cont/checkpoint/model.safetensors")).unwrap(),
        "the weights moved"
    );
    // A checkpoint whose tokenizer is larger than its embedding table is refused.
    let bad = s.root.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer_config.json"] {
        std::fs::copy(base.join(f), bad.join(f)).unwrap();
    }
    run_ok(
        cria()
            .args(["tokenizer", "train", "--input"])
            .arg(s.root.join("corpus"))
            .args(["--vocab-size", "500", "--out"])
            .arg(s.root.join("bigtok")),
    );
    std::fs::copy(
        s.root.join("bigtok/tokenizer.json"),
        bad.join("tokenizer.json"),
    )
    .unwrap();
    let err = run_err(pretrain(&s, &cfg, "cont2").arg("--init").arg(&bad));
    assert!(
        err.contains("tokenizer.json") && err.contains("does not fit the model's vocab_size"),
        "{err}"
    );
}
