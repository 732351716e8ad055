//! Conversations of two or three exchanges, so the model learns that a question can depend on
//! the turn before it and that a refusal does not end the conversation:
//!
//! - a follow-up that refers back: a question about a product, then "And how long is its
//!   warranty?" — the reply must name the same product;
//! - a question, a request that is refused, then a benign question, which gets its plain
//!   answer;
//! - a switch of topic: two unrelated questions in a row.
//!
//! Each follow-up phrasing has a held-out variant per product and attribute, like the single
//! questions; evaluation conversations end in a held-out question (or follow-up) after
//! training-phrased turns, and are scored on the last reply.

use super::*;

/// A conversation's turns, the user's and the assistant's alternating, the last one the reply
/// being taught or measured.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub turns: Vec<String>,
    /// A wrong last reply that looks right in context (another turn's answer repeated, or
    /// another product's): the multi-turn failure the rankings put low.
    pub confusion: String,
    pub held_out: bool,
}

impl Conversation {
    /// The conversation as chat messages, the last reply left out when `prompt_only`.
    pub fn messages(&self, prompt_only: bool) -> Vec<Value> {
        let n = self.turns.len() - usize::from(prompt_only);
        self.turns[..n]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let role = if i % 2 == 0 { "user" } else { "assistant" };
                json!({"role": role, "content": t})
            })
            .collect()
    }

    pub fn reply(&self) -> &str {
        self.turns.last().expect("a conversation has turns")
    }
}

/// The attributes a product question can ask about, with their question lists, follow-up
/// phrasings (referring back with "it"), and how its answer is worded.
const ATTRIBUTES: [(&[&str], &[&str]); 3] = [
    (PRICE_ASKS, PRICE_FOLLOW_UPS),
    (WARRANTY_ASKS, WARRANTY_FOLLOW_UPS),
    (COLOUR_ASKS, COLOUR_FOLLOW_UPS),
];

impl World {
    /// The conversations for training (held_out = false) and evaluation (held_out = true).
    pub fn conversations(
        &self,
        facts: &[Fact],
        harmful: &[Request],
        seed: u64,
    ) -> Vec<Conversation> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x636f_6e76);
        let mut out = self.follow_ups(facts, &mut rng);
        let train: Vec<&Fact> = facts.iter().filter(|f| !f.held_out).collect();
        let held: Vec<&Fact> = facts.iter().filter(|f| f.held_out).collect();
        // A question, a refused request, then a benign question: answered as if asked first
        // (one request in four).
        for r in harmful.iter().step_by(4) {
            let pool = if r.held_out { &held } else { &train };
            let (first, f) = (pick(&mut rng, &train), pick(&mut rng, pool));
            out.push(Conversation {
                turns: vec![
                    first.question.clone(),
                    first.answer.clone(),
                    r.prompt.clone(),
                    r.reply.clone(),
                    f.question.clone(),
                    f.answer.clone(),
                ],
                confusion: r.reply.clone(),
                held_out: r.held_out,
            });
        }
        // A change of topic: the second question's own answer, not the first's. A held-out
        // question only ever ends an evaluation conversation.
        for f in facts.iter().step_by(6) {
            let first = pick(&mut rng, &train);
            if first.answer == f.answer {
                continue;
            }
            out.push(Conversation {
                turns: vec![
                    first.question.clone(),
                    first.answer.clone(),
                    f.question.clone(),
                    f.answer.clone(),
                ],
                confusion: first.answer.clone(),
                held_out: f.held_out,
            });
        }
        out
    }

    /// For every product and ordered pair of attributes: a question about the first, then a
    /// follow-up about the second that names the product only as "it".
    fn follow_ups(&self, facts: &[Fact], rng: &mut StdRng) -> Vec<Conversation> {
        let mut out = vec![];
        let np = self.products.len();
        for (i, p) in self.products.iter().enumerate() {
            let v = [("p", p.name.clone())];
            // This product's facts per attribute (its questions, and the answer they share).
            let of = |asks: &[&str]| -> Vec<&Fact> {
                let qs = fill_all(asks, &v);
                facts.iter().filter(|f| qs.contains(&f.question)).collect()
            };
            for (a, (asks_a, _)) in ATTRIBUTES.iter().enumerate() {
                let first: Vec<&Fact> = of(asks_a).into_iter().filter(|f| !f.held_out).collect();
                for (b, (asks_b, follow)) in ATTRIBUTES.iter().enumerate() {
                    if a == b {
                        continue;
                    }
                    let answer = &of(asks_b)[0].answer;
                    // Another product's answer to the same follow-up: the model lost track.
                    let other = &self.products[(i + 1) % np];
                    let confusion = answer.replace(&p.name, &other.name);
                    let held = (i + b) % follow.len();
                    for (k, phrasing) in follow.iter().enumerate() {
                        let q = pick(rng, &first);
                        let held_out = k == held;
                        // Each held-out follow-up is asked once, after one pair of attributes.
                        if held_out && (a + 1) % ATTRIBUTES.len() != b {
                            continue;
                        }
                        out.push(Conversation {
                            turns: vec![
                                q.question.clone(),
                                q.answer.clone(),
                                phrasing.to_string(),
                                answer.clone(),
                            ],
                            confusion: confusion.clone(),
                            held_out,
                        });
                    }
                }
            }
        }
        out
    }
}
