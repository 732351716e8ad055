//! The record layouts users have, as each reader takes them: preference pairs from
//! UltraFeedback, LLaMA-Factory and StackExchange, chat turns with OpenAI's `weight`, KTO's
//! unpaired feedback refused where pairs are needed; errors that name the record of a JSON
//! list and cut long values; and `--skip-invalid`'s rejects, counted by reason.

use cria_data::chat::{Message, Role};
use cria_data::prefs::{read_all_preferences_with, read_preferences};
use cria_data::records::Rejects;
use cria_data::sft::{read_all_with, read_conversations};
use serde_json::json;
use std::path::{Path, PathBuf};

fn m(role: Role, s: &str) -> Message {
    Message::new(role, s)
}

fn jsonl(dir: &Path, name: &str, recs: &[serde_json::Value]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        recs.iter().map(|r| format!("{r}\n")).collect::<String>(),
    )
    .unwrap();
    p
}

#[test]
fn public_preference_layouts_become_prompts_and_ranked_answers() {
    use Role::{Assistant as A, User as U};
    let dir = tempfile::tempdir().unwrap();
    let p = jsonl(
        dir.path(),
        "p.jsonl",
        &[
            // UltraFeedback-binarized: the prompt string, and whole conversations.
            json!({"prompt": "Q", "prompt_id": "x1", "score_chosen": 8.0, "score_rejected": 3.5,
                   "chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "good"}],
                   "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "bad"}],
                   "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "good"}]}),
            // LLaMA-Factory's ShareGPT pairs.
            json!({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                                     {"from": "human", "value": "Tea?"}],
                   "chosen": {"from": "gpt", "value": "Yes."},
                   "rejected": {"from": "gpt", "value": "No."}}),
            // StackExchange pairs.
            json!({"question": "Why?", "response_j": "Because.", "response_k": "Dunno."}),
            // A pair with one message object per answer.
            json!({"prompt": "Q2", "chosen": {"role": "assistant", "content": "a"},
                   "rejected": {"role": "assistant", "content": "b"}}),
        ],
    );
    let prefs = read_preferences(&p).unwrap();
    assert_eq!(prefs[0].prompt, vec![m(U, "Q")]);
    assert_eq!(
        prefs[0].responses,
        vec![vec![m(A, "good")], vec![m(A, "bad")]]
    );
    assert_eq!(
        prefs[1].prompt,
        vec![m(U, "Hi"), m(A, "Hello"), m(U, "Tea?")]
    );
    assert_eq!(
        prefs[1].responses,
        vec![vec![m(A, "Yes.")], vec![m(A, "No.")]]
    );
    assert_eq!(prefs[2].prompt, vec![m(U, "Why?")]);
    assert_eq!(
        prefs[2].responses,
        vec![vec![m(A, "Because.")], vec![m(A, "Dunno.")]]
    );
    assert_eq!(prefs[3].responses, vec![vec![m(A, "a")], vec![m(A, "b")]]);
}

#[test]
fn unpaired_kto_feedback_is_refused_where_pairs_are_needed() {
    let dir = tempfile::tempdir().unwrap();
    let kto = jsonl(
        dir.path(),
        "kto.jsonl",
        &[
            json!({"prompt": "Q", "completion": "fine answer", "label": true}),
            json!({"prompt": "Q", "completion": "rude answer", "label": false}),
        ],
    );
    let err = read_preferences(&kto).unwrap_err().to_string();
    assert!(
        err.contains("kto.jsonl:1: field `label`: unpaired feedback (KTO's"),
        "{err}"
    );
    // SFT learns the desirable completion and refuses to learn the undesirable one.
    let err = read_conversations(&kto).unwrap_err().to_string();
    assert!(
        err.contains("kto.jsonl:2: field `label`: an undesirable completion"),
        "{err}"
    );
    let mut skip = Rejects::skipping();
    let convs = read_all_with(&[kto], &mut skip).unwrap();
    assert_eq!(
        convs,
        vec![vec![m(Role::User, "Q"), m(Role::Assistant, "fine answer")]]
    );
    assert_eq!(skip.rejected.len(), 1);
}

#[test]
fn openai_weights_keep_assistant_turns_as_context() {
    let dir = tempfile::tempdir().unwrap();
    let p = jsonl(
        dir.path(),
        "chat.jsonl",
        &[json!({"messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello, wrong tone.", "weight": 0},
            {"role": "user", "content": "Again?"},
            {"role": "assistant", "content": "Hello!", "weight": 1}]})],
    );
    let c = &read_conversations(&p).unwrap()[0];
    assert!(!c[1].train && c[3].train, "{c:?}");
    let bad = jsonl(
        dir.path(),
        "bad.jsonl",
        &[
            json!({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "x", "weight": 0.5}]}),
            json!({"messages": [{"role": "user", "content": "Hi", "weight": 0}, {"role": "assistant", "content": "x"}]}),
        ],
    );
    let mut skip = Rejects::skipping();
    read_all_with(&[bad], &mut skip).ok();
    let reasons: Vec<&str> = skip.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert!(
        reasons[0].contains("messages[1].weight`: expected 0 or 1"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("messages[0].weight`: a weight belongs on an assistant turn"));
}

