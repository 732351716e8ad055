//! `cria world` and `cria eval` end to end on a tiny model: every metric is produced and in
//! range, a model's KL to itself is 0, and bad evaluation files are errors naming file, line and
//! field (or column).

mod common;

use common::*;

#[test]
fn eval_measures_a_checkpoint_on_a_generated_world() {
    let s = Setup::new();
    let cfg = s.config(2, 2);
    run_ok(&mut pretrain(&s, &cfg, "base"));
    let world = s.root.join("world");
    run_ok(
        cria()
            .args(["world", "--size", "tiny", "--seed", "3", "--out"])
            .arg(&world),
    );
    // A reward model on the world's rankings, to judge replies.
    std::fs::write(
        s.root.join("rm.toml"),
        format!(
            "init = \"base/checkpoint\"\nout = \"rm\"\n[data]\ntrain = [{:?}]\nseq_len = 64\n\
             [train]\nsteps = 2\nbatch_size = 2\n",
            world.join("prefs.jsonl").display().to_string()
        ),
    )
    .unwrap();
    run_ok(
        cria()
            .args(["rm", "--config", "rm.toml"])
            .current_dir(&s.root),
    );
    let out = s.root.join("eval.json");
    let stdout = run_ok(
        cria()
            .args(["eval", "--model", "base/checkpoint", "--world"])
            .arg(&world)
            .args([
                "--reward-model",
                "rm/checkpoint",
                "--against",
                "base/checkpoint",
                "--reference",
                "base/checkpoint",
                "--corpus",
                "corpus",
                "--seq-len",
                "16",
                "--max-new-tokens",
                "8",
                "--out",
            ])
            .arg(&out)
            .current_dir(&s.root),
    );
    let table = String::from_utf8(stdout.stdout).unwrap();
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    for k in [
        "fact_exact_match",
        "fact_contains",
        "multiturn_exact_match",
        "multiturn_contains",
        "truthful_mc1",
        "truthful_mc2",
        "refusal_rate",
        "over_refusal_rate",
        "win_rate",
    ] {
        let v = r[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {r}"));
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
        assert!(table.contains(&format!("| {k} |")), "{table}");
    }
    assert!(r["perplexity"].as_f64().unwrap() > 1.0);
    assert!(r["reward_mean"].as_f64().unwrap().is_finite());
    assert_eq!(
        r["win_rate"].as_f64(),
        Some(0.5),
        "against itself: all ties"
    );
    assert!(
        r["kl_to_reference"].as_f64().unwrap().abs() < 1e-4,
        "KL to itself"
    );
}

#[test]
fn bad_evaluation_files_name_file_line_and_field() {
    let s = Setup::new();
    let cfg = s.config(1, 1);
    run_ok(&mut pretrain(&s, &cfg, "base"));
    let eval = |flag: &str, name: &str, text: &str| {
        std::fs::write(s.root.join(name), text).unwrap();
        run_err(
            cria()
                .args(["eval", "--model", "base/checkpoint", flag, name])
                .current_dir(&s.root),
        )
    };
    let err = eval(
        "--facts",
        "facts.jsonl",
        "{\"question\": \"q\", \"answer\": \"a\"}\n{\"question\": \"q2\"}\n",
    );
    assert!(
        err.contains("facts.jsonl:2:") && err.contains("`answer`"),
        "{err}"
    );
    let err = eval(
        "--truthful",
        "tq.csv",
        "Question,Best Answer,Correct Answers\n\"q\",\"a\",\"a; b\"\n",
    );
    assert!(
        err.contains("tq.csv") && err.contains("`Incorrect Answers` column"),
        "{err}"
    );
    let err = eval(
        "--truthful",
        "tq.csv",
        "Question,Best Answer,Correct Answers,Incorrect Answers\n\"q, with comma\",\"a\",\"a\",\"b\"\n\"q2\",\"\",\"a\",\"b\"\n",
    );
    assert!(
        err.contains("tq.csv:3:") && err.contains("`Best Answer`: empty"),
        "{err}"
    );
    let err = run_err(
        cria()
            .args(["eval", "--model", "base/checkpoint"])
            .current_dir(&s.root),
    );
    assert!(err.contains("nothing to measure"), "{err}");
}
