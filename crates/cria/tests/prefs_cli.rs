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
    // Prompts that fill data.seq_len leave nothing to compare.
    std::fs::write(s.root.join("prefs.jsonl"), format!("{ok}\n")).unwrap();
    for cmd in ["rm", "dpo"] {
        let c = write_config(&s, cmd, "");
        let err = run_err(
            cria()
                .arg(cmd)
                .arg("--config")
                .arg(&c)
                .args(["--set", "data.seq_len=3"]),
        );
        assert!(
            err.contains("no preference has a response within data.seq_len = 3"),
            "{cmd}: {err}"
        );
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

#[test]
fn skip_invalid_trains_on_the_good_records_and_writes_the_rejects() {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    run_ok(&mut pretrain(&s, &cfg, "base"));
    let good = std::fs::read_to_string(write_prefs(&s.root)).unwrap();
    let bad = "{\"prompt\": \"hi\", \"chosen\": \"\", \"rejected\": \"b\"}\nnot json\n";
    std::fs::write(s.root.join("prefs.jsonl"), format!("{good}{bad}")).unwrap();
    let c = write_config(&s, "rm", "");
    let err = run_err(
        cria()
            .arg("rm")
            .arg("--config")
            .arg(&c)
            .current_dir(&s.root),
    );
    assert!(
        err.contains("prefs.jsonl:25:") && err.contains("--skip-invalid"),
        "{err}"
    );
    let out = run_ok(
        cria()
            .args(["rm", "--skip-invalid", "--steps", "1", "--config"])
            .arg(&c)
            .current_dir(&s.root),
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("skipped=2"), "{log}");
    let rejects = std::fs::read_to_string(s.root.join("rm/rejects.jsonl")).unwrap();
    assert_eq!(rejects.lines().count(), 2, "{rejects}");
    assert!(rejects.contains("empty response") && rejects.contains("invalid JSON"));
    assert!(s.root.join("rm/checkpoint").exists());
}

#[test]
fn keep_end_truncation_keeps_the_answers_of_long_prompts() {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    run_ok(&mut pretrain(&s, &cfg, "base"));
    let long = "Ana gave Bo some tea on day 3. ".repeat(20);
    let lines: String = (0..8)
        .map(|i| {
            format!(
                "{}\n",
                json!({"prompt": format!("{long} Who has tea {i}?"), "chosen": "Bo has it.", "rejected": "No."})
            )
        })
        .collect();
    std::fs::write(s.root.join("prefs.jsonl"), lines).unwrap();
    for cmd in ["rm", "dpo"] {
        let c = write_config(&s, cmd, "");
        // Keeping each row's first 48 tokens leaves no answer to compare.
        let err = run_err(cria().arg(cmd).arg("--config").arg(&c).current_dir(&s.root));
        assert!(err.contains("no preference has a response"), "{cmd}: {err}");
        let out = run_ok(
            cria()
                .arg(cmd)
                .arg("--config")
                .arg(&c)
                .args(["--steps", "1", "--set", "data.truncation=\"keep_end\""])
                .env("RUST_LOG", "info")
                .current_dir(&s.root),
        );
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("prompt_cut=8"), "{cmd}: {log}");
    }
}

/// A pretrained tiny base, the preference file, and a reward model trained from the base for
/// `steps` steps (in `rm/`).
fn with_reward_model(steps: u64) -> Setup {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    run_ok(&mut pretrain(&s, &cfg, "base"));
    write_prefs(&s.root);
    run_ok(
        cria()
            .arg("rm")
            .arg("--config")
            .arg(write_config(&s, "rm", ""))
            .args(["--steps", &steps.to_string()])
            .current_dir(&s.root),
    );
    s
}

fn write_ppo_config(s: &Setup, extra: &str) -> PathBuf {
    let p = s.root.join("ppo.toml");
    std::fs::write(
        &p,
        format!(
            r#"init = "base/checkpoint"
reward_model = "rm/checkpoint"
out = "ppo"
{extra}
[data]
prompts = ["prefs.jsonl"]
prompt_len = 40
ptx = ["corpus"]
ptx_seq_len = 16
ptx_batch_size = 2
[rollout]
batch_size = 4
max_new_tokens = 6
[ppo]
epochs = 2
minibatch_size = 2
[train]
steps = 6
lr = 1e-3
min_lr = 1e-3
warmup_steps = 0
log_every = 1
save_every = 3
"#
        ),
    )
    .unwrap();
    p
}

