//! `cria export --to gguf`: the file and its ollama Modelfile, and the exports it refuses.

mod common;
use common::{cria, run_err, run_ok};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../cria-gguf/tests/fixtures")
        .join(name)
}

#[test]
fn export_writes_gguf_and_modelfile_and_refuses_what_cannot_be_exported() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("models/qwen.gguf");
    let o = run_ok(
        cria()
            .args(["export", "--to", "gguf", "--quant", "q4_0", "--model"])
            .arg(fixture("qwen2"))
            .arg("--out")
            .arg(&out),
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        out.display().to_string()
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("architecture qwen2") && stderr.contains("q4_0"),
        "{stderr}"
    );
    let f = cria_gguf::GgufFile::open(&out).unwrap();
    assert_eq!(
        f.get("general.name").and_then(|v| v.as_str()),
        Some("qwen2")
    );
    let mf = std::fs::read_to_string(dir.path().join("models/Modelfile")).unwrap();
    assert!(
        mf.contains("FROM ./qwen.gguf")
            && mf.contains("<|im_start|>")
            && mf.contains("stop \"<|im_end|>\""),
        "{mf}"
    );

    // A LLaMA-Adapter has no weights to merge into.
    let ad = dir.path().join("adapter");
    std::fs::create_dir_all(&ad).unwrap();
    std::fs::write(
        ad.join("adapter_config.json"),
        r#"{"peft_type": "CRIA_LLAMA_ADAPTER", "adapter_len": 4, "adapter_layers": 1}"#,
    )
    .unwrap();
    let other = dir.path().join("other.gguf");
    let err = run_err(
        cria()
            .args(["export", "--to", "gguf", "--model"])
            .arg(fixture("llama"))
            .arg("--adapter")
            .arg(&ad)
            .arg("--out")
            .arg(&other),
    );
    assert!(err.contains("only LORA adapters"), "{err}");
    assert!(!other.exists());
    // --out must be a file.
    let err = run_err(
        cria()
            .args(["export", "--to", "gguf", "--model"])
            .arg(fixture("llama"))
            .arg("--out")
            .arg(dir.path()),
    );
    assert!(err.contains("is a directory"), "{err}");
    // An HF export with an adapter must say it merges.
    let err = run_err(
        cria()
            .args(["export", "--model"])
            .arg(fixture("llama"))
            .arg("--adapter")
            .arg(&ad)
            .arg("--out")
            .arg(dir.path().join("hf")),
    );
    assert!(err.contains("--merge-lora"), "{err}");
}

fn chat(model: &std::path::Path, input: &str) -> String {
    let out = common::chat_output(
        model,
        input,
        &["--temperature", "0", "--max-new-tokens", "12"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cria chat` and `generate` run a GGUF file on its own weights, prompted with the template it
/// carries: the f32 export answers a two-turn conversation as the checkpoint does.
#[test]
fn chat_and_generate_run_gguf_files() {
    let dir = tempfile::tempdir().unwrap();
    let f32 = dir.path().join("llama-f32.gguf");
    common::export_gguf(&fixture("llama"), "f32", &f32);
    let talk = "Where is the office?\nAnd the badge?\n";
    let want = chat(&fixture("llama"), talk);
    assert_eq!(want.lines().count(), 2, "{want}");
    assert_eq!(chat(&f32, talk), want);

    let q4 = dir.path().join("qwen2-q4_0.gguf");
    common::export_gguf(&fixture("qwen2"), "q4_0", &q4);
    let o = run_ok(
        cria()
            .args([
                "generate",
                "--json",
                "--temperature",
                "0",
                "--max-new-tokens",
                "8",
                "--ignore-eos",
                "--threads",
                "1",
                "--prompt",
                "Hello",
                "--model",
            ])
            .arg(&q4),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ids"].as_array().unwrap().len(), 8, "{v}");
    assert!(v["prompt_seconds"].as_f64().unwrap() > 0.0);
    let err = run_err(
        cria()
            .args(["generate", "--prompt", "x", "--model"])
            .arg(&q4)
            .arg("--adapter")
            .arg(dir.path()),
    );
    assert!(err.contains("merge the LoRA adapter at export"), "{err}");
    // Perplexity of the file on held-out text; the other measures need the checkpoint.
    let corpus = dir.path().join("held-out.txt");
    std::fs::write(
        &corpus,
        "The office opens at nine. Expense reports are due on Fridays. ".repeat(20),
    )
    .unwrap();
    let o = run_ok(
        cria()
            .args(["eval", "--seq-len", "16", "--model"])
            .arg(&q4)
            .arg("--corpus")
            .arg(&corpus),
    );
    let table = String::from_utf8_lossy(&o.stdout);
    let ppl: f64 = table
        .lines()
        .last()
        .unwrap()
        .split('|')
        .nth(2)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "{table}");
    let err = run_err(
        cria()
            .args(["eval", "--model"])
            .arg(&q4)
            .arg("--world")
            .arg(dir.path())
            .arg("--corpus")
            .arg(&corpus),
    );
    assert!(err.contains("perplexity on --corpus only"), "{err}");
    std::fs::write(dir.path().join("bad.gguf"), b"GGUF\x03\x00\x00\x00").unwrap();
    let err = run_err(
        cria()
            .args(["chat", "--model"])
            .arg(dir.path().join("bad.gguf")),
    );
    assert!(
        err.contains("bad.gguf") && err.contains("ends inside"),
        "{err}"
    );
}
