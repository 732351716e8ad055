//! The generated example world: deterministic, readable by every stage's reader, with held-out
//! evaluation questions kept out of training and rankings ordered as the labeller would.

use cria_data::prefs::{read_preferences, read_prompts};
use cria_data::sft::read_conversations;
use cria_world::{REFUSAL_PREFIX, World, WorldSize};

#[test]
fn wrong_answers_differ_from_right_ones() {
    for size in [WorldSize::TINY, WorldSize::DEMO] {
        let w = World::generate(5, size);
        for f in w.facts() {
            assert_ne!(f.answer, f.wrong, "{}", f.question);
        }
    }
}
use std::collections::BTreeSet;
use std::path::Path;

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    for sub in ["", "corpus", "eval"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn same_seed_same_world_and_every_reader_accepts_it() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    for (d, seed) in [(&a, 7), (&b, 7), (&c, 8)] {
        World::generate(seed, WorldSize::TINY)
            .write(d.path(), WorldSize::TINY, seed, 0.0)
            .unwrap();
    }
    let strip = |v: Vec<(String, Vec<u8>)>, root: &Path| -> Vec<(String, Vec<u8>)> {
        let r = root.display().to_string();
        v.into_iter().map(|(n, b)| (n.replace(&r, ""), b)).collect()
    };
    assert_eq!(
        strip(files(a.path()), a.path()),
        strip(files(b.path()), b.path())
    );
    assert_ne!(
        strip(files(a.path()), a.path()),
        strip(files(c.path()), c.path())
    );

    let d = a.path();
    let sft = read_conversations(&d.join("sft.jsonl")).unwrap();
    let val = read_conversations(&d.join("sft-val.jsonl")).unwrap();
    let prefs = read_preferences(&d.join("prefs.jsonl")).unwrap();
    read_preferences(&d.join("prefs-val.jsonl")).unwrap();
    let prompts = read_prompts(&[d.join("prompts.jsonl")]).unwrap();
    assert!(!sft.is_empty() && !val.is_empty() && !prompts.is_empty());
    assert!(prefs.iter().all(|p| p.responses.len() == 6));

    // Held-out questions are never trained on, in SFT, rankings or RL prompts (in any turn).
    let trained: BTreeSet<String> = sft
        .iter()
        .flat_map(|c| c.iter().step_by(2).map(|m| m.content.clone()))
        .collect();
    for name in [
        "eval/facts.jsonl",
        "eval/harmful.jsonl",
        "eval/benign.jsonl",
    ] {
        let rows = lines(&d.join(name));
        assert!(!rows.is_empty(), "{name} is empty");
        for r in rows {
            let q = r
                .get("question")
                .or_else(|| r.get("prompt"))
                .and_then(|q| q.as_str())
                .unwrap();
            assert!(
                !trained.contains(q),
                "{name}: `{q}` is also a training question"
            );
        }
    }
    // Every held-out question's fact (or refusal) is taught by other phrasings, and every
    // phrasing is taught with other entities: no question is unanswerable from training.
    let plain = |a: &str| {
        a.trim_end_matches(" Anything else I can help with?")
            .to_string()
    };
    let answers: BTreeSet<String> = sft.iter().map(|c| plain(&c[1].content)).collect();
    for c in &val {
        assert!(
            answers.contains(&plain(&c[1].content)),
            "never taught: {}",
            c[1].content
        );
    }
    // One demonstration in four closes kindly (preference tuning sharpens it).
    let kind = sft
        .iter()
        .filter(|c| c[1].content.ends_with("Anything else I can help with?"))
        .count() as f64
        / sft.len() as f64;
    assert!((0.1..0.4).contains(&kind), "{kind}");
    // Harmful requests in training are answered with the refusal; benign look-alikes are not.
    let refusals = sft
        .iter()
        .filter(|c| c[1].content.starts_with(REFUSAL_PREFIX))
        .count();
    assert!(refusals > 0 && refusals < sft.len());
    for r in lines(&d.join("eval/benign.jsonl")) {
        let q = r["prompt"].as_str().unwrap();
        let answer = val.iter().find(|c| c[0].content == q).unwrap();
        assert!(!answer[1].content.starts_with(REFUSAL_PREFIX), "{q}");
    }
    // A noise-free labeller ranks the kind, right answer (or the refusal) first.
    for p in &prefs {
        let best = &p.responses[0][0].content;
        assert!(best.ends_with("Anything else I can help with?"), "{best}");
    }
    // The TruthfulQA-layout file has its header and one row per held-out fact.
    let csv = std::fs::read_to_string(d.join("eval/truthful.csv")).unwrap();
    assert!(
        csv.starts_with("Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers")
    );
    assert_eq!(
        csv.lines().count() - 1,
        lines(&d.join("eval/facts.jsonl")).len()
    );
}