#[test]
fn ppo_trains_logs_and_resumes_exactly() {
    let s = with_reward_model(2);
    for (extra, files) in [
        ("", vec!["model.safetensors", "value.safetensors"]),
        (
            "method = \"lora\"\n[lora]\nr = 4\nalpha = 8\n[ppo]\nptx_coef = 0.5\ntarget_kl = 1.0",
            vec!["adapter_model.safetensors", "value.safetensors"],
        ),
    ] {
        // `[ppo]` appears twice in the LoRA case; TOML forbids that, so merge it.
        let c = write_ppo_config(&s, "");
        let text = std::fs::read_to_string(&c).unwrap();
        let text = match extra.split_once("[ppo]\n") {
            Some((head, ppo)) => text
                .replacen("out = \"ppo\"\n", &format!("out = \"ppo\"\n{head}"), 1)
                .replacen("[ppo]\n", &format!("[ppo]\n{ppo}\n"), 1),
            None => text,
        };
        // The LoRA case takes one update per rollout (one epoch, one minibatch of all four
        // replies): the value model's pass for the old values is also the update's.
        let text = match extra.is_empty() {
            true => text,
            false => text.replacen(
                "epochs = 2\nminibatch_size = 2",
                "epochs = 1\nminibatch_size = 4",
                1,
            ),
        };
        std::fs::write(&c, text).unwrap();
        let _ = std::fs::remove_dir_all(s.root.join("straight"));
        let _ = std::fs::remove_dir_all(s.root.join("split"));
        straight_and_resumed(&s, "ppo", &c, &[]);
        for f in &files {
            same_file(
                &s.root.join("straight/checkpoint").join(f),
                &s.root.join("split/checkpoint").join(f),
            );
        }
        let metrics = std::fs::read_to_string(s.root.join("straight/metrics.jsonl")).unwrap();
        assert_eq!(metrics.lines().count(), 6);
        let first: serde_json::Value =
            serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
        for k in [
            "reward",
            "kl",
            "entropy",
            "clip_frac",
            "value_loss",
            "reply_len",
            "beta",
            "peak_rss_mib",
        ] {
            assert!(first[k].as_f64().is_some(), "{k} logged: {first}");
        }
        // The policy equals its reference before the first update.
        assert!(first["kl"].as_f64().unwrap().abs() < 1e-4, "{first}");
        if extra.contains("ptx_coef") {
            assert!(first["ptx_loss"].as_f64().is_some());
        }
    }
}

#[test]
fn rloo_and_grpo_train_without_a_value_model_and_resume_exactly() {
    let s = with_reward_model(2);
    for (algorithm, k) in [("rloo", 2u64), ("grpo", 3)] {
        let c = write_ppo_config(&s, "");
        let text = std::fs::read_to_string(&c).unwrap();
        let text = text
            .replacen(
                "[rollout]\n",
                &format!("[rollout]\nsamples_per_prompt = {k}\n"),
                1,
            )
            .replacen(
                "[ppo]\n",
                &format!("[ppo]\nalgorithm = \"{algorithm}\"\nkl_coef = 0.1\n"),
                1,
            )
            // The iteration's replies (4 prompts x k) in minibatches of k.
            .replacen("minibatch_size = 2", &format!("minibatch_size = {k}"), 1);
        std::fs::write(&c, text).unwrap();
        let _ = std::fs::remove_dir_all(s.root.join("straight"));
        let _ = std::fs::remove_dir_all(s.root.join("split"));
        straight_and_resumed(&s, "ppo", &c, &[]);
        same_file(
            &s.root.join("straight/checkpoint/model.safetensors"),
            &s.root.join("split/checkpoint/model.safetensors"),
        );
        let ckpt = s.root.join("straight/checkpoint");
        assert!(
            !ckpt.join("value.safetensors").exists(),
            "{algorithm} trains no value model"
        );
        let metrics = std::fs::read_to_string(s.root.join("straight/metrics.jsonl")).unwrap();
        let rows: Vec<serde_json::Value> = metrics
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 6);
        for k in [
            "reward",
            "kl",
            "entropy",
            "clip_frac",
            "flat_groups",
            "reply_len",
        ] {
            assert!(rows[0][k].as_f64().is_some(), "{k} logged: {}", rows[0]);
        }
        assert!(rows[0].get("value_loss").is_none(), "{}", rows[0]);
        assert_eq!(rows[0]["kl_k3"].is_null(), algorithm == "rloo");
        // The policy equals its reference before the first update, and moves after it.
        assert!(rows[0]["kl"].as_f64().unwrap().abs() < 1e-4, "{}", rows[0]);
        assert!(rows[5]["kl"].as_f64().unwrap().abs() > 1e-3, "{}", rows[5]);
        let replies = rows[5]["tokens_seen"].as_u64().unwrap();
        assert_eq!(
            replies,
            6 * 4 * k,
            "{k} replies to each of 4 prompts, 6 iterations"
        );
    }
}

