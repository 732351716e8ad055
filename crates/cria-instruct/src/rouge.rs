//! ROUGE-L as Google's `rouge_score` computes it (`RougeScorer(["rougeL"])`, no stemming):
//! text lower-cased, every run of characters outside `[a-z0-9]` a space, whitespace tokens;
//! the F-measure of the longest common subsequence, `2PR / (P + R)` with `P = LCS / |b|`,
//! `R = LCS / |a|` (0 when either is empty), in the same floating-point steps so scores are
//! bit for bit Python's.
//!
//! The self-instruct filter compares every candidate with a pool of tens of thousands of
//! instructions. Here the LCS is Hyyrö's bit-parallel algorithm (one word operation per token
//! of the other text for every 64 tokens), and a pair is skipped when even a perfect match of
//! the shorter text could not beat the score it has to beat (`F ≤ 2·min / (|a| + |b|)`).

use rayon::prelude::*;
use std::collections::HashMap;

/// `rouge_score`'s tokens of `text`.
pub fn tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut out = vec![];
    let mut cur = String::new();
    for c in lower.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            cur.push(c);
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The F-measure from an LCS length and the two lengths, as `rouge_score` computes it.
pub fn fmeasure(lcs: usize, target: usize, prediction: usize) -> f64 {
    if target == 0 || prediction == 0 {
        return 0.0;
    }
    let precision = lcs as f64 / prediction as f64;
    let recall = lcs as f64 / target as f64;
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// The plain dynamic-programming LCS, the reference the fast one is held to.
pub fn lcs_slow<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L F-measure of two texts (`target`, `prediction` as `RougeScorer.score` takes them;
/// the F-measure is symmetric).
pub fn rouge_l(target: &str, prediction: &str) -> f64 {
    let (a, b) = (tokens(target), tokens(prediction));
    fmeasure(lcs_slow(&a, &b), a.len(), b.len())
}

/// Texts as token ids, for fast comparisons.
#[derive(Debug, Default, Clone)]
pub struct Vocab {
    ids: HashMap<String, u32>,
}

impl Vocab {
    /// The ids of `text`'s tokens (new tokens get new ids).
    pub fn encode(&mut self, text: &str) -> Vec<u32> {
        tokens(text)
            .into_iter()
            .map(|t| {
                let n = self.ids.len() as u32;
                *self.ids.entry(t).or_insert(n)
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A text prepared for bit-parallel LCS against others: for each distinct token, the bit mask
/// of the positions it holds.
pub struct Pattern {
    len: usize,
    words: usize,
    /// `masks[slot * words..]`, slot 0 all zeros (tokens the pattern lacks).
    masks: Vec<u64>,
    /// Token id -> slot (0: not in the pattern); ids past the end are not in it either.
    slots: Vec<u32>,
}

impl Pattern {
    pub fn new(ids: &[u32]) -> Pattern {
        let words = ids.len().div_ceil(64).max(1);
        let top = ids.iter().map(|&t| t as usize + 1).max().unwrap_or(0);
        let mut slots = vec![0u32; top];
        let mut masks = vec![0u64; words];
        for (i, &t) in ids.iter().enumerate() {
            if slots[t as usize] == 0 {
                slots[t as usize] = (masks.len() / words) as u32;
                masks.extend(std::iter::repeat_n(0u64, words));
            }
            let s = slots[t as usize] as usize;
            masks[s * words + i / 64] |= 1 << (i % 64);
        }
        Pattern {
            len: ids.len(),
            words,
            masks,
            slots,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot(&self, t: u32) -> usize {
        self.slots.get(t as usize).map_or(0, |&s| s as usize)
    }

    /// LCS length with `other` (Hyyrö 2004: `V ← (V + (V & M)) | (V & !M)`, the LCS the
    /// zeros of `V` among the pattern's positions). `v` is scratch space.
    pub fn lcs(&self, other: &[u32], v: &mut Vec<u64>) -> usize {
        if self.len == 0 || other.is_empty() {
            return 0;
        }
        if self.words == 1 {
            // Texts of up to 64 tokens (nearly every instruction): one word, no carries.
            let mut w = u64::MAX;
            for &t in other {
                let m = self.masks[self.slot(t)];
                w = w.wrapping_add(w & m) | (w & !m);
            }
            let mask = if self.len == 64 {
                u64::MAX
            } else {
                (1u64 << self.len) - 1
            };
            return (!w & mask).count_ones() as usize;
        }
        v.clear();
        v.resize(self.words, u64::MAX);
        for &t in other {
            let s = self.slot(t);
            if s == 0 {
                continue;
            }
            let m = &self.masks[s * self.words..(s + 1) * self.words];
            let mut carry = 0u64;
            for (w, &mw) in v.iter_mut().zip(m) {
                let u = *w & mw;
                let (sum, c1) = w.overflowing_add(u);
                let (sum, c2) = sum.overflowing_add(carry);
                carry = u64::from(c1 || c2);
                *w = sum | (*w & !mw);
            }
        }
        let full = self.len / 64;
        let mut zeros: usize = v[..full].iter().map(|w| w.count_zeros() as usize).sum();
        let rest = self.len % 64;
        if rest > 0 {
            let mask = (1u64 << rest) - 1;
            zeros += (!v[full] & mask).count_ones() as usize;
        }
        zeros
    }
}

/// A pool of instructions to compare candidates with.
#[derive(Default)]
pub struct Pool {
    pub vocab: Vocab,
    texts: Vec<Vec<u32>>,
    originals: Vec<String>,
}

/// A pool text's score against a candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similar {
    pub index: usize,
    pub score: f64,
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    pub fn add(&mut self, text: &str) {
        let ids = self.vocab.encode(text);
        self.texts.push(ids);
        self.originals.push(text.to_string());
    }

    /// Pool text `i` as it was added.
    pub fn original(&self, i: usize) -> &str {
        &self.originals[i]
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The `k` pool texts most similar to `candidate` (ties by pool order), best first. Pairs
    /// that cannot enter the list are skipped by their length bound.
    pub fn most_similar(&self, candidate: &[u32], k: usize) -> Vec<Similar> {
        let p = Pattern::new(candidate);
        let mut v = vec![];
        let mut best: Vec<Similar> = Vec::with_capacity(k + 1);
        for (index, text) in self.texts.iter().enumerate() {
            let floor = if best.len() == k {
                best[k - 1].score
            } else {
                -1.0
            };
            if k == 0 || fmeasure(p.len().min(text.len()), p.len(), text.len()) <= floor {
                continue;
            }
            let score = fmeasure(p.lcs(text, &mut v), p.len(), text.len());
            if score > floor {
                let at = best.partition_point(|s| s.score >= score);
                best.insert(at, Similar { index, score });
                best.truncate(k);
            }
        }
        best
    }

    /// Whether any pool text scores above `threshold` with `candidate` (stops at the first).
    pub fn any_above(&self, candidate: &[u32], threshold: f64) -> bool {
        let p = Pattern::new(candidate);
        let mut v = vec![];
        self.texts.iter().any(|text| {
            fmeasure(p.len().min(text.len()), p.len(), text.len()) > threshold
                && fmeasure(p.lcs(text, &mut v), p.len(), text.len()) > threshold
        })
    }

    /// [`Pool::most_similar`] for many candidates at once, in parallel.
    pub fn most_similar_all(&self, candidates: &[Vec<u32>], k: usize) -> Vec<Vec<Similar>> {
        candidates
            .par_iter()
            .map(|c| self.most_similar(c, k))
            .collect()
    }

    pub fn text(&self, i: usize) -> &[u32] {
        &self.texts[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_as_rouge_score_makes_them() {
        assert_eq!(
            tokens("Write a haiku -- about C3PO's day!"),
            ["write", "a", "haiku", "about", "c3po", "s", "day"]
        );
        assert_eq!(tokens("Café über 2x"), ["caf", "ber", "2x"]);
        assert!(tokens("¿¡ !!").is_empty());
    }

    #[test]
    fn bit_parallel_lcs_equals_the_table() {
        // Lengths across word boundaries, few and many distinct tokens.
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..300 {
            let (la, lb, alphabet) = (next(150) as usize, next(150) as usize, 1 + next(12));
            let a: Vec<u32> = (0..la).map(|_| next(alphabet) as u32).collect();
            let b: Vec<u32> = (0..lb).map(|_| next(alphabet) as u32).collect();
            let mut v = vec![];
            assert_eq!(
                Pattern::new(&a).lcs(&b, &mut v),
                lcs_slow(&a, &b),
                "{a:?} {b:?}"
            );
        }
    }

    #[test]
    fn the_f_measure_by_hand() {
        // "the cat sat" vs "the cat sat down": LCS 3, P = 3/4, R = 3/3, F = 2·0.75/1.75.
        assert_eq!(
            rouge_l("the cat sat", "the cat sat down"),
            2.0 * 0.75 * 1.0 / 1.75
        );
        assert_eq!(rouge_l("", "anything"), 0.0);
    }

    #[test]
    fn the_pool_finds_the_most_similar_with_or_without_pruning() {
        let texts = [
            "Write a poem about the sea.",
            "Summarise this memo for the sales team.",
            "Write a short poem about the sea at night.",
            "Classify the ticket as billing or technical.",
        ];
        let mut pool = Pool::new();
        for t in texts {
            pool.add(t);
        }
        let c = pool.vocab.encode("Write a poem about the night sea.");
        let best = pool.most_similar(&c, 2);
        let want: Vec<f64> = texts
            .iter()
            .map(|t| rouge_l(t, "Write a poem about the night sea."))
            .collect();
        assert_eq!(best[0].index, 0);
        assert_eq!(best[0].score, want[0]);
        assert_eq!(best[1].index, 2);
        assert_eq!(best[1].score, want[2]);
        assert!(pool.any_above(&c, 0.7));
        assert!(!pool.any_above(&c, want[0]));
    }
}
