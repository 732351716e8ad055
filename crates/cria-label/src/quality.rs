//! How much annotators agree. As InstructGPT reports it (72.6 ± 1.5% between its training
//! labellers), agreement is counted over pairs of answers: two annotators who ranked the same
//! prompt agree on a pair when they order it the same way (a tie only agrees with a tie). Each
//! annotator's agreement with the others and with gold items, Likert scores and flags, and
//! time per task are reported beside it.

use crate::db::tasks::{FLAGS, Label};
use serde::Serialize;
use std::collections::BTreeMap;

/// Pairs compared and pairs agreed on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Agreement {
    pub agreed: usize,
    pub compared: usize,
}

impl Agreement {
    /// The agreed fraction, when anything was compared.
    pub fn rate(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.agreed as f64 / self.compared as f64)
    }

    fn add(&mut self, o: Agreement) {
        self.agreed += o.agreed;
        self.compared += o.compared;
    }
}

/// Agreement of two orderings of the same answers (places, lower is better) over every pair.
pub fn pair_agreement(a: &[usize], b: &[usize]) -> Agreement {
    let mut out = Agreement::default();
    for i in 0..a.len().min(b.len()) {
        for j in i + 1..a.len().min(b.len()) {
            out.compared += 1;
            out.agreed += usize::from(a[i].cmp(&a[j]) == b[i].cmp(&b[j]));
        }
    }
    out
}

/// One annotator's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Annotator {
    pub labels: usize,
    pub with_others: Agreement,
    pub with_gold: Agreement,
    /// Median seconds per task.
    pub median_seconds: f64,
    /// How often they gave each Likert score (1 to 7).
    pub likert: [usize; 7],
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Quality {
    pub labels: usize,
    /// Prompts labelled by two or more annotators.
    pub overlapping_prompts: usize,
    /// Between annotators, over every overlapping prompt and pair of annotators.
    pub agreement: Agreement,
    pub gold: Agreement,
    pub annotators: BTreeMap<String, Annotator>,
    /// Likert scores over every answer (1 to 7).
    pub likert: [usize; 7],
    /// How many answers carried each flag.
    pub flags: BTreeMap<String, usize>,
}

/// The places a label gives its answers, when it ranks them.
fn places(l: &Label) -> Option<Vec<usize>> {
    l.body["places"]
        .as_array()?
        .iter()
        .map(|v| v.as_u64().map(|x| x as usize))
        .collect()
}

/// Agreement and distributions over a project's labels.
pub fn measure(labels: &[Label]) -> Quality {
    let mut q = Quality {
        labels: labels.len(),
        flags: FLAGS.iter().map(|f| (f.to_string(), 0)).collect(),
        ..Default::default()
    };
    let mut seconds: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for l in labels {
        let a = q.annotators.entry(l.user.clone()).or_default();
        a.labels += 1;
        seconds.entry(l.user.clone()).or_default().push(l.seconds);
        for s in l.body["likert"].as_array().into_iter().flatten() {
            if let Some(s @ 1..=7) = s.as_u64() {
                a.likert[s as usize - 1] += 1;
                q.likert[s as usize - 1] += 1;
            }
        }
        let flags = l.body["flags"].as_array().into_iter().flatten();
        for f in flags.flat_map(|v| v.as_array().into_iter().flatten()) {
            if let Some(n) = f.as_str().and_then(|f| q.flags.get_mut(f)) {
                *n += 1;
            }
        }
        if let (Some(p), Some(g)) = (places(l), &l.gold) {
            let agree = pair_agreement(&p, g);
            a.with_gold.add(agree);
            q.gold.add(agree);
        }
    }
    // Pairs of annotators on each prompt ranked by two or more.
    let mut by_prompt: BTreeMap<i64, Vec<(&str, Vec<usize>)>> = BTreeMap::new();
    for l in labels {
        if let Some(p) = places(l) {
            by_prompt.entry(l.prompt).or_default().push((&l.user, p));
        }
    }
    for ranked in by_prompt.values().filter(|r| r.len() > 1) {
        q.overlapping_prompts += 1;
        for i in 0..ranked.len() {
            for j in i + 1..ranked.len() {
                let agree = pair_agreement(&ranked[i].1, &ranked[j].1);
                q.agreement.add(agree);
                for who in [ranked[i].0, ranked[j].0] {
                    if let Some(a) = q.annotators.get_mut(who) {
                        a.with_others.add(agree);
                    }
                }
            }
        }
    }
    for (who, mut s) in seconds {
        s.sort_by(f64::total_cmp);
        if let Some(a) = q.annotators.get_mut(&who) {
            a.median_seconds = s[s.len() / 2];
        }
    }
    q
}

