//! Settings that cannot work are refused before anything runs: every range check names its key
//! and the value, exits non-zero and leaves no run directory behind; lengths beyond the
//! model's context and models of the wrong kind are errors, never panics; a pipeline checks
//! every stage before its first one starts.

mod common;

use common::*;
use std::path::Path;

/// A stage config whose `init` does not exist: range checks come before any loading.
fn stage_config(root: &Path, stage: &str) -> std::path::PathBuf {
    let body = match stage {
        "pretrain" => "tokenizer = \"tok\"\n[data]\ninputs = [\"corpus\"]\nseq_len = 16\n",
        "sft" => "init = \"none\"\n[data]\ntrain = [\"x.jsonl\"]\nseq_len = 16\n",
        "rm" | "dpo" => "init = \"none\"\n[data]\ntrain = [\"p.jsonl\"]\nseq_len = 16\n",
        "ppo" => {
            "init = \"none\"\nreward_model = \"rm\"\n[data]\nprompts = [\"p.jsonl\"]\n\
             [rollout]\nbatch_size = 4\n[ppo]\nminibatch_size = 2\n"
        }
        _ => unreachable!(),
    };
    let p = root.join(format!("{stage}.toml"));
    std::fs::write(&p, format!("out = \"run-{stage}\"\n{body}")).unwrap();
    p
}

#[test]
fn every_out_of_range_setting_is_refused_naming_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cases: &[(&str, &str, &str)] = &[
        (
            "pretrain",
            "train.lr=-1",
            "train.lr: must be a positive number, got -1",
        ),
        (
            "pretrain",
            "train.lr=0",
            "train.lr: must be a positive number, got 0",
        ),
        (
            "pretrain",
            "train.min_lr=0.1",
            "train.min_lr: 0.1 is above train.lr = 0.0003",
        ),
        (
            "pretrain",
            "train.beta1=-0.1",
            "train.beta1: must be at least 0 and below 1",
        ),
        (
            "pretrain",
            "train.beta2=1.5",
            "train.beta2: must be at least 0 and below 1, got 1.5",
        ),
        (
            "pretrain",
            "train.grad_clip=0",
            "train.grad_clip: must be positive, or false",
        ),
        (
            "pretrain",
            "train.grad_clip=-1",
            "train.grad_clip: must be positive, or false",
        ),
        (
            "pretrain",
            "train.steps=0",
            "train.steps: must be at least 1, got 0",
        ),
        (
            "pretrain",
            "train.batch_size=0",
            "train.batch_size: must be at least 1",
        ),
        (
            "pretrain",
            "train.grad_accum=0",
            "train.grad_accum: must be at least 1",
        ),
        (
            "pretrain",
            "train.eps=0",
            "train.eps: must be a positive number",
        ),
        (
            "pretrain",
            "train.weight_decay=-0.1",
            "train.weight_decay: must be a number at least 0",
        ),
        (
            "pretrain",
            "train.log_every=0",
            "train.log_every: must be at least 1",
        ),
        (
            "pretrain",
            "data.seq_len=0",
            "data.seq_len: must be at least 1, got 0",
        ),
        (
            "pretrain",
            "data.val_fraction=1",
            "data.val_fraction: must be at least 0 and below 1",
        ),
        (
            "pretrain",
            "model.rope_theta=-1",
            "model.rope_theta: must be a positive number",
        ),
        (
            "pretrain",
            "model.rms_norm_eps=0",
            "model.rms_norm_eps: must be a positive number",
        ),
        (
            "pretrain",
            "model.num_hidden_layers=0",
            "model.num_hidden_layers: must be at least 1",
        ),
        (
            "pretrain",
            "model.num_attention_heads=0",
            "model.num_attention_heads: must be at least 1",
        ),
        (
            "sft",
            "train.lr=-0.001",
            "train.lr: must be a positive number, got -0.001",
        ),
        (
            "sft",
            "data.seq_len=0",
            "data.seq_len: must be at least 1, got 0",
        ),
        (
            "sft",
            "data.val_fraction=-0.1",
            "data.val_fraction: must be at least 0 and below 1",
        ),
        (
            "sft",
            "method=\"lora\"\nlora.r=0",
            "lora: r must be at least 1",
        ),
        (
            "sft",
            "method=\"lora\"\nlora.alpha=0",
            "lora: alpha must be positive",
        ),
        (
            "sft",
            "method=\"lora\"\nlora.dropout=1",
            "lora: dropout 1 must be at least 0 and below 1",
        ),
        (
            "sft",
            "method=\"llama-adapter\"\nadapter.len=0",
            "adapter.len: must be at least 1",
        ),
        (
            "rm",
            "data.seq_len=0",
            "data.seq_len: must be at least 1, got 0",
        ),
        (
            "rm",
            "data.val_fraction=2",
            "data.val_fraction: must be at least 0 and below 1, got 2",
        ),
        (
            "rm",
            "train.beta1=1",
            "train.beta1: must be at least 0 and below 1, got 1",
        ),
        ("dpo", "beta=0", "beta: must be a positive number, got 0"),
        (
            "dpo",
            "sft_weight=-1",
            "sft_weight: must be a number at least 0, got -1",
        ),
        (
            "dpo",
            "method=\"llama-adapter\"",
            "method: DPO trains `full` or `lora`",
        ),
        ("dpo", "train.steps=0", "train.steps: must be at least 1"),
        (
            "ppo",
            "rollout.top_p=0",
            "rollout.top_p: must be within (0, 1], got 0",
        ),
        (
            "ppo",
            "rollout.top_p=1.5",
            "rollout.top_p: must be within (0, 1], got 1.5",
        ),
        (
            "ppo",
            "rollout.top_k=0",
            "rollout.top_k: must be at least 1, got 0",
        ),
        (
            "ppo",
            "ppo.minibatch_size=3",
            "ppo.minibatch_size: 3 does not divide the iteration's 4 replies",
        ),
        (
            "ppo",
            "ppo.algorithm=\"grpo\"\nppo.minibatch_size=3",
            // 4 prompts x 4 replies (GRPO's default group) do not split into minibatches of 3.
            "ppo.minibatch_size: 3 does not divide the iteration's 16 replies",
        ),
        (
            "ppo",
            "ppo.algorithm=\"rloo\"\nrollout.samples_per_prompt=1",
            "rollout.samples_per_prompt: rloo needs at least 2 replies per prompt",
        ),
        (
            "ppo",
            "ppo.algorithm=\"reinforce\"",
            "unknown variant `reinforce`, expected one of `ppo`, `rloo`, `grpo`",
        ),
        (
            "ppo",
            "ppo.ptx_coef=-1",
            "ppo.ptx_coef: must be a number at least 0, got -1",
        ),
        (
            "ppo",
            "ppo.value_lr=0",
            "ppo.value_lr: must be a positive number, got 0",
        ),
        (
            "ppo",
            "data.prompt_len=0",
            "data.prompt_len: must be at least 1, got 0",
        ),
        (
            "ppo",
            "train.lr=-1",
            "train.lr: must be a positive number, got -1",
        ),
        (
            "ppo",
            "method=\"llama-adapter\"",
            "method: PPO trains `full` or `lora`",
        ),
    ];
    for (stage, set, want) in cases {
        let cfg = stage_config(root, stage);
        let mut cmd = cria();
        cmd.arg(stage).arg("--config").arg(&cfg).current_dir(root);
        for s in set.split('\n') {
            cmd.args(["--set", s]);
        }
        let err = run_err(&mut cmd);
        assert!(err.contains(want), "{stage} --set {set}: {err}");
        assert!(
            !root.join(format!("run-{stage}")).exists(),
            "{stage} --set {set} wrote its run directory"
        );
    }
}

