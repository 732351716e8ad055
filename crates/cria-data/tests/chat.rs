//! cria's chat rendering against transformers' `apply_chat_template` with the same tokenizer
//! and template (fixture from scripts/ref/chat_fixtures.py), and the loss mask by hand.

use cria_core::tokenizer::Tokenizer;
use cria_data::chat::{ChatTokens, Message, Role, encode};
use std::path::Path;

fn fixture() -> (Tokenizer, serde_json::Value) {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat");
    let tok = Tokenizer::from_file(&d.join("tokenizer.json")).unwrap();
    let exp = serde_json::from_slice(&std::fs::read(d.join("expected.json")).unwrap()).unwrap();
    (tok, exp)
}

fn messages(v: &serde_json::Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let mut msg = Message::new(
                Role::parse(m["role"].as_str().unwrap()).unwrap(),
                m["content"].as_str().unwrap(),
            );
            msg.input = m["input"].as_str().map(String::from);
            msg
        })
        .collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn rendering_matches_apply_chat_template() {
    let (tok, exp) = fixture();
    let ct = ChatTokens::of(&tok).unwrap();
    for case in exp.as_array().unwrap() {
        let msgs = messages(&case["messages"]);
        let full = encode(&msgs, &tok, &ct, false, false).unwrap();
        assert_eq!(
            full.ids,
            ids(&case["ids"]),
            "conversation: {}",
            case["text"]
        );
        let prompt = encode(&msgs[..msgs.len() - 1], &tok, &ct, true, false).unwrap();
        assert_eq!(prompt.ids, ids(&case["prompt_ids"]), "generation prompt");
    }
}

#[test]
fn mask_covers_replies_and_their_end_of_turn_only() {
    let (tok, _) = fixture();
    let ct = ChatTokens::of(&tok).unwrap();
    let msgs = vec![
        Message::new(Role::System, "Be brief."),
        Message::new(Role::User, "Who bakes?"),
        Message::new(Role::Assistant, "Bram bakes."),
        Message::new(Role::User, "When?"),
        Message::new(Role::Assistant, "Every day."),
    ];
    let e = encode(&msgs, &tok, &ct, false, false).unwrap();
    let trained: Vec<u32> = e
        .ids
        .iter()
        .zip(&e.train)
        .filter(|(_, t)| **t)
        .map(|(i, _)| *i)
        .collect();
    let reply = |s: &str| tok.encode(s, false).unwrap();
    // Exactly: "Bram bakes." EOT "Every day." EOT.
    let mut want = reply("Bram bakes.");
    want.push(ct.eot);
    want.extend(reply("Every day."));
    want.push(ct.eot);
    assert_eq!(trained, want);
    assert_eq!(
        tok.decode(&trained, false).unwrap(),
        "Bram bakes.<|end_of_turn|>Every day.<|end_of_turn|>"
    );
    // train_on_inputs trains every position.
    let all = encode(&msgs, &tok, &ct, false, true).unwrap();
    assert!(all.train.iter().all(|t| *t));
    assert_eq!(all.ids, e.ids);
}

#[test]
fn a_checkpoints_own_template_renders_as_transformers_and_masks_replies() {
    use cria_data::chat::ChatFormat;
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_chatml");
    let tok = Tokenizer::from_file(&d.join("tokenizer.json")).unwrap();
    let fmt = ChatFormat::for_checkpoint(&d, &tok).unwrap();
    assert!(
        matches!(fmt, ChatFormat::Template(_)),
        "the shipped template is used"
    );
    let exp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("expected.json")).unwrap()).unwrap();
    for case in exp.as_array().unwrap() {
        let msgs = messages(&case["messages"]);
        let e = fmt.encode(&msgs, &tok, false, false).unwrap();
        assert_eq!(e.ids, ids(&case["ids"]), "conversation: {}", case["text"]);
        let p = fmt
            .encode(&msgs[..msgs.len() - 1], &tok, true, false)
            .unwrap();
        assert_eq!(p.ids, ids(&case["prompt_ids"]));
        // The trained span of the last reply is its text and the template's end-of-turn token
        // (not the separator after it: generation stops at the token).
        let trained: Vec<u32> = e
            .ids
            .iter()
            .zip(&e.train)
            .skip(p.ids.len())
            .filter(|(_, t)| **t)
            .map(|(i, _)| *i)
            .collect();
        let last = msgs.last().unwrap().content.clone();
        assert_eq!(
            tok.decode(&trained, false).unwrap(),
            format!("{last}<|im_end|>")
        );
    }
    // The cria-format fixture is recognised as cria's own format.
    let c = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat");
    assert!(matches!(
        ChatFormat::for_checkpoint(&c, &tok).unwrap(),
        ChatFormat::Cria(_)
    ));
}

#[test]
fn a_template_that_fails_to_render_names_the_file() {
    use cria_data::template::ChatTemplate;
    let src = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}x";
    let t = ChatTemplate::new(
        src,
        Path::new("ckpt/tokenizer_config.json"),
        String::new(),
        String::new(),
    )
    .unwrap();
    let e = t
        .render(
            &[
                Message::new(Role::System, "s"),
                Message::new(Role::User, "u"),
            ],
            true,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ckpt/tokenizer_config.json")
            && e.contains("chat_template")
            && e.contains("System role not supported"),
        "{e}"
    );
    let e = ChatTemplate::new(
        "{% for %}",
        Path::new("t.jinja"),
        String::new(),
        String::new(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("t.jinja") && e.contains("does not parse"), "{e}");
}

