//! `cria` as ranks of a launcher's run. In every build: torchrun-style variables are refused
//! (NCCL needs a GPU build), and a build without MPI refuses to be one of several MPI ranks.
//! Built with `--features mpi` (`.ci/run` runs it so, with Open MPI from Debian): two ranks
//! under `mpirun` train as one process does (SFT, reward model, LoRA DPO, PPO), only rank 0
//! writes, a killed run resumes exactly, a setting that cannot split is one clear error, and
//! other commands are refused.

mod common;

use common::*;
use std::path::Path;

/// SFT data: short chat records about who likes what.
fn write_chat(root: &Path) {
    let names = ["Ana", "Bo", "Cy", "Di", "Ed"];
    let things = ["tea", "rope", "maps", "bread"];
    let lines: String = (0..64)
        .map(|i| {
            let (n, t) = (names[i % 5], things[(i / 5) % 4]);
            let rec = serde_json::json!({"messages": [
                {"role": "user", "content": format!("What does {n} like?")},
                {"role": "assistant", "content": format!("{n} likes {t}.")}]});
            format!("{rec}\n")
        })
        .collect();
    std::fs::write(root.join("chat.jsonl"), lines).unwrap();
}

/// A base model and an SFT config of `steps` steps of two micro-batches (`grad_accum = 2`),
/// saving every `save_every`, with validation every 5 steps.
fn sft_setup(steps: u64, save_every: u64) -> (Setup, std::path::PathBuf) {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    run_ok(&mut pretrain(&s, &cfg, "base"));
    write_chat(&s.root);
    let p = s.root.join("sft.toml");
    std::fs::write(
        &p,
        format!(
            r#"init = "base/checkpoint"
[data]
train = ["chat.jsonl"]
seq_len = 32
val_fraction = 0.1
[train]
steps = {steps}
batch_size = 2
grad_accum = 2
lr = 1e-3
warmup_steps = 2
log_every = 1
eval_every = 5
eval_batches = 4
save_every = {save_every}
"#
        ),
    )
    .unwrap();
    (s, p)
}

#[test]
fn torchrun_variables_are_refused_with_the_way_that_works() {
    let (s, cfg) = sft_setup(2, 2);
    let err = run_err(
        cria()
            .args(["sft", "--config"])
            .arg(&cfg)
            .args(["--out", "run"])
            .env("RANK", "0")
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .current_dir(&s.root),
    );
    assert!(
        err.contains("rank 0 of 2") && err.contains("NCCL") && err.contains("mpirun"),
        "{err}"
    );
    assert!(!s.root.join("run").exists(), "nothing written");
}

#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_will_not_train_as_one_of_many_ranks() {
    // What Open MPI sets in each process it starts: two such copies would both write `run/`.
    let (s, cfg) = sft_setup(2, 2);
    let err = run_err(
        cria()
            .args(["sft", "--config"])
            .arg(&cfg)
            .args(["--out", "run"])
            .env("OMPI_COMM_WORLD_RANK", "1")
            .env("OMPI_COMM_WORLD_SIZE", "2")
            .current_dir(&s.root),
    );
    assert!(
        err.contains("rank 1 of 2")
            && err.contains("built without MPI")
            && err.contains("--features mpi"),
        "{err}"
    );
    assert!(!s.root.join("run").exists(), "nothing written");
}

#[cfg(feature = "mpi")]
mod under_mpirun {
    use super::*;
    use std::process::Command;

