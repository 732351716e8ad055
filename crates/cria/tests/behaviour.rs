//! Behaviour of the README's example end to end: the tiny Saltmere model is pretrained, then
//! instruction-tuned on questions about its people, and asked held-out phrasings. The base
//! model neither answers in the format nor stops; the tuned one answers some exactly and ends
//! every reply at the end-of-turn token. (Deterministic: fixed seeds, exact resume guarantees.)

mod common;

use common::{cria, run_ok as ok};
use std::path::{Path, PathBuf};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tiny")
}

/// Greedy replies to each question, one conversation per question.
fn ask(model: &Path, questions: &[String]) -> Vec<String> {
    use std::io::Write;
    let mut child = cria()
        .args([
            "chat",
            "--temperature",
            "0",
            "--max-new-tokens",
            "40",
            "--model",
        ])
        .arg(model)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let script: String = questions.iter().map(|q| format!("{q}\n/reset\n")).collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn instruction_tuning_answers_held_out_questions_and_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ex = examples();
    ok(cria()
        .args(["tokenizer", "train", "--vocab-size", "1024", "--input"])
        .arg(ex.join("corpus"))
        .arg("--out")
        .arg(t.join("tok")));
    ok(cria()
        .args(["pretrain", "--config"])
        .arg(ex.join("pretrain.toml"))
        .arg("--out")
        .arg(t.join("base"))
        .args([
            "--set",
            &format!("tokenizer={:?}", t.join("tok").display().to_string()),
        ]));
    let base = t.join("base/checkpoint");
    ok(cria()
        .args(["sft", "--config"])
        .arg(ex.join("sft.toml"))
        .arg("--init")
        .arg(&base)
        .arg("--out")
        .arg(t.join("sft")));
    let tuned = t.join("sft/checkpoint");

    let val: Vec<serde_json::Value> = std::fs::read_to_string(ex.join("sft-val.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let questions: Vec<String> = val
        .iter()
        .map(|r| r["messages"][0]["content"].as_str().unwrap().to_string())
        .collect();
    let answers: Vec<&str> = val
        .iter()
        .map(|r| r["messages"][1]["content"].as_str().unwrap())
        .collect();
    let exact = |replies: &[String]| {
        replies
            .iter()
            .zip(&answers)
            .filter(|(r, a)| r.trim() == **a)
            .count()
    };

    let tuned_replies = ask(&tuned, &questions);
    // One line per question: every reply ended at <|end_of_turn|>, before the token limit.
    assert_eq!(tuned_replies.len(), questions.len(), "{tuned_replies:#?}");
    assert!(
        tuned_replies
            .iter()
            .all(|r| r.ends_with('.') && r.len() < 80),
        "{tuned_replies:#?}"
    );
    let base_replies = ask(&base, &questions);
    let (b, s) = (exact(&base_replies), exact(&tuned_replies));
    println!(
        "held-out exact match: base {b}/{n}, tuned {s}/{n}",
        n = questions.len()
    );
    assert_eq!(b, 0);
    assert!(
        s >= 2,
        "tuned model answers {s} of {} exactly: {tuned_replies:#?}",
        questions.len()
    );
}
