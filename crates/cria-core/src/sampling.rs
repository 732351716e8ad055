//! Choosing the next token from logits: greedy, temperature, top-k, nucleus (top-p, Holtzman
//! et al. 2019) and min-p sampling, with OpenAI's presence and frequency penalties over the
//! tokens sampled so far; deterministic for a given seed.
//!
//! The order is the one vLLM and transformers use: penalties on the raw logits, then the
//! temperature, then top-k, top-p and min-p on the tempered distribution.

use rand::{Rng, SeedableRng, rngs::StdRng};

#[derive(Clone, Debug)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    /// Keeps tokens at least this fraction as likely as the most likely one.
    pub min_p: Option<f64>,
    /// Subtracted once from the logit of every token already sampled (OpenAI's
    /// `presence_penalty`, -2 to 2).
    pub presence_penalty: f32,
    /// Subtracted per earlier occurrence (OpenAI's `frequency_penalty`, -2 to 2).
    pub frequency_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            min_p: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    fn penalised(&self) -> bool {
        self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// How often each id was sampled (kept only when a penalty needs it).
    counts: std::collections::HashMap<u32, u32>,
}

impl Sampler {
    /// The settings it samples with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Sampler {
            params,
            rng,
            counts: Default::default(),
        }
    }

    /// The next token id given the logits of the last position.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if !self.params.penalised() {
            return self.choose(logits);
        }
        let mut l = logits.to_vec();
        for (&id, &c) in &self.counts {
            if let Some(x) = l.get_mut(id as usize) {
                *x -= self.params.presence_penalty + self.params.frequency_penalty * c as f32;
            }
        }
        let id = self.choose(&l);
        *self.counts.entry(id).or_default() += 1;
        id
    }

    fn choose(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let t = self.params.temperature as f32;
        let mut idx = by_logit(logits, self.params.top_k.filter(|k| *k > 0));
        let max = logits[idx[0]] / t;
        let mut probs: Vec<f32> = idx.iter().map(|&i| (logits[i] / t - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if let Some(top_p) = self.params.top_p.filter(|p| *p < 1.0) {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (n, p) in probs.iter().enumerate() {
                acc += p;
                if acc as f64 >= top_p {
                    keep = n + 1;
                    break;
                }
            }
            probs.truncate(keep);
            idx.truncate(keep);
        }
        if let Some(min_p) = self.params.min_p.filter(|p| *p > 0.0) {
            // probs[0] is the largest.
            let floor = probs[0] * min_p as f32;
            let keep = probs.iter().take_while(|&&p| p >= floor).count().max(1);
            probs.truncate(keep);
            idx.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut u = self.rng.random::<f32>() * total;
        for (p, &i) in probs.iter().zip(&idx) {
            u -= p;
            if u <= 0.0 {
                return i as u32;
            }
        }
        idx[idx.len() - 1] as u32
    }
}

/// The ids from the largest logit down (by `f32::total_cmp`), the lowest id first among
/// equals; only the first `top` when given. Sorted as one `u64` per id — the logit's bits mapped to an unsigned key in total
/// order, inverted, above the id — which is the same order as comparing through the logits
/// (tested) at a third of the time (no indirection in the comparisons).
fn by_logit(logits: &[f32], top: Option<usize>) -> Vec<usize> {
    let key = |v: f32| {
        let b = v.to_bits();
        // Negative values: every bit flipped; others: the sign bit set.
        if b >> 31 == 1 { !b } else { b | 0x8000_0000 }
    };
    let mut k: Vec<u64> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (u64::from(!key(v)) << 32) | i as u64)
        .collect();
    if let Some(top) = top.filter(|&t| t < k.len()) {
        // The keys are distinct (each holds its id), so these are exactly the first `top`.
        k.select_nth_unstable(top);
        k.truncate(top);
    }
    k.sort_unstable();
    k.iter().map(|&x| (x & 0xFFFF_FFFF) as usize).collect()
}

/// Index of the largest value; the lowest index wins ties (as torch.argmax does).
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keyed sort gives the comparator's order: ties, signed zeros, infinities, NaNs,
    /// subnormals, and a vocabulary of random logits.
    #[test]
    fn keyed_sort_is_the_total_order_with_ids_breaking_ties() {
        let mut cases: Vec<Vec<f32>> = vec![vec![
            1.0,
            -0.0,
            0.0,
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.0,
            -1e-40,
            1e-40,
            -3.5,
            -3.5,
            f32::MAX,
            f32::MIN,
        ]];
        let mut x = 7u64;
        cases.push(
            (0..5000)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 44) as f32 / 1024.0).round() / 16.0 - 300.0
                })
                .collect(),
        );
        for logits in cases {
            let mut want: Vec<usize> = (0..logits.len()).collect();
            want.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            assert_eq!(by_logit(&logits, None), want);
            for top in [1, 3, logits.len() - 1, logits.len(), logits.len() + 5] {
                let n = top.min(logits.len());
                assert_eq!(by_logit(&logits, Some(top)), want[..n], "top {top}");
            }
        }
    }

    #[test]
    fn greedy_picks_max() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: Some(1),
            seed: 7,
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.0, 0.5, 2.0, 1.9]), 2);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // softmax([10, 9, 0, 0]) ~ [0.731, 0.269, 3e-5, 3e-5]: top_p 0.9 keeps ids 0 and 1 only.
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_p: Some(0.9),
            seed: 1,
            ..Default::default()
        });
        let mut seen = [0usize; 4];
        for _ in 0..500 {
            seen[s.sample(&[10.0, 9.0, 0.0, 0.0]) as usize] += 1;
        }
        assert_eq!(seen[2] + seen[3], 0);
        assert!(seen[0] > seen[1] && seen[1] > 50, "{seen:?}");
    }

    #[test]
    fn same_seed_same_draws() {
        let p = SamplingParams {
            temperature: 0.8,
            seed: 42,
            ..Default::default()
        };
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let a: Vec<u32> = (0..30)
            .scan(Sampler::new(p.clone()), |s, _| Some(s.sample(&logits)))
            .collect();
        let b: Vec<u32> = (0..30)
            .scan(Sampler::new(p), |s, _| Some(s.sample(&logits)))
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn min_p_drops_the_unlikely() {
        // softmax([4, 3.5, 0]) ~ [0.61, 0.37, 0.011]: min_p 0.1 keeps ids 0 and 1.
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            min_p: Some(0.1),
            seed: 3,
            ..Default::default()
        });
        let mut seen = [0usize; 3];
        for _ in 0..2000 {
            seen[s.sample(&[4.0, 3.5, 0.0]) as usize] += 1;
        }
        assert_eq!(seen[2], 0, "{seen:?}");
        assert!(seen[1] > 500, "{seen:?}");
    }

    #[test]
    fn penalties_count_what_was_sampled() {
        // Greedy on fixed logits: without a penalty always id 0; a frequency penalty of 1.5
        // lowers a token by 1.5 per time it was chosen, so the choices alternate.
        let logits = [2.0, 1.0, -5.0];
        let mut plain = Sampler::new(SamplingParams::default());
        assert!((0..6).all(|_| plain.sample(&logits) == 0));
        let mut freq = Sampler::new(SamplingParams {
            frequency_penalty: 1.5,
            ..Default::default()
        });
        let ids: Vec<u32> = (0..4).map(|_| freq.sample(&logits)).collect();
        // 0: [2, 1] -> 0; [0.5, 1] -> 1; [0.5, -0.5] -> 0; [-1, -0.5] -> 1.
        assert_eq!(ids, [0, 1, 0, 1]);
        // A presence penalty subtracts once: after both were seen the order is back to 0 first.
        let mut pres = Sampler::new(SamplingParams {
            presence_penalty: 1.5,
            ..Default::default()
        });
        let ids: Vec<u32> = (0..4).map(|_| pres.sample(&logits)).collect();
        // [2, 1] -> 0; [0.5, 1] -> 1; [0.5, -0.5] -> 0; the same again -> 0.
        assert_eq!(ids, [0, 1, 0, 0]);
    }
}
