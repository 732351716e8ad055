//! Preference readers: what each accepted shape becomes (prompt, responses best first).

use cria_data::chat::{Message, Role};
use cria_data::prefs::{parse_hh, read_preferences};

fn m(role: Role, s: &str) -> Message {
    Message::new(role, s)
}

#[test]
fn each_shape_becomes_a_prompt_and_ranked_responses() {
    use Role::{Assistant as A, System as S, User as U};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.jsonl");
    let hh_c = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tea?\n\nAssistant: Yes, please.";
    let hh_r = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tea?\n\nAssistant: No.";
    let lines = [
        serde_json::json!({"prompt": "Q", "chosen": "good", "rejected": "bad"}),
        serde_json::json!({"chosen": hh_c, "rejected": hh_r}),
        serde_json::json!({
            "chosen": [{"role": "system", "content": "sys"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "good"}],
            "rejected": [{"role": "system", "content": "sys"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "bad"}]
        }),
        serde_json::json!({"prompt": [{"role": "user", "content": "Q"}], "responses": ["x", "y", "z"], "ranking": [2, 0, 1]}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&p, text).unwrap();
    let prefs = read_preferences(&p).unwrap();
    assert_eq!(prefs.len(), 4);
    assert_eq!(prefs[0].prompt, vec![m(U, "Q")]);
    assert_eq!(
        prefs[0].responses,
        vec![vec![m(A, "good")], vec![m(A, "bad")]]
    );
    // HH-RLHF: the shared turns are the prompt, the final assistant turns the responses.
    assert_eq!(
        prefs[1].prompt,
        vec![m(U, "Hi there"), m(A, "Hello!"), m(U, "Tea?")]
    );
    assert_eq!(
        prefs[1].responses,
        vec![vec![m(A, "Yes, please.")], vec![m(A, "No.")]]
    );
    assert_eq!(prefs[2].prompt, vec![m(S, "sys"), m(U, "Q")]);
    assert_eq!(
        prefs[3].responses,
        vec![vec![m(A, "z")], vec![m(A, "x")], vec![m(A, "y")]],
        "ranking lists indices best first"
    );
}

#[test]
fn a_list_inside_a_ranking_is_a_tie() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ties.jsonl");
    let rec = serde_json::json!({"prompt": "Q", "responses": ["w", "x", "y", "z"], "ranking": [2, [0, 3], 1]});
    std::fs::write(&p, format!("{rec}\n")).unwrap();
    let prefs = read_preferences(&p).unwrap();
    let texts: Vec<&str> = prefs[0]
        .responses
        .iter()
        .map(|r| r[0].content.as_str())
        .collect();
    assert_eq!(texts, ["y", "w", "z", "x"]);
    assert_eq!(prefs[0].tiers, [0, 1, 1, 2]);
    // Pairs skip the tie (w, z): 5 of the 6.
    assert_eq!(prefs[0].pairs(), [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]);
    let bad = [
        (
            serde_json::json!({"prompt": "Q", "responses": ["a", "b"], "ranking": [[0, 1]]}),
            "every response is tied",
        ),
        (
            serde_json::json!({"prompt": "Q", "responses": ["a", "b"], "ranking": [0, []]}),
            "ranking[1]`: an empty tie",
        ),
        (
            serde_json::json!({"prompt": "Q", "responses": ["a", "b", "c"], "ranking": [[0, 1], [1, 2]]}),
            "ranking[1]`: index 1 is repeated",
        ),
    ];
    for (rec, want) in bad {
        std::fs::write(&p, format!("{rec}\n")).unwrap();
        let e = read_preferences(&p).unwrap_err().to_string();
        assert!(
            e.contains(want) && e.contains("ties.jsonl:1"),
            "{want:?} in {e}"
        );
    }
}

#[test]
fn prompt_sets_take_the_prompt_of_any_record_shape() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("prompts.jsonl");
    // The HH pair's answers are identical: a bad preference, but its prompt is usable.
    let same = "\n\nHuman: Hi\n\nAssistant: Hello.";
    let lines = [
        serde_json::json!({"prompt": "Q1"}),
        serde_json::json!({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q2"}]}),
        serde_json::json!({"chosen": same, "rejected": same}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&p, text).unwrap();
    let prompts = cria_data::prefs::read_prompts(&[p]).unwrap();
    assert_eq!(prompts[0], vec![m(Role::User, "Q1")]);
    assert_eq!(prompts[1], vec![m(Role::System, "S"), m(Role::User, "Q2")]);
    assert_eq!(prompts[2], vec![m(Role::User, "Hi")]);
}

#[test]
fn hh_transcripts_split_into_turns() {
    let turns = parse_hh("\n\nHuman: a\nb\n\nAssistant: c").unwrap();
    assert_eq!(
        turns,
        vec![
            Message::new(Role::User, "a\nb"),
            Message::new(Role::Assistant, "c")
        ]
    );
    assert!(parse_hh("Human: no leading blank line").is_none());
    assert!(parse_hh("\n\nHuman: a\n\nRobot: b").is_some_and(|t| t.len() == 1));
}

#[test]
fn label_prompts_come_from_any_prompt_file_and_rankings_become_gold() {
    use cria_data::tasks::read_label_prompts;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tasks.jsonl");
    let lines = [
        serde_json::json!({"prompt": "Q1"}),
        serde_json::json!({"messages": [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "old reply"}]}),
        serde_json::json!({"instruction": "Summarise", "input": "the memo"}),
        serde_json::json!({"instruction": "Say hi", "input": "", "output": "hi"}),
        serde_json::json!({"prompt": "Q5", "responses": ["a", "b", "c"], "ranking": [2, [0, 1]]}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&p, text).unwrap();
    let got = read_label_prompts(&p).unwrap();
    assert_eq!(got.len(), 5);
    assert_eq!(got[0].messages, vec![m(Role::User, "Q1")]);
    assert_eq!(
        got[1].messages,
        vec![m(Role::User, "Q2")],
        "the old reply is dropped"
    );
    assert_eq!(got[2].messages[0].text(), "Summarise\n\nthe memo");
    assert_eq!(got[3].messages, vec![m(Role::User, "Say hi")]);
    assert_eq!(
        got[4].gold,
        Some((vec!["c".into(), "a".into(), "b".into()], vec![0, 1, 1]))
    );
    assert!(got[1].source.ends_with("tasks.jsonl:2"));
    std::fs::write(&p, "{\"prompt\": \"ok\"}\n{\"text\": \"a corpus line\"}\n").unwrap();
    let e = read_label_prompts(&p).unwrap_err().to_string();
    assert!(
        e.contains("tasks.jsonl:2") && e.contains("not a prompt"),
        "{e}"
    );
}
