//! Tokenizers as transformers' AutoTokenizer builds them (scripts/ref/tokenizer_fixtures.py):
//! byte-level BPE with and without a pre-tokenizer, LLaMA-2/TinyLlama-style SentencePiece BPE
//! under LlamaTokenizer (whose pipeline transformers rebuilds), LLaMA-3/Qwen-style regex BPE
//! with special tokens registered only in tokenizer_config.json, Gemma; every case gives
//! transformers' ids exactly, with and without special tokens, and decodes as it does.

mod common;

use common::fixture;
use cria_core::tokenizer::Tokenizer;

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn every_tokenizer_style_gives_transformers_ids() {
    let root = fixture("tokenizers");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "fixtures missing in {}", root.display());
    for d in dirs {
        let name = d.file_name().unwrap().to_string_lossy().to_string();
        let tok = Tokenizer::from_file(&d.join("tokenizer.json")).unwrap();
        let exp = cria_testkit::read_json(&d.join("expected.json"));
        for c in exp["cases"].as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            let want = ids(&c["ids"]);
            assert_eq!(tok.encode(text, true).unwrap(), want, "{name}: {text:?}");
            assert_eq!(
                tok.encode(text, false).unwrap(),
                ids(&c["ids_no_special"]),
                "{name}: {text:?} without special tokens"
            );
            assert_eq!(
                tok.decode(&want, false).unwrap(),
                c["decode"],
                "{name}: {text:?}"
            );
            assert_eq!(
                tok.decode(&want, true).unwrap(),
                c["decode_skip_special"],
                "{name}: {text:?} skipping special tokens"
            );
        }
        let named = |key: &str| {
            exp[key]
                .as_str()
                .map(|s| tok.token_to_id(s).expect("named token has an id"))
        };
        assert_eq!(tok.eos_id, named("eos"), "{name}: eos");
        if let Some(bos) = named("bos") {
            assert_eq!(tok.bos_id, Some(bos), "{name}: bos");
        }
        for key in [
            "chat_generation_prompt_true",
            "chat_generation_prompt_false",
        ] {
            if let Some(chat) = exp.get(key) {
                let rendered = chat["rendered"].as_str().unwrap();
                assert_eq!(
                    tok.encode(rendered, false).unwrap(),
                    ids(&chat["ids"]),
                    "{name}: {key}"
                );
            }
        }
    }
}

#[test]
fn an_end_of_turn_token_known_only_to_the_config_is_one_id() {
    // The file knows no <|eot_id|>; tokenizer_config.json's added_tokens_decoder adds it, so
    // the rendered reply's end is the token SFT must train, not text pieces.
    let dir = fixture("tokenizers/llama3_specials_in_config");
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let eot = tok
        .token_to_id("<|eot_id|>")
        .expect("added from the config");
    assert_eq!(
        tok.encode("Maren<|eot_id|>", false).unwrap().last(),
        Some(&eot)
    );
    assert_eq!(tok.eos_id, Some(eot));
}
