//! The answers to rank are sampled once per prompt and differ from each other: a model that
//! repeats itself is asked again, and a prompt left with fewer than two different answers is
//! not offered for ranking.

mod common;
use common::chat_model;
use cria_label::db::projects::{self, Kind, NewProject, NewPrompt, Sampling};
use cria_label::db::tasks;
use cria_label::db::users::{self, Role};
use cria_label::{Db, sampler};
use serde_json::json;

#[test]
fn answers_differ_and_a_model_that_repeats_itself_leaves_the_prompt_unranked() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("labels.sqlite")).unwrap();
    let model = chat_model("chat");
    let mut ids = vec![];
    for (name, temperature) in [("sampled", 1.0), ("greedy", 0.0)] {
        let p = db
            .tx(|t| {
                let p = projects::create(
                    t,
                    &NewProject {
                        name: name.into(),
                        kind: Kind::Ranking,
                        k: Some(3),
                        overlap: 1,
                        sampling: Sampling {
                            temperature,
                            max_tokens: 8,
                            ..Default::default()
                        },
                        instructions: String::new(),
                    },
                )?;
                let prompt = NewPrompt {
                    messages: vec![json!({"role": "user", "content": "Where is order A-1001?"})],
                    gold: None,
                    source: "test".into(),
                };
                projects::add_prompts(t, &p, &[prompt])?;
                Ok(p)
            })
            .unwrap();
        ids.push(p);
    }
    let mut failed = Default::default();
    assert_eq!(sampler::step(&db, &model, &mut failed).unwrap(), 2);
    assert_eq!(
        sampler::step(&db, &model, &mut failed).unwrap(),
        0,
        "each prompt sampled once"
    );
    let answers = |p: i64| db.read(|c| projects::answers(c, p)).unwrap();
    let sampled = answers(1);
    assert_eq!(sampled.len(), 3);
    assert!(sampled[0] != sampled[1] && sampled[1] != sampled[2] && sampled[0] != sampled[2]);
    // Greedy decoding says the same every time: one answer, nothing to rank.
    assert_eq!(answers(2).len(), 1);
    let progress = db.read(|c| projects::progress(c, &ids[1])).unwrap();
    assert_eq!((progress.prompts, progress.ready), (1, 0));
    let ana = db
        .tx(|t| users::add(t, "ana", Role::Annotator, "!"))
        .unwrap()
        .id;
    assert!(db.tx(|t| tasks::next(t, ana, &ids[1])).unwrap().is_none());
    assert!(db.tx(|t| tasks::next(t, ana, &ids[0])).unwrap().is_some());
}
