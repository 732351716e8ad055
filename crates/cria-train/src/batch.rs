//! Batches, and the one way rows become a batch. A row is a token sequence with a mask of the
//! positions that count (a reply, an SFT answer, a ranked response); rows are right-padded with
//! the tokenizer's pad id ([`cria_core::tokenizer::Tokenizer::pad_id`]) to the longest, and the
//! padding never counts. Pretraining windows have no mask: every target counts.

use cria_core::{Device, Int, Tensor, TensorData};

/// One micro-batch: `b` rows of `t` input ids and their targets; `weights` (0/1 per target)
/// select which positions count toward the loss (all when `None`).
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub weights: Option<Vec<f32>>,
    pub b: usize,
    pub t: usize,
    /// What preference objectives need besides tokens.
    pub aux: Aux,
}

/// Per-row facts of preference batches: rows come in groups of one prompt's responses, best
/// first.
#[derive(Debug, Clone, Default)]
pub struct Aux {
    /// Tokens before padding, per row (the reward is read at `lengths[i] - 1`).
    pub lengths: Vec<usize>,
    /// Rows per group, in order.
    pub groups: Vec<usize>,
    /// Each row's place in its group ([`Row::tier`]).
    pub tiers: Vec<usize>,
    /// The frozen reference model's log-probability of each row's response (DPO).
    pub ref_logps: Vec<f32>,
}

/// One rendered sequence: its ids and, per id, whether it belongs to the part that is scored
/// (the response, the reply, the assistant turns).
#[derive(Debug, Clone)]
pub struct Row {
    pub ids: Vec<u32>,
    pub response: Vec<bool>,
    /// The reference model's log-probability of the response (DPO), filled in later.
    pub ref_logp: f32,
    /// Its place among its group's responses (0 the best; equal places are a tie). Rows that
    /// are not ranked have 0.
    pub tier: usize,
}

impl Row {
    /// A prompt followed by a reply; the reply's tokens are the response.
    pub fn reply(prompt: &[u32], reply: &[u32]) -> Row {
        let ids: Vec<u32> = prompt.iter().chain(reply).copied().collect();
        let response = (0..ids.len()).map(|k| k >= prompt.len()).collect();
        Row {
            ids,
            response,
            ref_logp: 0.0,
            tier: 0,
        }
    }
}

/// A prompt's responses as rows, best first.
pub type Group = Vec<Row>;

/// How rows become a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout {
    /// Whole sequences; the reward is read at each row's last token.
    Score,
    /// Inputs and next-token targets, weighted by the response mask (losses, log-probs).
    Tokens,
}

/// Right-padded rows of the given groups.
pub fn make_batch<'a>(groups: impl Iterator<Item = &'a Group>, pad: u32, layout: Layout) -> Batch {
    let groups: Vec<&Group> = groups.collect();
    let rows: Vec<&Row> = groups.iter().flat_map(|g| g.iter()).collect();
    of_rows(&rows, groups.iter().map(|g| g.len()).collect(), pad, layout)
}

/// Right-padded rows, `groups` saying how many rows each group holds.
pub fn of_rows(rows: &[&Row], groups: Vec<usize>, pad: u32, layout: Layout) -> Batch {
    let shift = usize::from(layout == Layout::Tokens);
    let t = rows
        .iter()
        .map(|r| r.ids.len() - shift)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut b = Batch {
        b: rows.len(),
        t,
        aux: Aux {
            lengths: vec![],
            groups,
            tiers: rows.iter().map(|r| r.tier).collect(),
            ref_logps: rows.iter().map(|r| r.ref_logp).collect(),
        },
        ..Default::default()
    };
    let mut weights = vec![];
    for r in rows {
        let n = r.ids.len() - shift;
        b.inputs.extend_from_slice(&r.ids[..n]);
        b.inputs.extend(std::iter::repeat_n(pad, t - n));
        b.aux.lengths.push(n);
        if layout == Layout::Tokens {
            b.targets.extend_from_slice(&r.ids[1..]);
            b.targets.extend(std::iter::repeat_n(pad, t - n));
            weights.extend(r.response[1..].iter().map(|&w| if w { 1.0 } else { 0.0 }));
            weights.extend(std::iter::repeat_n(0.0, t - n));
        }
    }
    if layout == Layout::Tokens {
        b.weights = Some(weights);
    }
    b
}

/// Next-token prediction on windows of equal length `t + 1`: inputs are each window's first
/// `t` ids, targets its last `t`, and every target counts.
pub fn windows<W: AsRef<[u32]>>(windows: impl IntoIterator<Item = W>) -> Batch {
    let (mut inputs, mut targets, mut b, mut t) = (Vec::new(), Vec::new(), 0, 0);
    for w in windows {
        let w = w.as_ref();
        t = w.len() - 1;
        inputs.extend_from_slice(&w[..t]);
        targets.extend_from_slice(&w[1..]);
        b += 1;
    }
    Batch {
        inputs,
        targets,
        weights: None,
        b,
        t,
        ..Default::default()
    }
}

fn ids_tensor(ids: &[u32], b: usize, t: usize, device: &Device) -> Tensor<2, Int> {
    Tensor::<2, Int>::from_data(
        TensorData::new(ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), [b, t]),
        device,
    )
}

impl Batch {
    /// Positions that count toward the loss.
    pub fn num_tokens(&self) -> usize {
        match &self.weights {
            Some(w) => w.iter().filter(|x| **x != 0.0).count(),
            None => self.b * self.t,
        }
    }

    /// `(B, T)` input ids.
    pub fn input_ids(&self, device: &Device) -> Tensor<2, Int> {
        ids_tensor(&self.inputs, self.b, self.t, device)
    }

    /// `(B, T)` target ids.
    pub fn target_ids(&self, device: &Device) -> Tensor<2, Int> {
        ids_tensor(&self.targets, self.b, self.t, device)
    }

    /// `(B, T)` loss weights, `None` when every position counts.
    pub fn weight_tensor(&self, device: &Device) -> Option<Tensor<2>> {
        self.weights
            .as_ref()
            .map(|w| Tensor::<2>::from_data(TensorData::new(w.clone(), [self.b, self.t]), device))
    }
}