    /// `mpirun -np 2 cria ARGS` (as root too, as in CI containers).
    fn mpirun(root: &Path, args: &[&str]) -> Command {
        let found = Command::new("mpirun").arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "mpirun not found: the `mpi` feature's tests need Open MPI (scripts/setup installs it)"
        );
        let mut c = Command::new("mpirun");
        c.args(["-np", "2", "--oversubscribe", "--bind-to", "none"])
            .arg(env!("CARGO_BIN_EXE_cria"))
            .args(args)
            .env("RUST_LOG", "warn")
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .current_dir(root);
        c
    }

    fn losses(dir: &Path) -> Vec<(f64, Option<f64>)> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["loss"].as_f64().unwrap(), v["val_loss"].as_f64())
            })
            .collect()
    }

    /// The largest difference between two checkpoints' weights.
    fn weight_gap(a: &Path, b: &Path) -> f32 {
        let (wa, wb) = (
            cria_testkit::weights(&a.join("checkpoint/model.safetensors")),
            cria_testkit::weights(&b.join("checkpoint/model.safetensors")),
        );
        let names = |w: &cria_core::weights::WeightMap| {
            let mut v: Vec<String> = w.tensors.keys().cloned().collect();
            v.sort();
            v
        };
        assert_eq!(names(&wa), names(&wb));
        let mut worst = 0.0f32;
        for (k, t) in &wa.tensors {
            for (x, y) in t.data.iter().zip(&wb.tensors[k].data) {
                worst = worst.max((x - y).abs());
            }
        }
        worst
    }

    /// Long enough that a kill after the first checkpoint (step 10) lands mid-run.
    const STEPS: u64 = 150;

    #[test]
    fn two_ranks_give_the_one_process_curve_and_resume_after_a_kill() {
        let (s, cfg) = sft_setup(STEPS, 10);
        let c = cfg.to_str().unwrap();
        run_ok(
            cria()
                .args(["sft", "--config", c, "--out", "one"])
                .current_dir(&s.root),
        );
        let out = run_ok(&mut mpirun(
            &s.root,
            &["sft", "--config", c, "--out", "two"],
        ));
        // One result line: rank 0 speaks for the run.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.trim(), "two/checkpoint", "{stdout}");
        let (one, two) = (losses(&s.root.join("one")), losses(&s.root.join("two")));
        assert_eq!(one.len(), STEPS as usize);
        assert_eq!(
            two.len(),
            STEPS as usize,
            "a line per step, from rank 0 alone"
        );
        // The gradients are summed in another order than one process adds them: f32 rounding.
        for (i, (a, b)) in one.iter().zip(&two).enumerate() {
            assert!(
                (a.0 - b.0).abs() < 1e-4 * a.0,
                "step {}: {a:?} vs {b:?}",
                i + 1
            );
            assert_eq!(a.1.is_some(), b.1.is_some());
            if let (Some(x), Some(y)) = (a.1, b.1) {
                assert!((x - y).abs() < 1e-4 * x, "step {}: val {x} vs {y}", i + 1);
            }
        }
        let gap = weight_gap(&s.root.join("one"), &s.root.join("two"));
        assert!(gap < 1e-4, "final weights differ by {gap}");

        // Killed mid-run: both ranks get SIGKILL once the first checkpoint is down (a rank
        // alone cannot run ahead: it would wait for the other's gradients), then resumed.
        let mut child = mpirun(&s.root, &["sft", "--config", c, "--out", "killed"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let killed = s.root.join("killed");
        let t0 = std::time::Instant::now();
        while state_step(&killed).is_none() {
            assert!(
                t0.elapsed().as_secs() < 120,
                "no checkpoint after 2 minutes"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let ranks = Command::new("pgrep")
            .args(["-P", &child.id().to_string()])
            .output()
            .unwrap();
        let pids: Vec<String> = String::from_utf8_lossy(&ranks.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        assert!(!pids.is_empty(), "mpirun's rank processes not found");
        Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .status()
            .unwrap();
        assert!(!child.wait().unwrap().success());
        let at = state_step(&killed).unwrap();
        assert!(at < STEPS, "the run ended before the kill (step {at})");
        run_ok(&mut mpirun(
            &s.root,
            &["sft", "--config", c, "--out", "killed"],
        ));
        let resumed = losses(&killed);
        assert_eq!(resumed.len(), STEPS as usize);
        for (i, (a, b)) in two.iter().zip(&resumed).enumerate() {
            assert_eq!(
                a.0,
                b.0,
                "step {}: loss after resuming from step {at}",
                i + 1
            );
        }
        assert_eq!(weight_gap(&s.root.join("two"), &killed), 0.0);
    }

    #[test]
    fn reward_model_lora_dpo_and_ppo_on_two_ranks_match_one_process() {
        let s = Setup::new();
        let cfg = s.config(2, 2);
        run_ok(&mut pretrain(&s, &cfg, "base"));
        let names = ["Ana", "Bo", "Cy", "Di"];
        let lines: String = (0..24)
            .map(|i| {
                let (n, q) = (names[i % 4], format!("Who likes tea {i}?"));
                let rec = if i % 3 == 0 {
                    serde_json::json!({"prompt": q, "responses":
                        ["Ask someone else.", format!("{n} likes tea."), format!("{n} likes tea. Glad to help!")],
                        "ranking": [2, 1, 0]})
                } else {
                    serde_json::json!({"prompt": q, "chosen": format!("{n} likes tea."),
                        "rejected": "Ask someone else."})
                };
                format!("{rec}\n")
            })
            .collect();
        std::fs::write(s.root.join("prefs.jsonl"), lines).unwrap();
        for (stage, extra) in [
            ("rm", ""),
            ("dpo", "method = \"lora\"\n[lora]\nr = 4\nalpha = 8"),
        ] {
            let p = s.root.join(format!("{stage}.toml"));
            std::fs::write(
                &p,
                format!(
                    r#"init = "base/checkpoint"
{extra}
[data]
train = ["prefs.jsonl"]
seq_len = 48
val_fraction = 0.2
[train]
steps = 8
batch_size = 2
grad_accum = 2
lr = 1e-3
warmup_steps = 0
log_every = 1
eval_every = 4
eval_batches = 2
save_every = 4
"#
                ),
            )
            .unwrap();
            let c = p.to_str().unwrap();
            let (one, two) = (format!("{stage}-one"), format!("{stage}-two"));
            run_ok(
                cria()
                    .args([stage, "--config", c, "--out", &one])
                    .current_dir(&s.root),
            );
            run_ok(&mut mpirun(&s.root, &[stage, "--config", c, "--out", &two]));
            let (a, b) = (losses(&s.root.join(&one)), losses(&s.root.join(&two)));
            assert_eq!((a.len(), b.len()), (8, 8), "{stage}");
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (x.0 - y.0).abs() < 1e-4 * x.0.abs().max(1e-3),
                    "{stage} step {}: {x:?} vs {y:?}",
                    i + 1
                );
            }
        }
        // The reward model is centred once, by rank 0, after training.
        let config = |d: &str| {
            cria_testkit::read_json(&s.root.join(d).join("checkpoint/config.json"))
                ["cria_reward_offset"]
                .as_f64()
                .unwrap()
        };
        let (x, y) = (config("rm-one"), config("rm-two"));
        assert!(
            (x - y).abs() < 1e-3 * x.abs().max(1.0),
            "offsets {x} vs {y}"
        );
        assert!(
            s.root
                .join("dpo-two/checkpoint/adapter_model.safetensors")
                .exists()
        );

        // PPO against that reward model, with PPO-ptx: each rank samples, scores and trains on
        // half of each rollout and minibatch; straight, and stopped at 2 then resumed.
        let p = s.root.join("ppo.toml");
        std::fs::write(
            &p,
            r#"init = "base/checkpoint"
reward_model = "rm-one/checkpoint"
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
ptx_coef = 0.5
[train]
steps = 4
lr = 1e-3
min_lr = 1e-3
warmup_steps = 0
log_every = 1
save_every = 2
"#,
        )
        .unwrap();
        let c = p.to_str().unwrap();
        run_ok(
            cria()
                .args(["ppo", "--config", c, "--out", "ppo-one"])
                .current_dir(&s.root),
        );
        run_ok(&mut mpirun(
            &s.root,
            &["ppo", "--config", c, "--out", "ppo-two"],
        ));
        run_ok(&mut mpirun(
            &s.root,
            &["ppo", "--config", c, "--out", "ppo-split", "--steps", "2"],
        ));
        run_ok(&mut mpirun(
            &s.root,
            &["ppo", "--config", c, "--out", "ppo-split"],
        ));
        let logs = |d: &str| -> Vec<serde_json::Value> {
            std::fs::read_to_string(s.root.join(d).join("metrics.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let (one, two, split) = (logs("ppo-one"), logs("ppo-two"), logs("ppo-split"));
        assert_eq!((one.len(), two.len(), split.len()), (4, 4, 4));
        for (i, (a, b)) in one.iter().zip(&two).enumerate() {
            for k in [
                "reward",
                "kl",
                "policy_loss",
                "value_loss",
                "ptx_loss",
                "reply_len",
            ] {
                let num =
                    |v: &serde_json::Value| v[k].as_f64().unwrap_or_else(|| panic!("{k}: {v}"));
                let (x, y) = (num(a), num(b));
                assert!(
                    (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                    "iteration {}: {k} {x} in one process, {y} on two ranks",
                    i + 1
                );
            }
        }
        for (a, b) in two.iter().zip(&split) {
            assert_eq!(
                a["policy_loss"], b["policy_loss"],
                "a resume changed the run"
            );
        }
        assert_eq!(
            weight_gap(&s.root.join("ppo-two"), &s.root.join("ppo-split")),
            0.0
        );

        // The critic-free algorithms, two replies to each prompt: a prompt's group may be
        // sampled on two ranks, and its advantages are taken once all replies are gathered.
        for algorithm in ["rloo", "grpo"] {
            let algo = format!("ppo.algorithm=\"{algorithm}\"");
            let (one, two) = (format!("{algorithm}-one"), format!("{algorithm}-two"));
            let args = |out: &str| {
                // At PPO's 1e-3, summation order alone flips a sampled token by iteration 4
                // (RLOO's reply-level ratio amplifies weight differences); 3e-4 does not.
                let sets = [
                    "--set",
                    &algo,
                    "--set",
                    "rollout.samples_per_prompt=2",
                    "--set",
                    "train.lr=3e-4",
                    "--set",
                    "train.min_lr=3e-4",
                ];
                let mut a = vec!["ppo", "--config", c, "--out", out];
                a.extend(sets);
                a.into_iter().map(String::from).collect::<Vec<String>>()
            };
            run_ok(cria().args(args(&one)).current_dir(&s.root));
            let two_args = args(&two);
            let two_args: Vec<&str> = two_args.iter().map(String::as_str).collect();
            run_ok(&mut mpirun(&s.root, &two_args));
            let (a, b) = (logs(&one), logs(&two));
            assert_eq!((a.len(), b.len()), (4, 4), "{algorithm}");
            for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                for k in [
                    "reward",
                    "kl",
                    "policy_loss",
                    "ptx_loss",
                    "reply_len",
                    "entropy",
                ] {
                    let num =
                        |v: &serde_json::Value| v[k].as_f64().unwrap_or_else(|| panic!("{k}: {v}"));
                    let (x, y) = (num(a), num(b));
                    assert!(
                        (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                        "{algorithm} iteration {}: {k} {x} in one process, {y} on two ranks\n{a}\n{b}",
                        i + 1
                    );
                }
            }
        }
    }

    #[test]
    fn settings_that_do_not_split_and_other_commands_are_clear_errors() {
        let (s, cfg) = sft_setup(2, 2);
        let c = cfg.to_str().unwrap();
        let out = mpirun(
            &s.root,
            &[
                "sft",
                "--config",
                c,
                "--out",
                "odd",
                "--set",
                "train.grad_accum=3",
            ],
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("train.grad_accum = 3") && err.contains("multiple of 2"),
            "{err}"
        );
        assert!(!s.root.join("odd/checkpoint").exists());

        let out = mpirun(
            &s.root,
            &["generate", "--model", "base/checkpoint", "--prompt", "Ana"],
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("runs as one process"), "{err}");
    }
}
