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
    assert!(err.contains("only LoRA adapters can be merged"), "{err}");
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
