//! Real model families' chat templates (scripts/ref/chat_template_fixtures.py): LLaMA-3.1,
//! Qwen2.5 and Qwen3 (with tools and their variables), Mistral, Gemma 3, Phi-3 and Zephyr
//! render exactly as transformers' `apply_chat_template` does, their token ids equal its
//! `tokenize=True` ids (special tokens in the text become their ids), and the loss mask of
//! every reply covers its content and its end-of-turn token, not the separator after it.

use cria_core::tokenizer::Tokenizer;
use cria_data::chat::{Message, Role};
use cria_data::template::{ChatTemplate, TemplateVars};
use std::path::{Path, PathBuf};

fn families() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/templates");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 7, "fixtures missing in {}", root.display());
    dirs
}

fn messages(v: &serde_json::Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let role = Role::parse(m["role"].as_str().unwrap()).unwrap();
            Message::new(role, m["content"].as_str().unwrap())
        })
        .collect()
}

fn vars_of(case: &serde_json::Value) -> TemplateVars {
    TemplateVars {
        tools: case["tools"].as_array().cloned(),
        extra: case["variables"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn every_family_renders_and_tokenizes_as_apply_chat_template() {
    for dir in families() {
        let family = dir.file_name().unwrap().to_string_lossy().to_string();
        let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        let tmpl = ChatTemplate::from_checkpoint(&dir)
            .unwrap()
            .expect("a template");
        let exp = cria_testkit::read_json(&dir.join("expected.json"));
        for case in exp["cases"].as_array().unwrap() {
            let name = format!("{family}/{}", case["name"].as_str().unwrap());
            let vars = vars_of(case);
            let prompting = case["add_generation_prompt"].as_bool().unwrap();
            let text = tmpl
                .render_with(&messages(&case["messages"]), prompting, &vars)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                text,
                case["rendered"].as_str().unwrap(),
                "{name}: rendering"
            );
            assert_eq!(
                tok.encode(&text, false).unwrap(),
                ids(&case["ids"]),
                "{name}: ids"
            );
        }
    }
}

#[test]
fn every_reply_mask_covers_its_content_and_end_of_turn_token() {
    for dir in families() {
        let family = dir.file_name().unwrap().to_string_lossy().to_string();
        let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        let tmpl = ChatTemplate::from_checkpoint(&dir).unwrap().unwrap();
        let exp = cria_testkit::read_json(&dir.join("expected.json"));
        let eot = tok
            .token_to_id(exp["end_of_turn"].as_str().unwrap())
            .unwrap();
        for case in exp["cases"].as_array().unwrap() {
            let msgs = messages(&case["messages"]);
            if case["add_generation_prompt"].as_bool().unwrap() {
                continue;
            }
            let name = format!("{family}/{}", case["name"].as_str().unwrap());
            let e = tmpl
                .encode_with(&msgs, &vars_of(case), &tok, false, false)
                .unwrap();
            assert_eq!(e.ids, ids(&case["ids"]), "{name}: ids");
            // The masked positions, as runs.
            let mut runs: Vec<Vec<u32>> = vec![];
            for (i, (&id, &t)) in e.ids.iter().zip(&e.train).enumerate() {
                if t {
                    if i == 0 || !e.train[i - 1] {
                        runs.push(vec![]);
                    }
                    runs.last_mut().unwrap().push(id);
                }
            }
            let replies: Vec<&Message> =
                msgs.iter().filter(|m| m.role == Role::Assistant).collect();
            assert_eq!(
                runs.len(),
                replies.len(),
                "{name}: one masked run per reply"
            );
            for (run, m) in runs.iter().zip(replies) {
                // Phi-3 writes the end-of-sequence token after the last turn too; it is
                // trained with that reply.
                assert!(
                    run.contains(&eot),
                    "{name}: the run holds the end-of-turn token"
                );
                assert!(
                    !tok.decode(run, false)
                        .unwrap()
                        .ends_with(char::is_whitespace),
                    "{name}: no separator after the turn"
                );
                let text = tok.decode(run, false).unwrap();
                assert!(
                    text.contains(&m.content),
                    "{name}: {text:?} holds {:?}",
                    m.content
                );
            }
        }
    }
}