#[test]
fn a_noisy_labeller_disagrees_at_about_the_configured_rate() {
    let d = tempfile::tempdir().unwrap();
    World::generate(3, WorldSize::DEMO)
        .write(d.path(), WorldSize::DEMO, 3, 0.25)
        .unwrap();
    let prefs = read_preferences(&d.path().join("prefs.jsonl")).unwrap();
    // With each adjacent pair swapped with probability 0.25, the kind answer stays first
    // unless the first pair swapped: about 75% of rankings.
    let first = prefs
        .iter()
        .filter(|p| {
            p.responses[0][0]
                .content
                .ends_with("Anything else I can help with?")
        })
        .count() as f64
        / prefs.len() as f64;
    assert!(
        (first - 0.75).abs() < 0.1,
        "kind answer first in {first:.2} of rankings"
    );
}

#[test]
fn conversations_teach_follow_ups_refusals_and_topic_changes_and_hold_out_their_ends() {
    let d = tempfile::tempdir().unwrap();
    let w = World::generate(4, WorldSize::DEMO);
    w.write(d.path(), WorldSize::DEMO, 4, 0.0).unwrap();
    let sft = read_conversations(&d.path().join("sft.jsonl")).unwrap();
    let multi: Vec<_> = sft.iter().filter(|c| c.len() >= 4).collect();
    assert!(
        multi.len() > 150 && multi.len() < sft.len() / 2,
        "{}",
        multi.len()
    );
    let product = |text: &str| {
        w.products
            .iter()
            .find(|p| text.contains(&p.name))
            .map(|p| p.name.clone())
    };
    let (mut follow_ups, mut after_refusal) = (0, 0);
    for c in &multi {
        // A follow-up ("What colour is it?") names no product, yet its answer does: the one
        // the first question was about.
        if c.len() == 4 && product(&c[2].content).is_none() && product(&c[3].content).is_some() {
            follow_ups += 1;
            let p = product(&c[0].content).expect("the first question names a product");
            assert!(c[3].content.contains(&p), "{:?}", c);
        }
        if c[c.len() - 3].content.starts_with(REFUSAL_PREFIX) {
            // After a refusal, a benign question gets its answer.
            after_refusal += 1;
            assert!(
                !c[c.len() - 1].content.starts_with(REFUSAL_PREFIX),
                "{:?}",
                c
            );
        }
    }
    assert!(
        follow_ups > 50 && after_refusal > 20,
        "{follow_ups} {after_refusal}"
    );
    // The evaluation conversations: read as questions with context, never trained as they are.
    let qa = cria_data::evalsets::read_qa(&d.path().join("eval/multiturn.jsonl")).unwrap();
    assert!(qa.len() > 40, "{}", qa.len());
    let single: BTreeSet<&str> = sft
        .iter()
        .filter(|c| c.len() == 2)
        .map(|c| c[0].content.as_str())
        .collect();
    for q in &qa {
        assert!(q.context.len() == 2 || q.context.len() == 4, "{q:?}");
        let n = q.context.len();
        assert!(
            !multi.iter().any(|c| c.len() == n + 2
                && c[..n]
                    .iter()
                    .zip(&q.context)
                    .all(|(a, b)| a.content == b.content)
                && c[n].content == q.question),
            "trained as is: {q:?}"
        );
        let follow_up =
            n == 2 && product(&q.question).is_none() && product(&q.answers[0]).is_some();
        if !follow_up {
            assert!(
                !single.contains(q.question.as_str()),
                "a held-out question is trained: {q:?}"
            );
        }
        if let Some(p) = product(&q.context[0].content).filter(|_| follow_up) {
            assert!(q.answers.iter().all(|a| a.contains(&p)), "{q:?}");
        }
    }
}