#[test]
fn bad_sampling_and_evaluation_flags_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // The flags are checked before the model is loaded, so no model is needed.
    for (args, want) in [
        (
            vec!["--temperature=-1"],
            "--temperature -1 must be a finite number >= 0",
        ),
        (
            vec!["--temperature", "NaN"],
            "--temperature NaN must be a finite number >= 0",
        ),
        (vec!["--top-p", "0"], "--top-p 0 must be in (0, 1]"),
        (vec!["--top-k", "0"], "--top-k must be at least 1"),
        (
            vec!["--max-new-tokens", "0"],
            "--max-new-tokens must be at least 1",
        ),
        (vec!["--stop", ""], "--stop: an empty stop string"),
    ] {
        let err = run_err(
            cria()
                .args(["generate", "--model", "none", "--prompt", "hi"])
                .args(&args)
                .current_dir(tmp.path()),
        );
        assert!(err.contains(want), "generate {args:?}: {err}");
    }
    let err = run_err(
        cria()
            .args(["chat", "--model", "none", "--top-p", "2"])
            .current_dir(tmp.path()),
    );
    assert!(err.contains("--top-p 2 must be in (0, 1]"), "{err}");
    for (flag, want) in [
        ("--max-new-tokens", "--max-new-tokens must be at least 1"),
        ("--seq-len", "--seq-len must be at least 1"),
        ("--kl-samples", "--kl-samples must be at least 1"),
    ] {
        let err = run_err(
            cria()
                .args(["eval", "--model", "none", flag, "0"])
                .current_dir(tmp.path()),
        );
        assert!(err.contains(want), "eval {flag} 0: {err}");
    }
}

