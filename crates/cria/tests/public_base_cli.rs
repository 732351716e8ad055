//! A base as the ecosystem ships it — made by transformers, a TinyLlama-style tokenizer with
//! only `<s>`/`</s>`, no chat template, no chat tokens — taken through `cria sft` and
//! `cria chat` by the one format rule (cria_train::format).

mod common;

use common::*;
use cria_core::generate::{GenerateOptions, generate};
use cria_data::chat::{ChatFormat, Message, Role};
use std::path::{Path, PathBuf};

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cria-core/tests/fixtures/base_no_chat_tokens")
}

const QA: [(&str, &str); 3] = [
    ("Where is the market?", "By the quay."),
    ("Who keeps the lighthouse?", "Maren does."),
    ("When do the boats go out?", "At dawn."),
];

/// An SFT config on the fixture base; `extra` is appended to `[data]`/`[train]` via `--set`.
fn sft_config(root: &Path) -> PathBuf {
    let lines: String = (0..48)
        .map(|i| {
            let (q, a) = QA[i % QA.len()];
            format!(
                "{}\n",
                serde_json::json!({"messages": [
                    {"role": "user", "content": q}, {"role": "assistant", "content": a}]})
            )
        })
        .collect();
    std::fs::write(root.join("qa.jsonl"), lines).unwrap();
    let p = root.join("sft.toml");
    std::fs::write(
        &p,
        format!(
            r#"init = {:?}
out = "sft"
[data]
train = ["qa.jsonl"]
seq_len = 64
[train]
steps = 120
batch_size = 8
lr = 1e-2
min_lr = 1e-3
warmup_steps = 5
log_every = 20
eval_every = 0
save_every = 120
"#,
            base().display().to_string()
        ),
    )
    .unwrap();
    p
}

fn chat(ckpt: &Path, input: &str, max_new: usize, extra: &[&str]) -> std::process::Output {
    let max_new = max_new.to_string();
    let mut args = vec!["--temperature", "0", "--max-new-tokens", &max_new];
    args.extend(extra);
    chat_output(ckpt, input, &args)
}

#[test]
fn sft_on_a_base_without_chat_tokens_adds_them_and_the_tuned_model_stops_at_end_of_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cfg = sft_config(root);
    run_ok(
        cria()
            .current_dir(root)
            .arg("sft")
            .arg("--config")
            .arg(&cfg),
    );
    let ckpt = root.join("sft/checkpoint");

    // The tokenizer and the embeddings grew by cria's five chat tokens, written where
    // transformers reads them.
    let config = read_json(&ckpt.join("config.json"));
    assert_eq!(config["vocab_size"], 524 + 5);
    let tc = read_json(&ckpt.join("tokenizer_config.json"));
    assert!(
        tc["chat_template"]
            .as_str()
            .unwrap()
            .contains("<|end_of_turn|>")
    );
    let decoder = tc["added_tokens_decoder"].as_object().unwrap();
    assert!(
        decoder
            .values()
            .any(|t| t["content"] == "<|end_of_turn|>" && t["special"] == true),
        "{decoder:?}"
    );

    // The tuned checkpoint renders conversations to exactly the ids transformers'
    // apply_chat_template gives on the base grown the same way (scripts/ref/checkpoint_fixtures.py).
    let dev = cria_core::device::inference_device();
    let model = cria_core::checkpoint::load_model(&ckpt, &dev).unwrap();
    let tok = cria_core::checkpoint::load_tokenizer(&ckpt, &model.cfg).unwrap();
    let fmt = ChatFormat::for_checkpoint(&ckpt, &tok).unwrap();
    let expected = read_json(&base().join("expected_chat.json"));
    for (t, id) in expected["added"].as_object().unwrap() {
        assert_eq!(tok.token_to_id(t), Some(id.as_u64().unwrap() as u32), "{t}");
    }
    let messages: Vec<Message> = serde_json::from_value(expected["messages"].clone()).unwrap();
    let ids = fmt.encode(&messages, &tok, true, false).unwrap().ids;
    let want: Vec<u32> = serde_json::from_value(expected["ids"].clone()).unwrap();
    assert_eq!(ids, want);
    let eot = tok.token_to_id("<|end_of_turn|>").unwrap();
    assert!(
        model.cfg.eos_token_id.contains(&eot),
        "transformers' generate stops there too"
    );

    // Greedy decoding of the tuned model ends each reply with the end-of-turn id itself.
    for (q, a) in QA {
        let prompt = fmt
            .encode(&[Message::new(Role::User, q)], &tok, true, false)
            .unwrap()
            .ids;
        let opts = GenerateOptions {
            max_new_tokens: 24,
            sampling: cria_core::sampling::SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            stop_ids: vec![],
        };
        let (out, _) = generate(&model, &prompt, &opts, |_| true).unwrap();
        let end = out.iter().position(|&t| t == eot);
        let end = end.unwrap_or_else(|| panic!("{q}: no end-of-turn in {out:?}"));
        assert_eq!(tok.decode(&out[..end], true).unwrap().trim(), a);
    }

    // And `cria chat` stops there: each reply is exactly the answer.
    let out = chat(
        &ckpt,
        "Where is the market?\n/reset\nWho keeps the lighthouse?\n",
        24,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "By the quay.\nMaren does.\n"
    );
}

