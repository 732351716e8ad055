//! `cria pipeline` on a miniature world, end to end through every stage: the report has its
//! sections and a column per model; a pipeline killed mid-stage skips the finished stages on
//! the next run and resumes the killed one from its checkpoint.

mod common;

use common::*;
use std::time::{Duration, Instant};

const MINI: &str = r#"out = "run"

[world]
seed = 2
size = "tiny"

[tokenizer]
vocab_size = 512

[pretrain.model]
hidden_size = 32
intermediate_size = 64
num_hidden_layers = 2
num_attention_heads = 4
num_key_value_heads = 2
max_position_embeddings = 256

[pretrain.data]
seq_len = 64

[pretrain.train]
steps = PRETRAIN_STEPS
batch_size = 4
save_every = 2
log_every = 1

[sft.data]
seq_len = 64

[sft.train]
steps = 3
batch_size = 4

[rm.data]
seq_len = 64

[rm.train]
steps = 2
batch_size = 2

[dpo.data]
seq_len = 64

[dpo.train]
steps = 2
batch_size = 2

[ppo.data]
prompt_len = 200

[ppo.rollout]
batch_size = 4
max_new_tokens = 6

[ppo.ppo]
minibatch_size = 4

[ppo.train]
steps = 2

[eval]
max_new_tokens = 8
kl_samples = 1
seq_len = 32
"#;

#[test]
fn miniature_pipeline_runs_every_stage_reports_and_resumes_after_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(
        root.join("mini.toml"),
        MINI.replace("PRETRAIN_STEPS", "400"),
    )
    .unwrap();
    let pipeline = |verb: &str| {
        let mut c = cria();
        c.args(["pipeline", verb, "--config", "mini.toml"])
            .current_dir(root);
        c
    };
    let plan = String::from_utf8(run_ok(&mut pipeline("plan")).stdout).unwrap();
    let stages = [
        "world",
        "tokenizer",
        "pretrain",
        "sft",
        "rm",
        "dpo",
        "ppo",
        "eval",
    ];
    for s in stages {
        assert!(plan.contains(&format!("{s:<10} runs")), "{plan}");
    }

    // Kill the run once pretraining has checkpointed.
    let mut child = pipeline("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pre = root.join("run/pretrain");
    let deadline = Instant::now() + Duration::from_secs(180);
    while state_step(&pre).unwrap_or(0) < 4 {
        assert!(Instant::now() < deadline, "pretraining never checkpointed");
        assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at = state_step(&pre).unwrap();
    assert!(at < 400, "killed mid-pretraining");
    let plan = String::from_utf8(run_ok(&mut pipeline("plan")).stdout).unwrap();
    assert!(plan.contains("world      done, skipped"), "{plan}");
    assert!(plan.contains("tokenizer  done, skipped"), "{plan}");
    assert!(
        plan.contains(&format!("pretrain   resumes at step {at}")),
        "{plan}"
    );
    assert!(plan.contains("sft        runs"), "{plan}");

    // Run again: world and tokenizer are skipped, pretraining goes on from its checkpoint.
    let out = run_ok(&mut pipeline("run"));
    let log = String::from_utf8(out.stderr).unwrap();
    assert!(log.contains("== world: done earlier, skipped"), "{log}");
    assert!(log.contains("== tokenizer: done earlier, skipped"), "{log}");
    assert!(log.contains("== pretrain\n"), "{log}");
    let metrics = std::fs::read_to_string(pre.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 400, "no step lost or repeated");

    let report = std::fs::read_to_string(root.join("run/report.md")).unwrap();
    for section in [
        "## Stages",
        "## Evaluation",
        "| metric | base | sft | dpo | ppo |",
        "## Checks",
        "| reward model's held-out pair accuracy |",
        "| ppo refuses held-out harmful requests |",
        "| dpo answers benign look-alikes (over-refusal) |",
        "## What the models say",
        "| prompt | base | sft | dpo | ppo |",
    ] {
        assert!(report.contains(section), "{section} missing:\n{report}");
    }
    // Every model's replies are kept, one JSON line per evaluation prompt of each set.
    for m in ["base", "sft", "dpo", "ppo"] {
        let text =
            std::fs::read_to_string(root.join(format!("run/eval/{m}-replies.jsonl"))).unwrap();
        let sets: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["set"].to_string())
            .collect();
        for set in ["facts", "multiturn", "harmful", "benign"] {
            assert!(
                sets.contains(&format!("\"{set}\"")),
                "{m}: no {set} replies"
            );
        }
    }
    for metric in [
        "fact_exact_match",
        "multiturn_exact_match",
        "truthful_mc1",
        "refusal_rate",
        "over_refusal_rate",
        "reward_mean",
        "win_rate",
        "perplexity",
        "kl_to_reference",
    ] {
        assert!(
            report.contains(&format!("| {metric} |")),
            "{metric} missing:\n{report}"
        );
    }
    // The HTML page: the same tables, and a plot per training curve, all inline.
    let html = std::fs::read_to_string(root.join("run/report.html")).unwrap();
    assert!(html.contains("<th>metric</th><th>base</th><th>sft</th><th>dpo</th><th>ppo</th>"));
    for title in [
        "pretrain: loss",
        "rm: pair accuracy",
        "dpo: loss",
        "ppo: reward",
        "ppo: KL",
    ] {
        assert!(html.contains(title), "plot `{title}` missing");
    }
    assert!(html.matches("<svg").count() >= 8 && !html.contains("src=\"http"));
    for s in stages {
        assert!(
            root.join("run").join(s).join(".done").exists(),
            "{s} not marked done"
        );
    }
    // Everything is done: a third run skips every stage.
    let out = run_ok(&mut pipeline("run"));
    let log = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        log.matches("done earlier, skipped").count(),
        stages.len(),
        "{log}"
    );
}