#[test]
fn lengths_beyond_the_context_and_models_of_the_wrong_kind_are_refused() {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    run_ok(&mut pretrain(&s, &cfg, "base"));
    std::fs::write(
        s.root.join("p.jsonl"),
        "{\"prompt\": \"Who has tea?\", \"chosen\": \"Ana.\", \"rejected\": \"No.\"}\n\
         {\"prompt\": \"Who has rope?\", \"chosen\": \"Bo.\", \"rejected\": \"No.\"}\n",
    )
    .unwrap();
    std::fs::write(
        s.root.join("x.jsonl"),
        "{\"instruction\": \"Who has tea?\", \"output\": \"Ana.\"}\n",
    )
    .unwrap();
    let stage = |name: &str, sets: &[&str]| {
        let cfg = stage_config(&s.root, name);
        let mut cmd = cria();
        cmd.arg(name)
            .arg("--config")
            .arg(&cfg)
            .args(["--init", "base/checkpoint"])
            .current_dir(&s.root);
        for x in sets {
            cmd.args(["--set", x]);
        }
        cmd
    };
    // The tiny model's context is 128 positions.
    let want = "data.seq_len: 129 tokens exceed the model's context of 128";
    for name in ["pretrain", "sft", "rm", "dpo"] {
        let mut cmd = stage(name, &["data.seq_len=129"]);
        if name == "pretrain" {
            cmd = cria();
            cmd.arg("pretrain")
                .arg("--config")
                .arg(stage_config(&s.root, "pretrain"))
                .args([
                    "--set",
                    "init=\"base/checkpoint\"",
                    "--set",
                    "data.seq_len=129",
                ])
                .current_dir(&s.root);
        }
        let err = run_err(&mut cmd);
        assert!(err.contains(want), "{name}: {err}");
    }
    run_ok(
        stage(
            "rm",
            &[
                "train.steps=1",
                "train.batch_size=1",
                "data.val_fraction=0",
                "data.seq_len=64",
            ],
        )
        .args(["--out", "rm-model"]),
    );
    let err = run_err(&mut stage(
        "ppo",
        &[
            "reward_model=\"rm-model/checkpoint\"",
            "data.prompt_len=100",
            "rollout.max_new_tokens=29",
        ],
    ));
    assert!(
        err.contains("data.prompt_len: 100 + rollout.max_new_tokens 29 = 129 tokens exceed the policy's context of 128"),
        "{err}"
    );
    let err = run_err(&mut stage(
        "ppo",
        &["reward_model=\"base/checkpoint\"", "data.prompt_len=40"],
    ));
    assert!(
        err.contains("is a language model, not a reward model"),
        "{err}"
    );
    // A reward model where a language model is needed, and the other way round.
    let rm = s.root.join("rm-model/checkpoint");
    for cmd in [
        cria()
            .args(["generate", "--prompt", "hi", "--model"])
            .arg(&rm),
        cria().args(["chat", "--model"]).arg(&rm),
    ] {
        let err = run_err(cmd);
        assert!(err.contains("this is a reward model"), "{err}");
    }
    let err = run_err(
        cria()
            .args(["eval", "--corpus", "corpus", "--model"])
            .arg(&rm)
            .current_dir(&s.root),
    );
    assert!(
        err.contains("--model: ") && err.contains("is a reward model"),
        "{err}"
    );
    let err = run_err(
        cria()
            .args(["eval", "--model", "base/checkpoint", "--benign", "p.jsonl"])
            .args(["--reward-model", "base/checkpoint"])
            .current_dir(&s.root),
    );
    assert!(
        err.contains("is a language model, not a reward model"),
        "{err}"
    );
    let err = run_err(
        cria()
            .arg("sft")
            .arg("--config")
            .arg(stage_config(&s.root, "sft"))
            .arg("--init")
            .arg(&rm)
            .current_dir(&s.root),
    );
    assert!(
        err.contains("init: ") && err.contains("is a reward model"),
        "{err}"
    );
}