#[test]
fn a_frozen_base_cannot_learn_new_tokens_and_alpaca_needs_none() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cfg = sft_config(root);
    let err = run_err(
        cria()
            .current_dir(root)
            .arg("sft")
            .arg("--config")
            .arg(&cfg)
            .args(["--set", "method=\"lora\""]),
    );
    assert!(
        err.contains("no cria chat tokens") && err.contains("data.format = \"alpaca\""),
        "{err}"
    );

    // The Alpaca prompt adds nothing, so LoRA trains; chat folds the conversation into the
    // instruction's input and answers a second question instead of exiting.
    run_ok(
        cria()
            .current_dir(root)
            .arg("sft")
            .arg("--config")
            .arg(&cfg)
            .args([
                "--set",
                "method=\"lora\"",
                "--set",
                "data.format=\"alpaca\"",
                "--set",
                "data.seq_len=200",
                "--set",
                "train.steps=10",
                "--set",
                "train.save_every=10",
            ]),
    );
    let adapter = root.join("sft/checkpoint");
    let tc = read_json(&adapter.join("tokenizer_config.json"));
    assert!(
        tc["chat_template"]
            .as_str()
            .unwrap()
            .contains("### Instruction:")
    );
    assert_eq!(tc["eos_token"], "</s>");
    let out = chat(
        &base(),
        "Where is the market?\nWho keeps the lighthouse?\nWhen do the boats go out?\n",
        4,
        &["--adapter", adapter.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each reply ends with a newline (a reply itself may hold one).
    assert!(String::from_utf8(out.stdout).unwrap().matches('\n').count() >= 3);

    // The base itself, prompted as Alpaca: no template needed, no tokens added.
    let out = chat(&base(), "Hello\nAnd again?\n", 3, &["--format", "alpaca"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8(out.stdout).unwrap().matches('\n').count() >= 2);
}

#[test]
fn a_reward_model_and_an_evaluation_take_a_base_without_chat_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let prefs: String = (0..16)
        .map(|i| {
            let (q, a) = QA[i % QA.len()];
            format!(
                "{}\n",
                serde_json::json!({"prompt": q, "chosen": a, "rejected": "I do not know."})
            )
        })
        .collect();
    std::fs::write(root.join("prefs.jsonl"), prefs).unwrap();
    std::fs::write(
        root.join("rm.toml"),
        format!(
            "init = {:?}\nout = \"rm\"\n[data]\ntrain = [\"prefs.jsonl\"]\nseq_len = 64\n\
             [train]\nsteps = 4\nbatch_size = 4\nlr = 1e-3\nwarmup_steps = 0\neval_every = 0\n\
             save_every = 4\n",
            base().display().to_string()
        ),
    )
    .unwrap();
    run_ok(cria().current_dir(root).args(["rm", "--config", "rm.toml"]));
    let rm = root.join("rm/checkpoint");
    let tc = read_json(&rm.join("tokenizer_config.json"));
    assert!(
        tc["chat_template"]
            .as_str()
            .unwrap()
            .contains("<|end_of_turn|>")
    );
    let config = read_json(&rm.join("config.json"));
    assert_eq!(config["vocab_size"], 529);

    // The base itself evaluated (its tokens grown in memory, with a warning) and scored by
    // the reward model trained on it.
    std::fs::write(
        root.join("prompts.jsonl"),
        "{\"prompt\": \"Where is the market?\"}\n",
    )
    .unwrap();
    let out = run_ok(cria().current_dir(root).args([
        "eval",
        "--model",
        base().to_str().unwrap(),
        "--reward-model",
        "rm/checkpoint",
        "--benign",
        "prompts.jsonl",
        "--max-new-tokens",
        "4",
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("reward_mean"), "{stdout}");
}