#[test]
fn errors_in_json_lists_name_the_record_and_cut_long_values() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("list.json");
    let long = "x".repeat(500);
    std::fs::write(
        &p,
        json!([
            {"prompt": "Q", "chosen": "a", "rejected": "b"},
            {"prompt": {"weird": long}, "chosen": "a", "rejected": "b"},
        ])
        .to_string(),
    )
    .unwrap();
    let err = read_preferences(&p).unwrap_err().to_string();
    assert!(err.contains("list.json: record 2: field `prompt`"), "{err}");
    assert!(!err.contains(":0:"), "{err}");
    assert!(err.len() < 400 && err.contains("characters)"), "{err}");
    assert!(
        err.contains("--skip-invalid"),
        "the strict error says how to skip: {err}"
    );
}

#[test]
fn skip_invalid_keeps_good_records_and_counts_bad_ones_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    // As in public HH-RLHF dumps: a few transcripts end on an empty reply.
    let hh = |a: &str, b: &str| {
        json!({"chosen": format!("\n\nHuman: Hi\n\nAssistant:{a}"),
               "rejected": format!("\n\nHuman: Hi\n\nAssistant:{b}")})
    };
    let p = jsonl(
        dir.path(),
        "hh.jsonl",
        &[
            hh(" Hello", " Go away"),
            hh("", " Hi"),
            hh(" Yo", ""),
            hh(" Hey", " Bye"),
        ],
    );
    std::fs::write(
        dir.path().join("broken.jsonl"),
        "{\"prompt\": \"Q\", \"chosen\": \"a\", \"rejected\": \"b\"}\nnot json\n",
    )
    .unwrap();
    let err = read_all_preferences_with(std::slice::from_ref(&p), &mut Rejects::strict())
        .unwrap_err()
        .to_string();
    assert!(err.contains("hh.jsonl:2:"), "{err}");
    let mut skip = Rejects::skipping();
    let files = [p, dir.path().join("broken.jsonl")];
    let prefs = read_all_preferences_with(&files, &mut skip).unwrap();
    assert_eq!(prefs.len(), 3);
    let counts = skip.by_reason();
    assert_eq!(counts.values().sum::<usize>(), 3, "{counts:?}");
    assert!(
        counts.keys().any(|k| k.contains("empty response")),
        "{counts:?}"
    );
    assert!(
        counts.keys().any(|k| k.contains("invalid JSON")),
        "{counts:?}"
    );
    let out = dir.path().join("rejects.jsonl");
    skip.write(&out).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["line"], 2);
    assert!(lines[0]["text"].as_str().unwrap().contains("Human: Hi"));
    assert_eq!(lines[2]["text"], "not json");
}
