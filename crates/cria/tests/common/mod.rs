//! Helpers for the `cria` binary's end-to-end tests: running it, a tiny corpus with a trained
//! tokenizer, and configs for tiny models.
#![allow(dead_code, unused_imports)]

pub use cria_testkit::read_json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn cria() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cria"));
    c.env("RUST_LOG", "warn");
    c
}

pub fn run_ok(cmd: &mut Command) -> Output {
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
pub fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        !out.status.success(),
        "command succeeded but should fail: {cmd:?}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A small corpus, a trained tokenizer and a config for a tiny model.
pub struct Setup {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Setup {
    pub fn new() -> Setup {
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

    pub fn config(&self, steps: u64, save_every: u64) -> PathBuf {
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

pub fn pretrain(s: &Setup, cfg: &Path, out: &str) -> Command {
    let mut c = cria();
    c.arg("pretrain")
        .arg("--config")
        .arg(cfg)
        .arg("--out")
        .arg(s.root.join(out));
    c
}

/// `cria export --to gguf --quant QUANT` of the checkpoint `model` into `out`, without a
/// Modelfile.
pub fn export_gguf(model: &Path, quant: &str, out: &Path) {
    run_ok(
        cria()
            .args(["export", "--to", "gguf", "--quant", quant, "--no-modelfile"])
            .arg("--model")
            .arg(model)
            .arg("--out")
            .arg(out),
    );
}

/// `cria chat --model CKPT ARGS...` fed `input` on stdin (a scripted conversation).
pub fn chat_output(ckpt: &Path, input: &str, args: &[&str]) -> Output {
    use std::io::Write;
    let mut child = cria()
        .args(["chat", "--model"])
        .arg(ckpt)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn state_step(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("checkpoint/trainer_state.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
}

pub fn write_sft_config(s: &Setup, train: &str) -> PathBuf {
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

/// Runs `cria sft` for 6 steps straight (into `straight/`) and as 3 steps then a resume to 6
/// (into `split/`), with a constant learning rate so both runs see the same schedule.
pub fn sft_straight_and_resumed(s: &Setup, cfg: &Path, args: &[&str]) {
    straight_and_resumed(s, "sft", cfg, args)
}

/// As [`sft_straight_and_resumed`], for any training command.
pub fn straight_and_resumed(s: &Setup, command: &str, cfg: &Path, args: &[&str]) {
    let sft = |out: &str, steps: &str| {
        run_ok(
            cria()
                .arg(command)
                .arg("--config")
                .arg(cfg)
                .args(args)
                .args(["--out", out, "--steps", steps])
                .current_dir(&s.root),
        );
    };
    sft("straight", "6");
    sft("split", "3");
    sft("split", "6");
}

/// A `cria` server process on a free port (`--port 0` among `args`), killed when dropped.
pub struct Spawned {
    pub child: std::process::Child,
    /// `host:port` it printed.
    pub addr: String,
}

impl Spawned {
    /// Starts `cria ARGS` and waits for the line that names its address.
    pub fn start(args: &[&str]) -> Spawned {
        use std::io::BufRead;
        let mut child = cria()
            .env("RUST_LOG", "info")
            .args(args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut lines = err.lines();
        let addr = loop {
            let l = lines
                .next()
                .expect("the server said where it listens")
                .unwrap();
            if l.contains("ready") && l.contains("http://") {
                let at = l.find("http://").unwrap() + 7;
                break l[at..].split('/').next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Spawned { child, addr }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
