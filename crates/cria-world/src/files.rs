//! The world written out as the files every stage reads.

use super::*;

impl World {
    /// Everything the recipe reads, as files under `dir`:
    /// `corpus/*.md`, `sft.jsonl`, `sft-val.jsonl`, `prefs.jsonl`, `prefs-val.jsonl`,
    /// `prompts.jsonl`, `eval/facts.jsonl`, `eval/harmful.jsonl`, `eval/benign.jsonl`,
    /// `eval/multiturn.jsonl` (conversations whose last question is held out, with its
    /// answers), `eval/truthful.csv`. Besides single questions, SFT data, rankings and RL
    /// prompts hold two-exchange conversations ([`World::conversations`]). Rankings order K = 6 answers as a labeller would; with probability
    /// `disagreement` each adjacent pair of a ranking is swapped (InstructGPT's labellers
    /// agreed about 73% of the time).
    pub fn write(
        &self,
        dir: &Path,
        size: WorldSize,
        seed: u64,
        disagreement: f64,
    ) -> std::io::Result<()> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x7072_6566);
        std::fs::create_dir_all(dir.join("corpus"))?;
        std::fs::create_dir_all(dir.join("eval"))?;
        for (name, text) in self.handbook(size, seed) {
            std::fs::write(dir.join("corpus").join(format!("{name}.md")), text)?;
        }
        let facts = self.facts();
        let harmful = self.harmful();
        // One demonstration in four closes kindly, so the SFT model knows the closing but
        // rarely picks it: preference tuning has something to sharpen.
        let mut kind_rng = StdRng::seed_from_u64(seed ^ 0x6b69_6e64);
        let mut closing = move |a: &str| {
            if kind_rng.random::<f64>() < 0.25 {
                format!("{a}{KIND_CLOSING}")
            } else {
                a.to_string()
            }
        };
        let mut chat = |q: &str, a: &str| {
            let a = closing(a);
            json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
        };
        let (mut sft, mut sft_val, mut prefs, mut prefs_val, mut prompts) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut eval_facts, mut eval_harm, mut eval_benign, mut eval_multi) =
            (vec![], vec![], vec![], vec![]);
        // Needless refusals say what real refusals say, sometimes kindly closed: refusing a
        // benign question must not earn reward whatever the reason given.
        let mut reasons: Vec<&str> = harmful.iter().map(|r| r.reply.as_str()).collect();
        reasons.dedup();
        for (i, f) in facts.iter().enumerate() {
            // Half the time the wrong answer is another question's answer: an on-topic look
            // is not what earns reward.
            let wrong = if rng.random::<f64>() < 0.5 {
                let j = (i + 1 + rng.random_range(0..facts.len() - 1)) % facts.len();
                if facts[j].answer != f.answer {
                    &facts[j].answer
                } else {
                    &f.wrong
                }
            } else {
                &f.wrong
            };
            // The labeller prefers the kind closing to the same answer without it, but a kind
            // closing does not save a wrong answer (else a reward model learns to reward the
            // closing alone, and PPO exploits it). A needless refusal ranks below the right
            // answer: refusing benign questions is unhelpful, and without it in the rankings
            // preference tuning learns to over-refuse.
            let ranked = [
                format!("{}{KIND_CLOSING}", f.answer),
                f.answer.clone(),
                pick(&mut rng, VAGUE).to_string(),
                {
                    let r = pick(&mut rng, &reasons);
                    if rng.random::<f64>() < 0.5 {
                        format!("{r}{KIND_CLOSING}")
                    } else {
                        r.to_string()
                    }
                },
                format!("{wrong}{KIND_CLOSING}"),
                pick(&mut rng, RUDE).to_string(),
            ];
            let rec = ranking(json!(f.question), &ranked, disagreement, &mut rng);
            if f.held_out {
                sft_val.push(chat(&f.question, &f.answer));
                prefs_val.push(rec);
                // Both the plain answer and the kindly closed one are right.
                eval_facts.push(json!({
                    "question": f.question,
                    "answers": [f.answer, format!("{}{KIND_CLOSING}", f.answer)],
                }));
                if f.lookalike {
                    eval_benign.push(json!({"prompt": f.question}));
                }
            } else {
                sft.push(chat(&f.question, &f.answer));
                prefs.push(rec);
                prompts.push(json!({"prompt": f.question}));
            }
        }
        for r in &harmful {
            // Below the refusals: an answer to some other question and the leak, both closed
            // kindly, so neither politeness nor an on-topic look earns reward for complying.
            let off_topic = &facts[rng.random_range(0..facts.len())].answer;
            let ranked = [
                format!("{}{KIND_CLOSING}", r.reply),
                r.reply.clone(),
                pick(&mut rng, VAGUE).to_string(),
                format!("{off_topic}{KIND_CLOSING}"),
                pick(&mut rng, RUDE).to_string(),
                format!("{}{KIND_CLOSING}", r.leak),
            ];
            let rec = ranking(json!(r.prompt), &ranked, disagreement, &mut rng);
            if r.held_out {
                sft_val.push(chat(&r.prompt, &r.reply));
                prefs_val.push(rec);
                eval_harm.push(json!({"prompt": r.prompt}));
            } else {
                sft.push(chat(&r.prompt, &r.reply));
                prefs.push(rec);
                prompts.push(json!({"prompt": r.prompt}));
            }
        }
        for c in self.conversations(&facts, &harmful, seed) {
            // Two-exchange conversations are ranked and prompted for RL as well; the longer
            // ones (after a refusal) are demonstrations only, which keeps the reward model's
            // rows short.
            let ranked_too = c.turns.len() == 4;
            // Below the right reply: the confusion (the earlier turn's answer again, another
            // product's, or the refusal repeated for a benign question), kindly closed.
            let ranked = [
                format!("{}{KIND_CLOSING}", c.reply()),
                c.reply().to_string(),
                pick(&mut rng, VAGUE).to_string(),
                pick(&mut rng, &reasons).to_string(),
                format!("{}{KIND_CLOSING}", c.confusion),
                pick(&mut rng, RUDE).to_string(),
            ];
            let prompt = c.messages(true);
            let rec = ranking(json!(prompt), &ranked, disagreement, &mut rng);
            if c.held_out {
                eval_multi.push(json!({
                    "messages": prompt,
                    "answers": [c.reply(), format!("{}{KIND_CLOSING}", c.reply())],
                }));
                if ranked_too {
                    prefs_val.push(rec);
                }
            } else {
                let mut messages = c.messages(false);
                let last = messages.len() - 1;
                messages[last]["content"] = json!(closing(c.reply()));
                sft.push(json!({ "messages": messages }));
                if ranked_too {
                    prefs.push(rec);
                    prompts.push(json!({ "prompt": prompt }));
                }
            }
        }
        let mut order_rng = StdRng::seed_from_u64(seed ^ 0x6f72_6472);
        for v in [&mut sft, &mut prefs, &mut prompts] {
            v.shuffle(&mut order_rng);
        }
        let jsonl = |name: &str, rows: &[Value]| {
            let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
            std::fs::write(dir.join(name), text)
        };
        jsonl("sft.jsonl", &sft)?;
        jsonl("sft-val.jsonl", &sft_val)?;
        jsonl("prefs.jsonl", &prefs)?;
        jsonl("prefs-val.jsonl", &prefs_val)?;
        jsonl("prompts.jsonl", &prompts)?;
        jsonl("eval/facts.jsonl", &eval_facts)?;
        jsonl("eval/harmful.jsonl", &eval_harm)?;
        jsonl("eval/benign.jsonl", &eval_benign)?;
        jsonl("eval/multiturn.jsonl", &eval_multi)?;
        std::fs::write(dir.join("eval/truthful.csv"), self.truthful_csv(&facts))?;
        Ok(())
    }

    /// Held-out facts as multiple choice in TruthfulQA's CSV layout
    /// (`Question,Best Answer,Correct Answers,Incorrect Answers`, answers separated by `;`).
    fn truthful_csv(&self, facts: &[Fact]) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let mut out = String::from(
            "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n",
        );
        for f in facts.iter().filter(|f| f.held_out) {
            let vague = "I am not sure about that.";
            out.push_str(&format!(
                "Generated,{},{},{},{},{},{}\n",
                q(&self.company),
                q(&f.question),
                q(&f.answer),
                q(&f.answer),
                q(&format!("{}; {vague}", f.wrong)),
                q("cria world")
            ));
        }
        out
    }
}

/// A K-way ranking record with the responses shuffled and `ranking` listing them best first,
/// after the simulated labeller's disagreements.
fn ranking(prompt: Value, best_first: &[String], disagreement: f64, rng: &mut StdRng) -> Value {
    let mut labelled: Vec<usize> = (0..best_first.len()).collect();
    for i in 0..labelled.len() - 1 {
        if rng.random::<f64>() < disagreement {
            labelled.swap(i, i + 1);
        }
    }
    let mut shown: Vec<usize> = (0..best_first.len()).collect();
    shown.shuffle(rng);
    let responses: Vec<&String> = shown.iter().map(|&i| &best_first[i]).collect();
    let ranking: Vec<usize> = labelled
        .iter()
        .map(|i| shown.iter().position(|s| s == i).expect("a permutation"))
        .collect();
    json!({"prompt": prompt, "responses": responses, "ranking": ranking})
}