#[test]
fn ppo_refuses_bad_setups() {
    let s = with_reward_model(1);
    let c = write_ppo_config(&s, "");
    let ppo = |sets: &[&str]| {
        run_err(
            cria()
                .arg("ppo")
                .arg("--config")
                .arg(&c)
                .args(sets)
                .current_dir(&s.root),
        )
    };
    // A language model is not a reward model, nor the reverse.
    let err = ppo(&["--set", "reward_model=\"base/checkpoint\""]);
    assert!(err.contains("not a reward model"), "{err}");
    let err = ppo(&["--set", "init=\"rm/checkpoint\""]);
    assert!(
        err.contains("init:") && err.contains("is a reward model"),
        "{err}"
    );
    // Settings that cannot work.
    for (set, want) in [
        (
            "rollout.temperature=0",
            "rollout.temperature must be positive",
        ),
        (
            "rollout.max_new_tokens=0",
            "max_new_tokens must be at least 1",
        ),
        (
            "ppo.target_kl=0",
            "target_kl and ppo.kl_horizon must be positive",
        ),
        ("ppo.clip_range=-0.2", "clip_range must be positive"),
    ] {
        let err = ppo(&["--set", set]);
        assert!(err.contains(want), "{set}: {err}");
    }
    // A reward model with another tokenizer.
    let other = s.root.join("rm-other");
    std::fs::create_dir_all(&other).unwrap();
    for f in std::fs::read_dir(s.root.join("rm/checkpoint")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, other.join(f.file_name().unwrap())).unwrap();
    }
    let tj = other.join("tokenizer.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&tj).unwrap()).unwrap();
    let vocab = v["model"]["vocab"].as_object_mut().unwrap();
    let n = vocab.len();
    vocab.insert("an-extra-token".into(), json!(n));
    std::fs::write(&tj, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = ppo(&["--set", "reward_model=\"rm-other\""]);
    assert!(err.contains("different tokenizer"), "{err}");
    // An empty prompt set.
    std::fs::write(s.root.join("none.jsonl"), "").unwrap();
    let err = ppo(&["--set", "data.prompts=[\"none.jsonl\"]"]);
    assert!(err.contains("prompt set is empty"), "{err}");
    // A prompt record without a prompt names its line.
    std::fs::write(
        s.root.join("bad.jsonl"),
        "{\"prompt\": \"hi\"}\n{\"query\": \"x\"}\n",
    )
    .unwrap();
    let err = ppo(&["--set", "data.prompts=[\"bad.jsonl\"]"]);
    assert!(
        err.contains("bad.jsonl:2:") && err.contains("`prompt`"),
        "{err}"
    );
    assert!(!s.root.join("ppo/checkpoint").exists());
}

#[test]
fn ppo_resumes_after_sigkill_bit_identically() {
    use std::time::{Duration, Instant};
    let s = with_reward_model(2);
    let c = write_ppo_config(&s, "");
    let ppo = |out: &str| {
        let mut cmd = cria();
        cmd.arg("ppo")
            .arg("--config")
            .arg(&c)
            .args(["--out", out, "--steps", "60", "--set", "train.save_every=2"])
            .current_dir(&s.root);
        cmd
    };
    run_ok(&mut ppo("straight"));
    let iteration = |d: &Path| -> Option<u64> {
        let t = std::fs::read_to_string(d.join("checkpoint/ppo_state.json")).ok()?;
        serde_json::from_str::<serde_json::Value>(&t).ok()?["iteration"].as_u64()
    };
    let killed = s.root.join("killed");
    let mut child = ppo("killed")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while iteration(&killed).unwrap_or(0) < 6 {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(iteration(&killed).unwrap() < 60, "killed mid-run");
    run_ok(&mut ppo("killed"));
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "value.safetensors",
        "value_optimizer.safetensors",
        "ppo_state.json",
    ] {
        same_file(
            &s.root.join("straight/checkpoint").join(f),
            &killed.join("checkpoint").join(f),
        );
    }
    let lines = std::fs::read_to_string(killed.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 60, "metrics are not duplicated");
}
