//! Choosing the next token from logits: greedy, temperature, top-k and nucleus (top-p,
//! Holtzman et al. 2019) sampling, deterministic for a given seed.

use rand::{Rng, SeedableRng, rngs::StdRng};

#[derive(Clone, Debug)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        }
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// The settings it samples with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Sampler { params, rng }
    }

    /// The next token id given the logits of the last position.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let t = self.params.temperature as f32;
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if let Some(k) = self.params.top_k.filter(|k| *k > 0) {
            idx.truncate(k);
        }
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
            top_p: None,
            seed: 7,
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
            top_k: None,
            top_p: Some(0.9),
            seed: 1,
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
            top_k: None,
            top_p: None,
            seed: 42,
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
}
