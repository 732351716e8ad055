//! Reuse of the KV of a shared prompt prefix: the system prompt, or the earlier turns of the
//! same conversation (whose last prompt and reply begin the next prompt). Entries belong to
//! the model that computed them: an adapter's keys and values are not its base's.

/// The caches (`C`) of recently finished sequences, by their model and the ids they hold.
pub struct PrefixCache<C> {
    entries: Vec<Entry<C>>,
    capacity: usize,
}

impl<C> PrefixCache<C> {
    pub fn new(capacity: usize) -> Self {
        PrefixCache {
            entries: Vec::new(),
            capacity,
        }
    }

    /// Keeps `cache` (model `model`'s, holding exactly `ids`), dropping the oldest entry when
    /// full.
    pub fn put(&mut self, model: usize, ids: Vec<u32>, cache: C) {
        if self.capacity == 0 || ids.is_empty() {
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.remove(0);
        }
        self.entries.push(Entry { model, ids, cache });
    }

    /// A cache of model `model` holding the longest prefix of `prompt` some entry shares,
    /// leaving at least one prompt token to compute (its logits give the first reply token);
    /// with how many tokens it holds (`cut` copies an entry's first `n` positions). `None`
    /// when nothing is shared.
    pub fn lookup(
        &mut self,
        model: usize,
        prompt: &[u32],
        cut: impl FnOnce(&C, usize) -> C,
    ) -> Option<(C, usize)> {
        let limit = prompt.len().saturating_sub(1);
        let (i, n) = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.model == model)
            .map(|(i, e)| (i, common_prefix(&e.ids, prompt).min(limit)))
            .max_by_key(|&(_, n)| n)?;
        if n == 0 {
            return None;
        }
        let entry = self.entries.remove(i);
        let cache = cut(&entry.cache, n);
        // Most recently used last, so it is evicted last.
        self.entries.push(entry);
        Some((cache, n))
    }
}

struct Entry<C> {
    model: usize,
    ids: Vec<u32>,
    cache: C,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