/// The report `cria label stats` prints and the admin page shows, as Markdown.
pub fn markdown(project: &str, kind: &str, q: &Quality) -> String {
    let pct = |a: &Agreement| match a.rate() {
        Some(r) => format!("{:.1}% ({} of {} pairs)", 100.0 * r, a.agreed, a.compared),
        None => "—".to_string(),
    };
    let mut out = format!(
        "## {project} ({kind})\n\n{} labels; {} prompts labelled by two or more annotators.\n\n\
         - agreement between annotators: {}\n- agreement with gold items: {}\n\n",
        q.labels,
        q.overlapping_prompts,
        pct(&q.agreement),
        pct(&q.gold)
    );
    if !q.annotators.is_empty() {
        out.push_str("| annotator | labels | with the others | with gold | median s/task |\n");
        out.push_str("|---|---:|---:|---:|---:|\n");
        for (who, a) in &q.annotators {
            let rate = |a: &Agreement| {
                a.rate()
                    .map_or("—".into(), |r| format!("{:.1}%", 100.0 * r))
            };
            out.push_str(&format!(
                "| {who} | {} | {} | {} | {:.0} |\n",
                a.labels,
                rate(&a.with_others),
                rate(&a.with_gold),
                a.median_seconds
            ));
        }
        out.push('\n');
    }
    if q.likert.iter().any(|&n| n > 0) {
        let scores: Vec<String> = q
            .likert
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{}: {n}", i + 1))
            .collect();
        out.push_str(&format!(
            "Likert scores (1 to 7): {}\n\n",
            scores.join(", ")
        ));
    }
    let flags: Vec<String> = q
        .flags
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(f, n)| format!("{f}: {n}"))
        .collect();
    if !flags.is_empty() {
        out.push_str(&format!("Flags: {}\n\n", flags.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn label(prompt: i64, user: &str, places: &[usize], gold: Option<Vec<usize>>) -> Label {
        Label {
            prompt,
            user: user.into(),
            body: json!({"places": places, "likert": [7, 1, 4], "flags": [[], ["harmful"], []]}),
            seconds: 10.0,
            gold,
        }
    }

    #[test]
    fn agreement_counts_answer_pairs_ordered_alike() {
        // Pairs (0,1), (0,2), (1,2): both put 0 first; they swap 1 and 2. 2 of 3 agree.
        assert_eq!(
            pair_agreement(&[0, 1, 2], &[0, 2, 1]),
            Agreement {
                agreed: 2,
                compared: 3
            }
        );
        // A tie agrees only with a tie.
        assert_eq!(pair_agreement(&[0, 0], &[0, 0]).agreed, 1);
        assert_eq!(pair_agreement(&[0, 0], &[0, 1]).agreed, 0);
    }

    #[test]
    fn a_project_is_measured_by_annotator_and_against_gold() {
        let labels = vec![
            label(1, "ana", &[0, 1, 2], None),
            label(1, "bo", &[0, 2, 1], None),
            label(1, "cy", &[0, 1, 2], None),
            label(2, "ana", &[2, 1, 0], Some(vec![2, 1, 0])),
            label(2, "bo", &[0, 1, 2], Some(vec![2, 1, 0])),
        ];
        let q = measure(&labels);
        // Prompt 1: ana-bo 2/3, ana-cy 3/3, bo-cy 2/3; prompt 2: ana-bo 0/3.
        assert_eq!(
            q.agreement,
            Agreement {
                agreed: 7,
                compared: 12
            }
        );
        assert_eq!(q.overlapping_prompts, 2);
        assert_eq!(
            q.annotators["ana"].with_others,
            Agreement {
                agreed: 5,
                compared: 9
            }
        );
        assert_eq!(
            q.annotators["cy"].with_others,
            Agreement {
                agreed: 5,
                compared: 6
            }
        );
        assert_eq!(
            q.annotators["ana"].with_gold,
            Agreement {
                agreed: 3,
                compared: 3
            }
        );
        assert_eq!(
            q.annotators["bo"].with_gold,
            Agreement {
                agreed: 0,
                compared: 3
            }
        );
        assert_eq!(q.likert, [5, 0, 0, 5, 0, 0, 5]);
        assert_eq!(q.flags["harmful"], 5);
        let md = markdown("p", "ranking", &q);
        assert!(md.contains("58.3% (7 of 12 pairs)"), "{md}");
    }
}
