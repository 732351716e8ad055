//! End-to-end tests of the `cria` binary in temporary directories on tiny data: tokenizer
//! training, pretraining, generation, exact resume after SIGKILL, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn cria() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cria"));
    c.env("RUST_LOG", "warn");
    c
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "command failed: {cmd:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command that must fail; returns its stderr.
fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        !out.status.success(),
        "command succeeded but should fail: {cmd:?}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A small corpus, a trained tokenizer and a config for a tiny model.
struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let corpus = root.join("corpus");
        std::fs::create_dir_all(&corpus).unwrap();
        let names = ["Ana", "Bo", "Cy", "Di", "Ed"];
        let things = ["bread", "rope", "tea", "maps"];
        let mut text = String::new();
        for i in 0..600 {
            let (a, b, t) = (names[i % 5], names[(i * 3 + 1) % 5], things[(i * 7) % 4]);
            text.push_str(&format!(
                "{a} gave {b} some {t} on day {}. {b} said thanks.\n",
                i % 9
            ));
        }
        std::fs::write(corpus.join("a.txt"), &text).unwrap();
        let lines: String = (0..50)
            .map(|i| {
                format!(
                    "{}\n",
                    serde_json::json!({"text": format!("Note {i}: {} likes tea.", names[i % 5])})
                )
            })
            .collect();
        std::fs::write(corpus.join("b.jsonl"), lines).unwrap();
        run_ok(
            cria()
                .args(["tokenizer", "train", "--input"])
                .arg(&corpus)
                .args(["--vocab-size", "300", "--out"])
                .arg(root.join("tok")),
        );
        Setup { _tmp: tmp, root }
    }

    fn config(&self, steps: u64, save_every: u64) -> PathBuf {
        let p = self.root.join("pretrain.toml");
        std::fs::write(
            &p,
            format!(
                r#"tokenizer = "tok"
[model]
hidden_size = 32
intermediate_size = 64
num_hidden_layers = 2
num_attention_heads = 4
num_key_value_heads = 2
max_position_embeddings = 128
[data]
inputs = ["corpus"]
seq_len = 32
val_fraction = 0.1
[train]
steps = {steps}
batch_size = 4
lr = 3e-3
warmup_steps = 2
log_every = 1
eval_every = 5
eval_batches = 2
save_every = {save_every}
"#
            ),
        )
        .unwrap();
        p
    }
}

fn pretrain(s: &Setup, cfg: &Path, out: &str) -> Command {
    let mut c = cria();
    c.arg("pretrain")
        .arg("--config")
        .arg(cfg)
        .arg("--out")
        .arg(s.root.join(out));
    c
}

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

