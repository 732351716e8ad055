//! `cria demo`, the README's first command: its built-in pipeline file, its plan, bad
//! overrides, and the whole demo run end to end (a few minutes on 2 cores) with every
//! acceptance check in its report card holding.

mod common;

use common::*;

#[test]
fn print_config_is_the_shipped_pipeline_file_and_plan_lists_every_stage() {
    let out = run_ok(cria().args(["demo", "--print-config"]));
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipeline/demo.toml"),
    )
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), shipped);

    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("d");
    let out = run_ok(cria().args(["demo", "--plan", "--out"]).arg(&run));
    let plan = String::from_utf8(out.stdout).unwrap();
    for s in [
        "world",
        "tokenizer",
        "pretrain",
        "sft",
        "rm",
        "dpo",
        "ppo",
        "eval",
    ] {
        assert!(plan.contains(&format!("{s:<10} runs")), "{plan}");
    }
    assert!(!run.exists(), "--plan must not create the run");
}

#[test]
fn a_misspelt_override_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("d");
    let err = run_err(
        cria()
            .args(["demo", "--set", "sft.train.stepz=3", "--out"])
            .arg(&run),
    );
    assert!(err.contains("stepz"), "{err}");
    assert!(!run.exists());
    let err = run_err(
        cria()
            .args(["demo", "--set", "world.size=huge", "--out"])
            .arg(&run),
    );
    assert!(err.contains("world.size"), "{err}");
    assert!(!run.exists());
}

/// The demo as a newcomer runs it: every stage, then a report card whose checks (SFT teaches
/// the facts, the reward model ranks held-out answers, DPO and PPO raise the reward within
/// the KL bound, refuse harmful requests and answer benign look-alikes) all pass.
#[test]
fn the_demo_runs_every_stage_and_passes_its_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("demo");
    let out = run_ok(cria().args(["demo", "--out"]).arg(&run));
    let report = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        report,
        std::fs::read_to_string(run.join("report.md")).unwrap(),
        "the demo prints its report card"
    );
    let checks: Vec<&str> = report
        .lines()
        .skip_while(|l| *l != "## Checks")
        .filter(|l| l.ends_with("| pass |") || l.ends_with("| FAIL |"))
        .collect();
    assert!(checks.len() >= 10, "{report}");
    let failed: Vec<&&str> = checks.iter().filter(|l| l.ends_with("| FAIL |")).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}\n{report}");
    let log = String::from_utf8(out.stderr).unwrap();
    assert!(log.contains("cria chat --model"), "{log}");
}