/// A pipeline on the user's own files (no `[world]`): every path named in the file, relative
/// to it, including the held-out sets of `[eval]`.
#[test]
fn a_pipeline_on_named_files_evaluates_on_the_named_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    run_ok(
        cria()
            .args(["world", "--size", "tiny", "--seed", "4", "--out"])
            .arg(root.join("mine")),
    );
    let own = MINI
        .replace("PRETRAIN_STEPS", "10")
        .replace("[world]\nseed = 2\nsize = \"tiny\"\n", "")
        .replace("[tokenizer]\n", "[tokenizer]\ninput = [\"mine/corpus\"]\n")
        .replace(
            "[sft.data]\n",
            "[sft.data]\ntrain = [\"mine/sft.jsonl\"]\nval = [\"mine/sft-val.jsonl\"]\n",
        )
        .replace("[rm.data]\n", "[rm.data]\ntrain = [\"mine/prefs.jsonl\"]\n")
        .replace(
            "[dpo.data]\n",
            "[dpo.data]\ntrain = [\"mine/prefs.jsonl\"]\n",
        )
        .replace(
            "[ppo.data]\n",
            "[ppo.data]\nprompts = [\"mine/prompts.jsonl\"]\n",
        )
        .replace(
            "[eval]\n",
            "[eval]\nfacts = \"mine/eval/facts.jsonl\"\nharmful = \"mine/eval/harmful.jsonl\"\n",
        );
    assert!(!own.contains("[world]") && own.contains("facts = "));
    let sub = root.join("conf");
    std::fs::create_dir_all(&sub).unwrap();
    // Paths are relative to the pipeline file, wherever it is run from.
    let own = own
        .replace("\"mine/", "\"../mine/")
        .replace("out = \"run\"", "out = \"../run\"");
    std::fs::write(sub.join("own.toml"), own).unwrap();
    // The file may be named positionally too.
    let plan = run_ok(cria().args(["pipeline", "plan"]).arg(sub.join("own.toml")));
    let plan = String::from_utf8(plan.stdout).unwrap();
    assert!(!plan.contains("world"), "{plan}");
    let err = run_err(cria().args(["pipeline", "run"]));
    assert!(err.contains("name the pipeline file"), "{err}");
    run_ok(
        cria()
            .args(["pipeline", "run", "--config"])
            .arg(sub.join("own.toml")),
    );
    let report = std::fs::read_to_string(root.join("run/report.md")).unwrap();
    for metric in [
        "fact_exact_match",
        "refusal_rate",
        "reward_mean",
        "kl_to_reference",
    ] {
        assert!(
            report.contains(&format!("| {metric} |")),
            "{metric} missing:\n{report}"
        );
    }
    // No benign set or TruthfulQA file was named: those metrics are absent, not invented.
    assert!(!report.contains("| over_refusal_rate |") && !report.contains("| truthful_mc1 |"));
}
