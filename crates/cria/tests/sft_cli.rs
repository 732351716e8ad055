//! End-to-end tests of `cria sft` (full, LoRA, LLaMA-Adapter), `cria chat` and `cria export`
//! in temporary directories on tiny data.

mod common;

use common::*;
use std::path::Path;

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
    let chat = |ckpt: &Path| {
        let out = chat_output(
            ckpt,
            "What does Ana like?\n/reset\n/system Answer briefly.\nWhat does Bo like?\n/quit\nignored\n",
            &["--temperature", "0", "--max-new-tokens", "6"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = chat(&ckpt);
    assert!(first.lines().count() >= 2, "two replies: {first:?}");
    assert_eq!(first, chat(&ckpt), "greedy chat is deterministic");

    // The same records in the Alpaca prompt: the checkpoint carries that template and chat
    // renders with it.
    let alpaca = s.root.join("sft-alpaca");
    run_ok(
        cria()
            .arg("sft")
            .arg("--config")
            .arg(&sft_cfg)
            .args([
                "--set",
                "data.format=\"alpaca\"",
                "--set",
                "data.seq_len=128",
                "--set",
            ])
            .arg(format!("out={:?}", alpaca.display().to_string())),
    );
    let ckpt = alpaca.join("checkpoint");
    let tc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ckpt.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert!(
        tc["chat_template"]
            .as_str()
            .unwrap()
            .contains("### Instruction:"),
        "Alpaca template saved"
    );
    assert_eq!(tc["eos_token"].as_str(), Some("<|end_of_text|>"));
    assert!(chat(&ckpt).lines().count() >= 2);
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
        "lora.dropout=0.1",
        "--set",
        "lora.target_modules=[\"q_proj\",\"v_proj\",\"down_proj\"]",
        "--set",
        "train.warmup_steps=0",
        "--set",
        "train.min_lr=1e-3",
    ];
    sft_straight_and_resumed(&s, &sft_cfg, &lora);
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
    assert_eq!(cfg_json["lora_dropout"].as_f64(), Some(0.1));
    assert_eq!(
        std::fs::read(ad.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(s.root.join("split/checkpoint/adapter_model.safetensors")).unwrap(),
        "a resumed LoRA run (with dropout) ends where an uninterrupted one does"
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
    sft_straight_and_resumed(&s, &sft_cfg, &args);
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
