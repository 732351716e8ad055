//! Evaluation question files: single questions and conversations whose last user turn is the
//! question, and the errors that name the file, line and field.

use cria_data::chat::Role;
use cria_data::evalsets::read_qa;

fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("qa.jsonl");
    std::fs::write(&p, text).unwrap();
    (d, p)
}

#[test]
fn questions_and_conversations_are_read_with_their_context() {
    let (_d, p) = file(concat!(
        r#"{"question": "How much is the Ion Lamp?", "answer": "250 euros."}"#,
        "\n",
        r#"{"messages": [{"role": "user", "content": "How much is the Ion Lamp?"}, {"role": "assistant", "content": "250 euros."}, {"role": "user", "content": "What colour is it?"}], "answers": ["It is black.", "Black."]}"#,
        "\n"
    ));
    let qa = read_qa(&p).unwrap();
    assert_eq!(qa[0].question, "How much is the Ion Lamp?");
    assert!(qa[0].context.is_empty());
    assert_eq!(qa[1].question, "What colour is it?");
    assert_eq!(qa[1].answers, ["It is black.", "Black."]);
    let roles: Vec<Role> = qa[1].context.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant]);
}

#[test]
fn bad_records_name_the_file_line_and_field() {
    for (line, want) in [
        (
            r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}], "answer": "x"}"#,
            "qa.jsonl:2: field `messages`: the conversation must end with the user's question",
        ),
        (
            r#"{"messages": [{"role": "robot", "content": "Hi"}], "answer": "x"}"#,
            "qa.jsonl:2: field `messages",
        ),
        (
            r#"{"messages": "Hi", "answer": "x"}"#,
            "qa.jsonl:2: field `messages",
        ),
        (
            r#"{"question": "Hi"}"#,
            "qa.jsonl:2: field `answer`: missing",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "Hi"}], "answers": [3]}"#,
            "qa.jsonl:2: field `answers[0]`",
        ),
    ] {
        let (_d, p) = file(&format!(
            "{{\"question\": \"ok\", \"answer\": \"ok\"}}\n{line}\n"
        ));
        let e = read_qa(&p).unwrap_err().to_string();
        assert!(e.contains(want), "{line}\n -> {e}");
    }
    let (_d, p) = file("");
    assert!(
        read_qa(&p)
            .unwrap_err()
            .to_string()
            .contains("no questions")
    );
}