#[test]
fn alpaca_prompt_renders_as_transformers_with_and_without_input() {
    use cria_data::chat::{ALPACA_TEMPLATE, ChatFormat, FormatChoice};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let d = root.join("chat_alpaca");
    let tok = Tokenizer::from_file(&d.join("tokenizer.json")).unwrap();
    // Chosen for a cria checkpoint, and found in a checkpoint tuned with it: same rendering.
    let chosen = ChatFormat::choose(FormatChoice::Alpaca, &root.join("chat"), &tok).unwrap();
    let shipped = ChatFormat::for_checkpoint(&d, &tok).unwrap();
    for fmt in [&chosen, &shipped] {
        assert!(matches!(fmt, ChatFormat::Template(t) if t.is(ALPACA_TEMPLATE)));
    }
    let exp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("expected.json")).unwrap()).unwrap();
    for case in exp.as_array().unwrap() {
        let msgs = messages(&case["messages"]);
        for fmt in [&chosen, &shipped] {
            let e = fmt.encode(&msgs, &tok, false, false).unwrap();
            assert_eq!(e.ids, ids(&case["ids"]), "conversation: {}", case["text"]);
            let p = fmt
                .encode(&msgs[..msgs.len() - 1], &tok, true, false)
                .unwrap();
            assert_eq!(p.ids, ids(&case["prompt_ids"]));
            // Only the response and the end-of-sequence token after it train.
            let trained: Vec<u32> = e
                .ids
                .iter()
                .zip(&e.train)
                .filter(|(_, t)| **t)
                .map(|(i, _)| *i)
                .collect();
            let last = msgs.last().unwrap().content.clone();
            assert_eq!(
                tok.decode(&trained, false).unwrap(),
                format!("{last}<|end_of_text|>")
            );
        }
    }
    // The input has its own section under Alpaca and follows the instruction elsewhere.
    let mut user = Message::new(Role::User, "Summarise.");
    user.input = Some("Two ships came in.".into());
    let conv = [user, Message::new(Role::Assistant, "Ships came.")];
    let text = |f: &ChatFormat| {
        tok.decode(&f.encode(&conv, &tok, false, false).unwrap().ids, false)
            .unwrap()
    };
    assert!(
        text(&chosen).contains("### Instruction:\nSummarise.\n\n### Input:\nTwo ships came in.")
    );
    let cria = ChatFormat::choose(FormatChoice::Cria, &root.join("chat"), &tok).unwrap();
    assert!(text(&cria).contains("<|user|>\nSummarise.\n\nTwo ships came in.<|end_of_turn|>"));
    // More than one exchange does not fit the Alpaca prompt.
    let two = [
        Message::new(Role::User, "a"),
        Message::new(Role::Assistant, "b"),
        Message::new(Role::User, "c"),
        Message::new(Role::Assistant, "d"),
    ];
    let err = chosen
        .encode(&two, &tok, false, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("one instruction and one response"), "{err}");
}

#[test]
fn a_conversation_folds_into_one_alpaca_exchange() {
    use cria_data::chat::{ChatFormat, FormatChoice, fold_history};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let tok = Tokenizer::from_file(&root.join("chat_alpaca/tokenizer.json")).unwrap();
    let fmt = ChatFormat::choose(FormatChoice::Alpaca, &root.join("chat"), &tok).unwrap();
    assert!(fmt.single_exchange());
    assert!(
        !ChatFormat::for_checkpoint(&root.join("chat"), &tok)
            .unwrap()
            .single_exchange()
    );
    let conversation = vec![
        Message::new(Role::System, "Answer briefly."),
        Message::new(Role::User, "Where is the market?"),
        Message::new(Role::Assistant, "By the quay."),
        Message::new(Role::User, "And the inn?"),
    ];
    // Two user turns: the Alpaca template refuses them as they are.
    let e = fmt.encode(&conversation, &tok, true, false).unwrap_err();
    assert!(e.to_string().contains("one instruction"), "{e}");
    let folded = fold_history(&conversation);
    assert_eq!(folded.len(), 2);
    assert_eq!(folded[0].content, "Answer briefly.");
    assert_eq!(folded[1].content, "And the inn?");
    assert_eq!(
        folded[1].input.as_deref(),
        Some("User: Where is the market?\n\nAssistant: By the quay.")
    );
    let text = tok
        .decode(&fmt.encode(&folded, &tok, true, false).unwrap().ids, false)
        .unwrap();
    assert!(
        text.contains("### Instruction:\nAnd the inn?\n\n### Input:\nUser: Where is the market?"),
        "{text}"
    );
    // One exchange (or none) is left as it is; a turn's own input follows the history.
    assert_eq!(fold_history(&conversation[..2]), conversation[..2].to_vec());
    let mut with_input = conversation.clone();
    with_input[3].input = Some("Saltmere".into());
    assert!(
        fold_history(&with_input)[1]
            .input
            .as_deref()
            .unwrap()
            .ends_with("By the quay.\n\nSaltmere")
    );
}