#[test]
fn a_pipeline_checks_every_stage_before_the_first_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let file = root.join("p.toml");
    let base = "out = \"run\"\n[world]\nsize = \"tiny\"\n[pretrain.model]\nhidden_size = 32\n\
                intermediate_size = 64\nnum_hidden_layers = 1\nnum_attention_heads = 2\n\
                num_key_value_heads = 2\nmax_position_embeddings = 64\n[pretrain.data]\n\
                seq_len = 32\n[sft.data]\nseq_len = 32\n[rm.data]\nseq_len = 32\n\
                [ppo.data]\nprompt_len = 24\n[ppo.rollout]\nbatch_size = 4\nmax_new_tokens = 8\n\
                [ppo.ppo]\nminibatch_size = 2\n";
    std::fs::write(&file, base).unwrap();
    let out = run_ok(cria().args(["pipeline", "plan"]).arg(&file));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ppo"));
    for (set, want) in [
        (
            "ppo.rollout.top_p=0",
            "ppo.rollout.top_p: must be within (0, 1], got 0",
        ),
        (
            "sft.data.seq_len=65",
            "sft.data.seq_len: 65 tokens exceed the model's context of 64",
        ),
        (
            "ppo.rollout.max_new_tokens=41",
            "ppo.data.prompt_len: 24 + rollout.max_new_tokens 41",
        ),
        (
            "eval.max_new_tokens=0",
            "eval.max_new_tokens: must be at least 1",
        ),
        (
            "world.disagreement=1.5",
            "world.disagreement: must be within [0, 1]",
        ),
        ("rm.data.train=[\"missing.jsonl\"]", "rm.data.train: "),
    ] {
        for verb in ["plan", "run"] {
            let err = run_err(
                cria()
                    .args(["pipeline", verb])
                    .arg(&file)
                    .args(["--set", set]),
            );
            assert!(err.contains(want), "{verb} --set {set}: {err}");
            assert!(
                !root.join("run/world").exists(),
                "{verb} --set {set} started"
            );
        }
    }
    let err = run_err(
        cria()
            .args(["pipeline", "run"])
            .arg(&file)
            .args(["--set", "rm.data.train=[\"missing.jsonl\"]"]),
    );
    assert!(err.contains("missing.jsonl does not exist"), "{err}");
}

#[test]
fn print_config_shows_every_setting_with_a_comment_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for stage in ["pretrain", "sft", "rm", "dpo", "ppo"] {
        let cfg = stage_config(root, stage);
        let out = run_ok(cria().arg(stage).arg("--config").arg(&cfg).args([
            "--set",
            "train.lr=2e-4",
            "--print-config",
        ]));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("# peak learning rate (> 0)\nlr = 0.0002\n"),
            "{stage}: {text}"
        );
        assert!(
            text.contains(&format!("run-{stage}")),
            "{stage}: the file's settings"
        );
        assert!(
            !root.join(format!("run-{stage}")).exists(),
            "{stage}: nothing ran"
        );
        // Every key line has its comment just above it.
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.contains(" = ") && !l.starts_with('#') {
                assert!(
                    lines[i - 1].starts_with("# "),
                    "{stage}: {l} has no comment"
                );
            }
        }
        // What it prints is a config that prints the same again.
        let printed = root.join(format!("printed-{stage}.toml"));
        std::fs::write(&printed, &text).unwrap();
        let again = run_ok(
            cria()
                .arg(stage)
                .arg("--config")
                .arg(&printed)
                .arg("--print-config"),
        );
        assert_eq!(String::from_utf8(again.stdout).unwrap(), text, "{stage}");
    }
    let sft = String::from_utf8(
        run_ok(cria().args(["sft", "--print-config", "--set", "method=\"lora\""])).stdout,
    )
    .unwrap();
    assert!(
        sft.contains("method = \"lora\"") && sft.contains("[lora]\n# LoRA rank"),
        "{sft}"
    );
    let help = String::from_utf8(run_ok(cria().args(["sft", "--help"])).stdout).unwrap();
    for word in [
        "\"full\"",
        "\"lora\"",
        "\"llama-adapter\"",
        "--print-config",
    ] {
        assert!(help.contains(word), "sft --help names {word}: {help}");
    }
}

#[test]
fn devices_cria_cannot_use_are_named_before_any_work() {
    let s = Setup::new();
    let err = run_err(
        cria()
            .args(["tokenizer", "train", "--vocab-size", "300", "--input"])
            .arg(s.root.join("corpus"))
            .arg("--out")
            .arg(s.root.join("tok2"))
            .env("CRIA_DEVICE", "tpu"),
    );
    assert!(
        err.contains("CRIA_DEVICE=\"tpu\"") && err.contains("cpu"),
        "{err}"
    );
    if !cfg!(feature = "vulkan") {
        let err = run_err(
            cria()
                .args(["tokenizer", "train", "--vocab-size", "300", "--input"])
                .arg(s.root.join("corpus"))
                .arg("--out")
                .arg(s.root.join("tok2"))
                .env("CRIA_DEVICE", "vulkan"),
        );
        assert!(err.contains("--features vulkan"), "{err}");
    }
    assert!(!s.root.join("tok2").exists(), "nothing written");
}