fn state_step(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("checkpoint/trainer_state.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
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
    let cfg = s.config(50, 1);
    // An absurd learning rate blows the weights up within a few steps.
    let err = run_err(pretrain(&s, &cfg, "run").args([
        "--set",
        "train.lr=1e9",
        "--set",
        "train.warmup_steps=0",
        "--set",
        "train.grad_clip=false",
    ]));
    assert!(err.contains("stopping. The last good checkpoint"), "{err}");
    let good = state_step(&s.root.join("run")).expect("a checkpoint from before the blow-up");
    assert!(good < 50);
    // The kept checkpoint is complete and loads.
    let out = run_ok(
        cria()
            .args(["generate", "--model"])
            .arg(s.root.join("run/checkpoint"))
            .args(["--prompt", "Ana", "--max-new-tokens", "2"]),
    );
    assert!(out.status.success());
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

fn write_sft_config(s: &Setup, train: &str) -> PathBuf {
    let p = s.root.join("sft.toml");
    std::fs::write(
        &p,
        format!(
            r#"init = "base/checkpoint"
out = "sft"
[data]
train = ["{train}"]
seq_len = 48
val_fraction = 0.1
[train]
steps = 6
batch_size = 4
lr = 1e-3
warmup_steps = 1
log_every = 1
eval_every = 3
eval_batches = 2
save_every = 3
"#
        ),
    )
    .unwrap();
    p
}

#[test]
fn sft_on_chat_and_alpaca_records() {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    run_ok(&mut pretrain(&s, &cfg, "base"));
    let names = ["Ana", "Bo", "Cy", "Di", "Ed"];
    let mut lines = String::new();
    for i in 0..40 {
        let n = names[i % 5];
        let rec = if i % 2 == 0 {
            serde_json::json!({"messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": format!("What does {n} like?")},
                {"role": "assistant", "content": format!("{n} likes tea.")}]})
        } else {
            serde_json::json!({"instruction": format!("Say who likes tea."), "input": n, "output": format!("{n} likes tea.")})
        };
        lines.push_str(&format!("{rec}\n"));
    }
    std::fs::write(s.root.join("chat.jsonl"), lines).unwrap();
    let sft_cfg = write_sft_config(&s, "chat.jsonl");
    let out = run_ok(cria().arg("sft").arg("--config").arg(&sft_cfg));
    let ckpt = s.root.join("sft/checkpoint");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        ckpt.display().to_string()
    );
    let tc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ckpt.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert!(
        tc["chat_template"]
            .as_str()
            .unwrap()
            .contains("<|end_of_turn|>"),
        "chat template saved for transformers"
    );
    let metrics = std::fs::read_to_string(s.root.join("sft/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 6);
    assert!(ckpt.join("sft.toml").exists());

    // A scripted conversation over stdin: replies stream to stdout, commands are obeyed.
    let chat = || {
        use std::io::Write;
        let mut child = cria()
            .args(["chat", "--model"])
            .arg(&ckpt)
            .args(["--temperature", "0", "--max-new-tokens", "6"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"What does Ana like?\n/reset\n/system Answer briefly.\nWhat does Bo like?\n/quit\nignored\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = chat();
    assert!(first.lines().count() >= 2, "two replies: {first:?}");
    assert_eq!(first, chat(), "greedy chat is deterministic");
}

#[test]
fn sft_bad_records_name_file_line_and_field() {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    run_ok(&mut pretrain(&s, &cfg, "base"));
    let ok = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#;
    let cases = [
        (
            r#"{"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]}"#,
            "field `messages[0].role`: unknown role `bot`",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]}"#,
            "field `messages[1].content`: empty assistant turn",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
            "ends on a user turn",
        ),
        (
            r#"{"conversations": [{"from": "human", "value": 3}]}"#,
            "field `conversations[0].value`: expected a string",
        ),
        (r#"{"instruction": "do it"}"#, "field `output`: missing"),
        (r#"{"text": "plain"}"#, "not a known format"),
    ];
    for (bad, want) in cases {
        std::fs::write(s.root.join("bad.jsonl"), format!("{ok}\n{bad}\n")).unwrap();
        let cfg = write_sft_config(&s, "bad.jsonl");
        let err = run_err(cria().arg("sft").arg("--config").arg(&cfg));
        assert!(
            err.contains("bad.jsonl:2:") && err.contains(want),
            "want {want:?} in: {err}"
        );
        assert!(!s.root.join("sft/checkpoint").exists());
    }
}

#[test]
fn lora_sft_saves_a_peft_adapter_resumes_and_merges() {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    run_ok(&mut pretrain(&s, &cfg, "base"));
    let lines: String = (0..30)
        .map(|i| {
            let n = ["Ana", "Bo", "Cy"][i % 3];
            format!("{}\n", serde_json::json!({"prompt": format!("Who likes tea? {i}"), "completion": format!("{n} likes tea.")}))
        })
        .collect();
    std::fs::write(s.root.join("pc.jsonl"), lines).unwrap();
    let sft_cfg = write_sft_config(&s, "pc.jsonl");
    let lora = [
        "--set",
        "method=\"lora\"",
        "--set",
        "lora.r=4",
        "--set",
        "lora.alpha=8",
        "--set",
        "lora.target_modules=[\"q_proj\",\"v_proj\",\"down_proj\"]",
        "--set",
        "train.warmup_steps=0",
        "--set",
        "train.min_lr=1e-3",
    ];
    let sft = |out: &str, steps: &str| {
        run_ok(
            cria()
                .arg("sft")
                .arg("--config")
                .arg(&sft_cfg)
                .args(lora)
                .args(["--out", out, "--steps", steps])
                .current_dir(&s.root),
        );
    };
    sft("straight", "6");
    sft("split", "3");
    sft("split", "6");
    let ad = s.root.join("straight/checkpoint");
    assert!(
        ad.join("adapter_config.json").exists() && ad.join("adapter_model.safetensors").exists()
    );
    assert!(
        !ad.join("model.safetensors").exists(),
        "only the adapter is saved"
    );
    let cfg_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ad.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(
        (cfg_json["peft_type"].as_str(), cfg_json["r"].as_u64()),
        (Some("LORA"), Some(4))
    );
    assert_eq!(
        std::fs::read(ad.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(s.root.join("split/checkpoint/adapter_model.safetensors")).unwrap(),
        "a resumed LoRA run ends where an uninterrupted one does"
    );

    // Base + adapter generates what the merged export generates.
    let base = s.root.join("base/checkpoint");
    let greedy = |extra: &[&std::ffi::OsStr], model: &Path| {
        let out = run_ok(
            cria()
                .args([
                    "generate",
                    "--temperature",
                    "0",
                    "--max-new-tokens",
                    "12",
                    "--prompt",
                    "Who likes",
                ])
                .arg("--model")
                .arg(model)
                .args(extra),
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let with_adapter = greedy(&["--adapter".as_ref(), ad.as_os_str()], &base);
    let merged = s.root.join("merged");
    run_ok(
        cria()
            .args(["export", "--merge-lora", "--model"])
            .arg(&base)
            .arg("--adapter")
            .arg(&ad)
            .arg("--out")
            .arg(&merged),
    );
    assert!(merged.join("model.safetensors").exists() && merged.join("config.json").exists());
    assert_eq!(with_adapter, greedy(&[], &merged));
    assert_ne!(
        std::fs::read(merged.join("model.safetensors")).unwrap(),
        std::fs::read(base.join("model.safetensors")).unwrap(),
        "merging changed the weights"
    );
    // The adapter is refused on a different base.
    let other = s.root.join("other");
    let small = s.config(1, 1);
    run_ok(pretrain(&s, &small, "other").args([
        "--set",
        "model.hidden_size=16",
        "--set",
        "model.num_attention_heads=2",
        "--set",
        "model.num_key_value_heads=1",
    ]));
    let err = run_err(
        cria()
            .args(["generate", "--prompt", "x", "--model"])
            .arg(other.join("checkpoint"))
            .arg("--adapter")
            .arg(&ad),
    );
    assert!(
        err.contains("adapter_model.safetensors") && err.contains("shape"),
        "{err}"
    );
}

#[test]
fn llama_adapter_sft_trains_gates_resumes_and_chats() {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    run_ok(&mut pretrain(&s, &cfg, "base"));
    let lines: String = (0..24)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"prompt": format!("Name {i}?"), "completion": "Cy likes tea."})
            )
        })
        .collect();
    std::fs::write(s.root.join("pc.jsonl"), lines).unwrap();
    let sft_cfg = write_sft_config(&s, "pc.jsonl");
    let args = [
        "--set",
        "method=\"llama-adapter\"",
        "--set",
        "adapter.len=3",
        "--set",
        "adapter.layers=1",
        "--set",
        "train.warmup_steps=0",
        "--set",
        "train.min_lr=1e-3",
    ];
    let sft = |out: &str, steps: &str| {
        run_ok(
            cria()
                .arg("sft")
                .arg("--config")
                .arg(&sft_cfg)
                .args(args)
                .args(["--out", out, "--steps", steps])
                .current_dir(&s.root),
        );
    };
    sft("straight", "6");
    sft("split", "3");
    sft("split", "6");
    let ad = s.root.join("straight/checkpoint");
    assert!(
        !ad.join("model.safetensors").exists(),
        "only the adapter is saved"
    );
    assert_eq!(
        std::fs::read(ad.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(s.root.join("split/checkpoint/adapter_model.safetensors")).unwrap(),
        "a resumed run ends where an uninterrupted one does"
    );
    let mut child = cria()
        .args([
            "chat",
            "--temperature",
            "0",
            "--max-new-tokens",
            "4",
            "--model",
        ])
        .arg(s.root.join("base/checkpoint"))
        .arg("--adapter")
        .arg(&ad)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"Name 3?\n").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    // A LLaMA-Adapter cannot be merged into the base.
    let err = run_err(
        cria()
            .args(["export", "--merge-lora", "--model"])
            .arg(s.root.join("base/checkpoint"))
            .arg("--adapter")
            .arg(&ad)
            .arg("--out")
            .arg(s.root.join("m")),
    );
    assert!(err.contains("only LORA adapters"), "{err}");
}
