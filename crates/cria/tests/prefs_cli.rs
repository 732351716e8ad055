//! End-to-end tests of `cria rm` and `cria dpo` on tiny data: every preference format trains,
//! runs resume exactly, the reward model is saved as a sequence classifier, and bad records are
//! errors naming file, line and field.

mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Preference records in each accepted shape, 24 in all.
fn write_prefs(root: &Path) -> PathBuf {
    let names = ["Ana", "Bo", "Cy", "Di"];
    let mut lines = String::new();
    for i in 0..24 {
        let n = names[i % 4];
        let q = format!("Who likes tea {i}?");
        let good = format!("{n} likes tea. Glad to help!");
        let bad = "Ask someone else.".to_string();
        let rec = match i % 4 {
            0 => json!({"prompt": q, "chosen": good, "rejected": bad}),
            1 => json!({
                "chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": good}],
                "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": bad}],
            }),
            2 => json!({
                "chosen": format!("\n\nHuman: {q}\n\nAssistant: {good}"),
                "rejected": format!("\n\nHuman: {q}\n\nAssistant: {bad}"),
            }),
            _ => json!({
                "prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": q}],
                "responses": [bad, format!("{n} likes tea."), good],
                "ranking": [2, 1, 0],
            }),
        };
        lines.push_str(&format!("{rec}\n"));
    }
    let p = root.join("prefs.jsonl");
    std::fs::write(&p, lines).unwrap();
    p
}

fn write_config(s: &Setup, name: &str, extra: &str) -> PathBuf {
    let p = s.root.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            r#"init = "base/checkpoint"
out = "{name}"
{extra}
[data]
train = ["prefs.jsonl"]
seq_len = 48
val_fraction = 0.2
[train]
steps = 6
batch_size = 2
lr = 1e-3
warmup_steps = 0
min_lr = 1e-3
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

fn same_file(a: &Path, b: &Path) {
    assert_eq!(
        std::fs::read(a).unwrap(),
        std::fs::read(b).unwrap(),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

#[test]
fn reward_model_and_dpo_train_on_every_format_and_resume_exactly() {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    run_ok(&mut pretrain(&s, &cfg, "base"));
    write_prefs(&s.root);

    let rm = write_config(&s, "rm", "");
    straight_and_resumed(&s, "rm", &rm, &[]);
    let ck = s.root.join("straight/checkpoint");
    same_file(
        &ck.join("model.safetensors"),
        &s.root.join("split/checkpoint/model.safetensors"),
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ck.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "LlamaForSequenceClassification");
    assert!(cfg["cria_reward_offset"].as_f64().is_some());
    assert!(
        cfg["pad_token_id"].as_u64().is_some(),
        "transformers needs it to find the last token"
    );
    let metrics = std::fs::read_to_string(s.root.join("straight/metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    for k in ["accuracy", "val_accuracy", "val_loss"] {
        assert!(last[k].as_f64().is_some(), "{k} logged: {last}");
    }

    for (name, extra) in [
        ("dpo", "beta = 0.2"),
        ("dpo-lora", "method = \"lora\"\n[lora]\nr = 4\nalpha = 8"),
    ] {
        let _ = std::fs::remove_dir_all(s.root.join("straight"));
        let _ = std::fs::remove_dir_all(s.root.join("split"));
        let c = write_config(&s, name, extra);
        straight_and_resumed(&s, "dpo", &c, &[]);
        let file = if name == "dpo" {
            "model.safetensors"
        } else {
            "adapter_model.safetensors"
        };
        same_file(
            &s.root.join("straight/checkpoint").join(file),
            &s.root.join(format!("split/checkpoint/{file}")),
        );
        let metrics = std::fs::read_to_string(s.root.join("straight/metrics.jsonl")).unwrap();
        let first: serde_json::Value =
            serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
        for k in [
            "reward_chosen",
            "reward_rejected",
            "reward_margin",
            "reward_accuracy",
        ] {
            assert!(first[k].as_f64().is_some(), "{k} logged: {first}");
        }
    }
}

#[test]
fn bad_preference_records_name_file_line_and_field() {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    run_ok(&mut pretrain(&s, &cfg, "base"));
    let ok = r#"{"prompt": "hi", "chosen": "hello", "rejected": "go away"}"#;
    let cases = [
        (
            r#"{"prompt": "hi", "responses": ["a", "b", "c"], "ranking": [0, 1, 1]}"#,
            "field `ranking[2]`: index 1 is repeated",
        ),
        (
            r#"{"prompt": "hi", "responses": ["a", "b", "c"], "ranking": [2, 0]}"#,
            "field `ranking`: response 1 is missing from the ranking",
        ),
        (
            r#"{"prompt": "hi", "responses": ["a", "b"], "ranking": [0, 5]}"#,
            "field `ranking[1]`: expected an index below 2",
        ),
        (
            r#"{"prompt": "hi", "chosen": "same", "rejected": "same"}"#,
            "field `rejected`: identical to chosen",
        ),
        (
            r#"{"chosen": "plain text", "rejected": "other text"}"#,
            "field `chosen`: without a `prompt`",
        ),
        (
            r#"{"prompt": "", "chosen": "a", "rejected": "b"}"#,
            "field `prompt`: the prompt is empty",
        ),
        (
            r#"{"prompt": "hi", "chosen": "", "rejected": "b"}"#,
            "field `chosen`: empty response",
        ),
        (
            r#"{"prompt": "hi", "chosen": "a"}"#,
            "field `rejected`: missing",
        ),
        (
            r#"{"prompt": "hi", "responses": ["a"], "ranking": [0]}"#,
            "at least two responses",
        ),
        (r#"{"text": "plain"}"#, "not a preference record"),
    ];
    for (bad, want) in cases {
        std::fs::write(s.root.join("prefs.jsonl"), format!("{ok}\n{bad}\n")).unwrap();
        for (cmd, c) in [
            ("rm", write_config(&s, "rm", "")),
            ("dpo", write_config(&s, "dpo", "")),
        ] {
            let err = run_err(cria().arg(cmd).arg("--config").arg(&c));
            assert!(
                err.contains("prefs.jsonl:2:") && err.contains(want),
                "{cmd}: want {want:?} in: {err}"
            );
            assert!(!s.root.join(cmd).join("checkpoint").exists());
        }
    }
    // An empty file is refused too, naming it.
    std::fs::write(s.root.join("prefs.jsonl"), "").unwrap();
    let err = run_err(
        cria()
            .arg("rm")
            .arg("--config")
            .arg(write_config(&s, "rm", "")),
    );
    assert!(
        err.contains("prefs.jsonl") && err.contains("no records"),
        "{err}"
    );
}
