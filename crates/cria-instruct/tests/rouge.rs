//! ROUGE-L against Google's `rouge_score` (fixture from scripts/ref/rouge_fixtures.py: 350
//! pairs of the project's seed instructions, near-duplicates and edge cases): every
//! F-measure equal to Python's (to the last bit), through the plain table and through the
//! pool's bit-parallel, pruned search.

use cria_instruct::rouge::{Pool, fmeasure, lcs_slow, rouge_l, tokens};

#[test]
fn scores_equal_rouge_score() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rouge_l.json");
    let fixture = cria_testkit::read_json(&path);
    let pairs = fixture["pairs"].as_array().unwrap();
    assert!(pairs.len() >= 300);
    let mut worst = (0.0f64, 0usize);
    for (i, p) in pairs.iter().enumerate() {
        let (a, b) = (
            p["target"].as_str().unwrap(),
            p["prediction"].as_str().unwrap(),
        );
        let want = p["fmeasure"].as_f64().unwrap();
        let got = rouge_l(a, b);
        let d = (got - want).abs();
        if d > worst.0 {
            worst = (d, i);
        }
        // Precision and recall too, as rouge_score defines them (prediction, target).
        let (ta, tb) = (tokens(a), tokens(b));
        let lcs = lcs_slow(&ta, &tb) as f64;
        if !ta.is_empty() && !tb.is_empty() {
            assert_eq!(
                lcs / tb.len() as f64,
                p["precision"].as_f64().unwrap(),
                "pair {i}"
            );
            assert_eq!(
                lcs / ta.len() as f64,
                p["recall"].as_f64().unwrap(),
                "pair {i}"
            );
        }
        // The pool's fast path gives the same number.
        let mut pool = Pool::new();
        pool.add(a);
        let ids = pool.vocab.encode(b);
        let fast = pool.most_similar(&ids, 1).first().map_or(0.0, |s| s.score);
        assert_eq!(fast, fmeasure(lcs as usize, ta.len(), tb.len()), "pair {i}");
    }
    assert_eq!(
        worst.0, 0.0,
        "worst difference {:e} at pair {}",
        worst.0, worst.1
    );
}
